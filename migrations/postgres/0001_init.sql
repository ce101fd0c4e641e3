-- Desired state, configuration and observed status. Timestamps are milliseconds since the
-- Unix epoch; lists are JSON arrays of strings.

CREATE TABLE region_configs (
    region                  TEXT PRIMARY KEY,
    enabled                 BOOLEAN NOT NULL,
    codebuild_project       TEXT NOT NULL,
    artifact_bucket         TEXT NOT NULL,
    codedeploy_application  TEXT NOT NULL,
    proxy_name_tag          TEXT NOT NULL,
    nginx_config_dir        TEXT NOT NULL,
    alb_https_listener_arns TEXT NOT NULL,
    global_accelerator_ips  TEXT NOT NULL,
    allowed_parent_domains  TEXT NOT NULL,
    updated_at              BIGINT NOT NULL
);

CREATE TABLE ec2_instance_groups (
    name                        TEXT PRIMARY KEY,
    region                      TEXT NOT NULL REFERENCES region_configs (region),
    nlb_arns                    TEXT NOT NULL,
    port_min                    INTEGER NOT NULL CHECK (port_min BETWEEN 1 AND 65535),
    port_max                    INTEGER NOT NULL CHECK (port_max BETWEEN port_min AND 65535),
    capacity                    INTEGER NOT NULL CHECK (capacity > 0),
    codedeploy_deployment_group TEXT NOT NULL,
    enabled                     BOOLEAN NOT NULL,
    updated_at                  BIGINT NOT NULL
);
CREATE INDEX ec2_instance_groups_region ON ec2_instance_groups (region);

-- The spec. Only the gRPC write path changes these rows.
CREATE TABLE shops (
    shop_domain           TEXT PRIMARY KEY,
    region                TEXT NOT NULL REFERENCES region_configs (region),
    source_bucket         TEXT NOT NULL,
    source_version        TEXT NOT NULL,
    -- A custom domain belongs to at most one shop.
    custom_domain         TEXT UNIQUE,
    generation            BIGINT NOT NULL CHECK (generation > 0),
    restart_generation    BIGINT NOT NULL DEFAULT 0,
    deletion_requested_at BIGINT,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);
CREATE INDEX shops_region ON shops (region, shop_domain);

-- Shop-level status. Only reconcilers write it.
CREATE TABLE shop_status (
    shop_domain      TEXT PRIMARY KEY REFERENCES shops (shop_domain) ON DELETE CASCADE,
    ready            BOOLEAN NOT NULL,
    ready_generation BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

-- Per-resource status. Only reconcilers write it.
CREATE TABLE resource_status (
    shop_domain         TEXT NOT NULL REFERENCES shops (shop_domain) ON DELETE CASCADE,
    kind                TEXT NOT NULL,
    desired             TEXT NOT NULL,
    observed            TEXT NOT NULL,
    sync                TEXT NOT NULL,
    health              TEXT NOT NULL,
    reason              TEXT NOT NULL,
    message             TEXT NOT NULL,
    observed_generation BIGINT NOT NULL,
    last_transition     BIGINT NOT NULL,
    attempts            INTEGER NOT NULL,
    next_attempt_at     BIGINT,
    PRIMARY KEY (shop_domain, kind)
);

-- Where a shop runs. The unique constraints make two writers unable to hand out one port.
CREATE TABLE placements (
    shop_domain    TEXT PRIMARY KEY REFERENCES shops (shop_domain),
    instance_group TEXT NOT NULL REFERENCES ec2_instance_groups (name),
    nlb_arn        TEXT NOT NULL,
    port           INTEGER NOT NULL,
    created_at     BIGINT NOT NULL,
    UNIQUE (nlb_arn, port),
    UNIQUE (instance_group, port)
);

CREATE TABLE shop_certificates (
    domain          TEXT PRIMARY KEY,
    shop_domain     TEXT NOT NULL,
    acm_arn         TEXT,
    listener_arn    TEXT,
    not_after       BIGINT,
    state           TEXT NOT NULL,
    last_error      TEXT,
    next_attempt_at BIGINT,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX shop_certificates_shop ON shop_certificates (shop_domain);

-- History of every change to a shop. Kept after the shop is gone, for post-mortems.
CREATE TABLE shop_events (
    id          BIGSERIAL PRIMARY KEY,
    shop_domain TEXT NOT NULL,
    at          BIGINT NOT NULL,
    generation  BIGINT NOT NULL,
    source      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX shop_events_shop ON shop_events (shop_domain, id);
