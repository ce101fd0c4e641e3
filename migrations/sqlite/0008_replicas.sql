-- The replicas running reconcile loops, so they can share the shops evenly (issue #6). Each
-- replica writes its row every fraction of the lease time and removes it when it stops; a
-- row older than one lease time belongs to a replica that died or sleeps, and is not counted.
-- `last_seen` comes from the database clock, like the leases' times.
CREATE TABLE controller_replicas (
    holder    TEXT PRIMARY KEY,
    last_seen BIGINT NOT NULL
);
