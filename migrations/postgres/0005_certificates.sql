-- Custom-domain certificates (issue #5). A certificate row carries the ACME order in flight, so
-- a crash resumes the order instead of placing another, and the failures in a row that set the
-- backoff before the next attempt.
ALTER TABLE shop_certificates ADD COLUMN order_url TEXT;
ALTER TABLE shop_certificates ADD COLUMN not_before BIGINT;
ALTER TABLE shop_certificates ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
-- Why next_attempt_at is set (SelfCheckFailed, ChallengeRejected, BudgetExhausted).
ALTER TABLE shop_certificates ADD COLUMN wait_reason TEXT;
-- ACME Renewal Information (RFC 9773): the certificate's identifier, when the CA asks for the
-- renewal (if sooner than two thirds of the lifetime), and when to ask the CA again.
ALTER TABLE shop_certificates ADD COLUMN renewal_info_id TEXT;
ALTER TABLE shop_certificates ADD COLUMN renew_after BIGINT;
ALTER TABLE shop_certificates ADD COLUMN renewal_info_next_check BIGINT;

-- What counts against the CA's rate limits, shared by every replica: new orders per account,
-- failed validations and issued certificates per domain. Events older than the longest window
-- are purged as new ones are taken.
CREATE TABLE acme_budget_events (
    id      BIGSERIAL PRIMARY KEY,
    budget  TEXT NOT NULL,
    subject TEXT NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX acme_budget_events_subject ON acme_budget_events (budget, subject, at);
