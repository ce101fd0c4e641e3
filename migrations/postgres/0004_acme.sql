-- ACME (issue #5). One CA account per directory URL, shared by every replica: the
-- instant-acme credentials JSON sealed with the controller's ACME encryption key (AEAD, random
-- nonce first, base64), never stored in the clear. The first replica to create an account
-- inserts it; a replica that lost that race reads the winner's.
CREATE TABLE acme_accounts (
    directory_url TEXT PRIMARY KEY,
    credentials   TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

-- The HTTP-01 challenges in flight: the responder of any replica answers
-- /.well-known/acme-challenge/<token> from here, whichever replica placed the order.
CREATE TABLE acme_challenges (
    token             TEXT PRIMARY KEY,
    domain            TEXT NOT NULL,
    key_authorization TEXT NOT NULL,
    expires_at        BIGINT NOT NULL
);
CREATE INDEX acme_challenges_domain ON acme_challenges (domain);
CREATE INDEX acme_challenges_expiry ON acme_challenges (expires_at);
