-- The foundation: accounts and keys, the resources of api.md, and the outbox.
-- Portable SQL: the same file runs on SQLite and PostgreSQL. Identifiers are
-- UUID text (v7 where order matters: newest first = greatest uuid); times are
-- microseconds since the epoch; flags are 0/1 integers.

CREATE TABLE accounts (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    -- last job serial_no handed out in this account
    job_serial BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    uuid TEXT PRIMARY KEY,
    account_uuid TEXT NOT NULL REFERENCES accounts (uuid),
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    -- SHA-256 of the secret part (hex); the secret itself is never stored
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_by_account ON api_keys (account_uuid, uuid);

-- Server-wide values: the secret that signs temporary tokens, first-start marks.
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE idempotency_keys (
    account_uuid TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_uuid, idem_key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- Versioned resources: the full snapshot in `doc` (exactly what GET returns),
-- plus the columns that lists filter on.
CREATE TABLE clients (
    uuid TEXT PRIMARY KEY,
    account_uuid TEXT NOT NULL REFERENCES accounts (uuid),
    external_id TEXT,
    version BIGINT NOT NULL,
    removed BIGINT NOT NULL DEFAULT 0,
    doc TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX clients_external_id_unique ON clients (account_uuid, external_id) WHERE removed = 0;
CREATE INDEX clients_list ON clients (account_uuid, removed, uuid);

CREATE TABLE sites (
    uuid TEXT PRIMARY KEY,
    account_uuid TEXT NOT NULL REFERENCES accounts (uuid),
    external_id TEXT,
    version BIGINT NOT NULL,
    removed BIGINT NOT NULL DEFAULT 0,
    doc TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    client_uuid TEXT
);
CREATE UNIQUE INDEX sites_external_id_unique ON sites (account_uuid, external_id) WHERE removed = 0;
CREATE INDEX sites_list ON sites (account_uuid, removed, uuid);
CREATE INDEX sites_by_client ON sites (client_uuid, removed);

CREATE TABLE jobs (
    uuid TEXT PRIMARY KEY,
    account_uuid TEXT NOT NULL REFERENCES accounts (uuid),
    external_id TEXT,
    version BIGINT NOT NULL,
    removed BIGINT NOT NULL DEFAULT 0,
    doc TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    serial_no BIGINT NOT NULL,
    external_order_id TEXT,
    status TEXT NOT NULL,
    scheduled_at BIGINT,
    worker_uuid TEXT,
    team_uuid TEXT,
    client_uuid TEXT,
    site_uuid TEXT
);
CREATE UNIQUE INDEX jobs_external_id_unique ON jobs (account_uuid, external_id) WHERE removed = 0;
CREATE UNIQUE INDEX jobs_serial_no_unique ON jobs (account_uuid, serial_no);
CREATE INDEX jobs_list ON jobs (account_uuid, removed, uuid);
CREATE INDEX jobs_by_client ON jobs (client_uuid, removed);
CREATE INDEX jobs_by_site ON jobs (site_uuid, removed);
CREATE INDEX jobs_by_worker ON jobs (worker_uuid, removed);
CREATE INDEX jobs_by_team ON jobs (team_uuid, removed);
CREATE INDEX jobs_by_order ON jobs (account_uuid, external_order_id);

CREATE TABLE users (
    uuid TEXT PRIMARY KEY,
    account_uuid TEXT NOT NULL REFERENCES accounts (uuid),
    email TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE UNIQUE INDEX users_email_unique ON users (account_uuid, email);

CREATE TABLE teams (
    uuid TEXT PRIMARY KEY,
    account_uuid TEXT NOT NULL REFERENCES accounts (uuid),
    name TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE UNIQUE INDEX teams_name_unique ON teams (account_uuid, name);

CREATE TABLE job_types (
    uuid TEXT PRIMARY KEY,
    account_uuid TEXT NOT NULL REFERENCES accounts (uuid),
    code TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE UNIQUE INDEX job_types_code_unique ON job_types (account_uuid, code);

-- The outbox: every event, written in the transaction of the change that
-- caused it, with the exact body that webhooks receive. The delivery engine
-- and the history endpoints read it.
CREATE TABLE events (
    uuid TEXT PRIMARY KEY,
    account_uuid TEXT NOT NULL REFERENCES accounts (uuid),
    event_type TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_uuid TEXT NOT NULL,
    entity_version BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_by_entity ON events (entity_uuid, entity_version, uuid);
