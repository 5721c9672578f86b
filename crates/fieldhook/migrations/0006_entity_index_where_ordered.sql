-- The entity-ordering index serves one query: a claim for a webhook with
-- `ordering: "entity"` asking whether an earlier version of the same
-- resource is still pending. Requests of the other webhooks (most of them)
-- paid for it all the same: an index insert with each request and a delete
-- with each result, over the widest key of the table. `entity_ordered` says
-- whether a request must be in it.
--
-- SQLite: 1 exactly for the requests of entity-ordered webhooks. Its writes
-- are serial, so a request written in the same transaction as its
-- webhook's ordering always agrees with it, and switching a webhook to
-- entity ordering marks its scheduled requests (storage::webhooks::update).
-- PostgreSQL: always 1. There a request written concurrently with the
-- switch could read the old ordering and miss the marking, and the claim
-- would then skip it when it checks for earlier versions.
--
-- Rows written before this migration keep the default, 1: indexed as before.

ALTER TABLE requests ADD COLUMN entity_ordered BIGINT NOT NULL DEFAULT 1;
DROP INDEX requests_by_entity;
CREATE INDEX requests_by_entity ON requests (webhook_uuid, entity_uuid, entity_version)
    WHERE status = 'scheduled' AND entity_ordered = 1;
