-- Which replica reconciles a shop. A replica claims the row before it reconciles any of the
-- shop's resources; `epoch` moves whenever the holder changes (or its claim lapsed), and is
-- checked before every cloud mutation, so a replica that slept past its lease mutates nothing.
-- Times come from the database clock, never from a replica's.
CREATE TABLE shop_leases (
    shop_domain TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- What a reconciler is about to ask of the cloud, recorded before the call so a crash between
-- the call and the status write is resumed instead of repeated. For deployments the rows of one
-- CodeDeploy group, oldest first, are also that group's queue.
CREATE TABLE shop_intents (
    shop_domain TEXT NOT NULL,
    kind        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    desired     TEXT NOT NULL,
    external_id TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (shop_domain, kind)
);
CREATE INDEX shop_intents_queue ON shop_intents (kind, scope, created_at);
