-- Operators pause reconciliation of one shop or of a whole region (issue #6). A paused shop is
-- loaded and left alone: no cloud call, no status write, teardown included. Pausing is intent
-- written by the gRPC path, but not part of the spec: it does not move the generation.
ALTER TABLE shops ADD COLUMN paused_at BIGINT;
ALTER TABLE shops ADD COLUMN pause_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE region_configs ADD COLUMN paused_at BIGINT;
ALTER TABLE region_configs ADD COLUMN pause_reason TEXT NOT NULL DEFAULT '';
