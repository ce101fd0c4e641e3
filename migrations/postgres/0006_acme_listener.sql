-- The target group of the controller's ACME HTTP-01 responder (issue #5). When a region names
-- one, its proxy ALB gets a port-80 listener forwarding /.well-known/acme-challenge/* there and
-- redirecting everything else to HTTPS. NULL: the region has none, and port 80 is left alone.
ALTER TABLE region_configs ADD COLUMN acme_responder_target_group_arn TEXT;
