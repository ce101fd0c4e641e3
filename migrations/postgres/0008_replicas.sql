-- The replicas running reconcile loops, so they can share the shops evenly (issue #6). Each
-- replica writes its row every fraction of the lease time and removes it when it stops; a
-- row older than one lease time belongs to a replica that died or sleeps, and is not counted.
-- A replica also leaves out rows last written before its own first one (`started_at`): a
-- replica restarted after a crash does not count the one it replaces. Times come from the
-- database clock, like the leases' times.
CREATE TABLE controller_replicas (
    holder     TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL
);
