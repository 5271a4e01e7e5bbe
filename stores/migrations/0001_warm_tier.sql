-- ragc warm tier, revision 0001: everything the service and the compiler share through Postgres.
--
-- Applied by `ragc db upgrade` (stores/postgres.py: migrate), once, inside a transaction, while
-- holding the upgraders' advisory lock. Applied migrations are immutable: change the schema by
-- adding 0002_*.sql, never by editing this file (its checksum is recorded).
--
-- Times that round-trip into Python floats (audit ts, webhook received_at) are unix seconds in
-- double precision, exactly as the embedded SQLite tier keeps them; to_timestamp(ts) reads them.

CREATE SCHEMA IF NOT EXISTS ragc;

CREATE TABLE ragc.schema_migrations (
    version    text PRIMARY KEY,                       -- '0001'
    name       text NOT NULL,                          -- '0001_warm_tier'
    checksum   text NOT NULL,                          -- sha256 of the file as applied
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- The catalogue of published versions: one manifest per version, written once at publish.
CREATE TABLE ragc.versions (
    version     text PRIMARY KEY,
    seq         bigserial NOT NULL UNIQUE,             -- publish order
    manifest    jsonb NOT NULL,
    checksum    text NOT NULL,                         -- the manifest's snapshot checksum
    created_at  timestamptz NOT NULL,                  -- when the compile made it
    recorded_at timestamptz NOT NULL DEFAULT now()     -- when it was published here
);

-- L2 enumeration slot values per version and intent, for joins ("which intents take X?").
CREATE TABLE ragc.l2_slot_values (
    version text NOT NULL REFERENCES ragc.versions (version) ON DELETE CASCADE,
    intent  text NOT NULL,
    slot    text NOT NULL,
    value   text NOT NULL,
    PRIMARY KEY (version, intent, slot, value)
);
CREATE INDEX l2_slot_values_by_value ON ragc.l2_slot_values (slot, value, version);

-- Every served answer.
CREATE TABLE ragc.audit_answers (
    id         bigserial PRIMARY KEY,
    ts         double precision NOT NULL,              -- unix seconds
    tenant     text,
    version    text NOT NULL,
    layer      text NOT NULL,
    cache_key  text,
    entry_id   text,
    latency_ms double precision NOT NULL,
    normalized text NOT NULL
);
CREATE INDEX audit_answers_by_time ON ragc.audit_answers (ts);
CREATE INDEX audit_answers_by_layer ON ragc.audit_answers (layer, ts);
CREATE INDEX audit_answers_by_tenant ON ragc.audit_answers (tenant, layer, ts);

-- Every SAFE (fallback) answer, with what the router guessed: input for the next compile.
CREATE TABLE ragc.audit_misses (
    id         bigserial PRIMARY KEY,
    ts         double precision NOT NULL,              -- unix seconds
    tenant     text,
    version    text NOT NULL,
    question   text NOT NULL,
    normalized text NOT NULL,
    best_guess text,
    best_score double precision NOT NULL,
    candidates jsonb NOT NULL DEFAULT '[]'             -- [[entry_or_intent, score], ...]
);
CREATE INDEX audit_misses_by_time ON ragc.audit_misses (ts);
CREATE INDEX audit_misses_by_tenant ON ragc.audit_misses (tenant, ts);
CREATE INDEX audit_misses_by_text ON ragc.audit_misses (normalized, ts DESC);

-- The review queue and its decisions, bound to (entry id, fingerprint).
CREATE TABLE ragc.review_items (
    entry_id     text NOT NULL,
    fingerprint  text NOT NULL,
    seq          bigserial NOT NULL UNIQUE,            -- submission order: the highest is newest
    question     text NOT NULL,
    answer       text NOT NULL,
    score        double precision NOT NULL,
    sources      text[] NOT NULL DEFAULT '{}',
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'approved', 'rejected')),
    reviewer     text NOT NULL DEFAULT '',
    decided_at   timestamptz,
    submitted_at timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entry_id, fingerprint)
);
CREATE INDEX review_items_newest ON ragc.review_items (entry_id, seq DESC);
CREATE INDEX review_items_by_status ON ragc.review_items (status, seq DESC);

-- Accepted knowledge-changed webhook deliveries; the primary key refuses replays atomically.
CREATE TABLE ragc.webhook_deliveries (
    delivery    text PRIMARY KEY,
    seq         bigserial NOT NULL UNIQUE,             -- acceptance order (ties in received_at)
    received_at double precision NOT NULL,             -- unix seconds
    signed_at   bigint NOT NULL,
    knowledge   text NOT NULL,
    changed     text[] NOT NULL,
    status      text NOT NULL DEFAULT 'recorded'
                CHECK (status IN ('recorded', 'dispatched', 'done', 'failed')),
    detail      text,
    updated_at  double precision NOT NULL
);
CREATE INDEX webhook_deliveries_pending ON ragc.webhook_deliveries (received_at, seq)
    WHERE status = 'recorded';
CREATE INDEX webhook_deliveries_newest ON ragc.webhook_deliveries (received_at DESC, seq DESC);
