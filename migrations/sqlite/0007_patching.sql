-- OS patching of the EC2 fleets (issue #6). A policy says when a fleet (an instance group,
-- `group/<name>`, or a region's proxy fleet, `proxy/<region>`) is patched; each run records the
-- instances it patches, one at a time, and each instance's result, so a run interrupted by a
-- crash resumes without patching an instance twice. Times are milliseconds since the epoch.
CREATE TABLE patch_policies (
    fleet                   TEXT PRIMARY KEY,
    region                  TEXT NOT NULL,
    enabled                 BOOLEAN NOT NULL,
    interval_days           INTEGER NOT NULL CHECK (interval_days > 0),
    window_start_hour       INTEGER NOT NULL CHECK (window_start_hour BETWEEN 0 AND 23),
    window_end_hour         INTEGER NOT NULL CHECK (window_end_hour BETWEEN 0 AND 23),
    -- JSON array of weekdays (`mon`..`sun`); empty means every day.
    weekdays                TEXT NOT NULL,
    script                  TEXT NOT NULL,
    command_timeout_seconds INTEGER NOT NULL,
    updated_at              BIGINT NOT NULL
);

CREATE TABLE patch_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    fleet       TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    -- running, succeeded, failed, stopped or refused.
    state       TEXT NOT NULL,
    message     TEXT NOT NULL,
    -- JSON array of the instance ids the run patches, in order.
    instances   TEXT NOT NULL
);
CREATE INDEX patch_runs_fleet ON patch_runs (fleet, id);
-- At most one run of a fleet is in progress, whichever replica started it.
CREATE UNIQUE INDEX patch_runs_one_running ON patch_runs (fleet) WHERE state = 'running';

CREATE TABLE patch_results (
    run_id      BIGINT NOT NULL REFERENCES patch_runs (id) ON DELETE CASCADE,
    instance_id TEXT NOT NULL,
    -- patching, succeeded, failed or skipped.
    state       TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    -- The tail of the command's output, or why it failed.
    output      TEXT NOT NULL,
    PRIMARY KEY (run_id, instance_id)
);
