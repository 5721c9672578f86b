-- Claims read the due requests of one webhook oldest first
-- (ORDER BY send_at, uuid): with uuid in the index that is an ordered index
-- scan instead of a sort of the webhook's whole backlog. Leases are counted
-- (PostgreSQL) through their own small index.
DROP INDEX requests_due;
CREATE INDEX requests_due ON requests (webhook_uuid, send_at, uuid) WHERE status = 'scheduled';
CREATE INDEX requests_leased ON requests (webhook_uuid, claimed_until)
    WHERE status = 'scheduled' AND claimed_until IS NOT NULL;
