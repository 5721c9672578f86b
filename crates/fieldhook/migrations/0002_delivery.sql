-- Webhooks and the request log. Every attempt to deliver one event to one
-- webhook is a row of `requests`; a failed attempt is followed by a new row.

CREATE TABLE webhooks (
    uuid TEXT PRIMARY KEY,
    account_uuid TEXT NOT NULL REFERENCES accounts (uuid),
    url TEXT NOT NULL,
    -- ",job_created,job_updated," so that one LIKE finds the subscribers
    event_types TEXT NOT NULL,
    secret TEXT,
    signing_secret TEXT NOT NULL,
    ordering TEXT NOT NULL,
    status TEXT NOT NULL,
    -- the key that created the webhook: its scopes go into X-Planado-Api-Token
    created_by_key TEXT NOT NULL,
    suspended_at BIGINT,
    suspension_reason TEXT,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    failing_since BIGINT,
    next_probe_at BIGINT,
    removed BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhooks_by_account ON webhooks (account_uuid, removed, uuid);

CREATE TABLE requests (
    uuid TEXT PRIMARY KEY,
    account_uuid TEXT NOT NULL,
    webhook_uuid TEXT NOT NULL REFERENCES webhooks (uuid),
    event_uuid TEXT NOT NULL REFERENCES events (uuid),
    event_type TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_uuid TEXT NOT NULL,
    entity_version BIGINT NOT NULL,
    attempt_no BIGINT NOT NULL,
    -- failures of this event that counted against the retry budget (probes
    -- of a suspended webhook do not)
    retry_no BIGINT NOT NULL DEFAULT 0,
    -- 'scheduled' (waiting for send_at) or 'sent'
    status TEXT NOT NULL,
    -- NULL while scheduled; then 'success', 'failed' (a retry follows) or
    -- 'exhausted' (no retry follows: the event failed for this webhook)
    outcome TEXT,
    send_at BIGINT NOT NULL,
    -- a worker's lease on a scheduled request (PostgreSQL scale-out)
    claimed_by TEXT,
    claimed_until BIGINT,
    sent_at BIGINT,
    request_time_ms BIGINT,
    http_response_code BIGINT,
    http_response_headers TEXT,
    http_response_body TEXT,
    error_type TEXT,
    error_description TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX requests_due ON requests (webhook_uuid, send_at) WHERE status = 'scheduled';
CREATE INDEX requests_by_webhook ON requests (webhook_uuid, uuid);
CREATE INDEX requests_by_entity ON requests (webhook_uuid, entity_uuid, entity_version) WHERE status = 'scheduled';
CREATE INDEX requests_sent_at ON requests (sent_at) WHERE status = 'sent';
