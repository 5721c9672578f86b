-- Assignee notifications (api.md, "Assignee notification"), and internal
-- webhooks: the push gateway is delivered to by the same engine as user
-- webhooks, through a hidden webhook of kind 'push' per account.

ALTER TABLE webhooks ADD COLUMN kind TEXT NOT NULL DEFAULT 'user';

CREATE TABLE notifications (
    uuid TEXT PRIMARY KEY,
    account_uuid TEXT NOT NULL REFERENCES accounts (uuid),
    user_uuid TEXT NOT NULL,
    job_uuid TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX notifications_by_user ON notifications (user_uuid, uuid);
