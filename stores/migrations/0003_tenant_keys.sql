-- ragc warm tier, revision 0003: tenant API keys.
--
-- A key's plain text is never stored: `digest` is its SHA-256 (hex). `key_id` is the digest's
-- first 12 hex digits, what `ragc tenant-keys revoke` takes. The service reads the live keys
-- (revoked_at IS NULL) every few seconds.

CREATE TABLE ragc.tenant_keys (
    digest     text PRIMARY KEY,
    key_id     text NOT NULL UNIQUE,
    tenant     text NOT NULL,
    label      text NOT NULL DEFAULT '',
    created_at double precision NOT NULL,              -- unix seconds
    revoked_at double precision,
    seq        bigserial NOT NULL UNIQUE
);
CREATE INDEX tenant_keys_by_tenant ON ragc.tenant_keys (tenant);
