-- Optional columns are indexed only where they hold a value. A job is often
-- created without a worker, a team, an order or an external_id (and an
-- integration may not send clients and sites at all); each index over an
-- empty column still took an insert per create on the single writer.
-- Every query that uses these indexes compares the column with `=` (or
-- IN), which both databases know to imply IS NOT NULL, so the plans stay.

DROP INDEX jobs_by_client;
CREATE INDEX jobs_by_client ON jobs (client_uuid, removed) WHERE client_uuid IS NOT NULL;
DROP INDEX jobs_by_site;
CREATE INDEX jobs_by_site ON jobs (site_uuid, removed) WHERE site_uuid IS NOT NULL;
DROP INDEX jobs_by_worker;
CREATE INDEX jobs_by_worker ON jobs (worker_uuid, removed) WHERE worker_uuid IS NOT NULL;
DROP INDEX jobs_by_team;
CREATE INDEX jobs_by_team ON jobs (team_uuid, removed) WHERE team_uuid IS NOT NULL;
DROP INDEX jobs_by_order;
CREATE INDEX jobs_by_order ON jobs (account_uuid, external_order_id) WHERE external_order_id IS NOT NULL;

-- Unique among live rows that have one (NULLs never collided anyway).
DROP INDEX jobs_external_id_unique;
CREATE UNIQUE INDEX jobs_external_id_unique ON jobs (account_uuid, external_id)
    WHERE removed = 0 AND external_id IS NOT NULL;
DROP INDEX clients_external_id_unique;
CREATE UNIQUE INDEX clients_external_id_unique ON clients (account_uuid, external_id)
    WHERE removed = 0 AND external_id IS NOT NULL;
DROP INDEX sites_external_id_unique;
CREATE UNIQUE INDEX sites_external_id_unique ON sites (account_uuid, external_id)
    WHERE removed = 0 AND external_id IS NOT NULL;
DROP INDEX sites_by_client;
CREATE INDEX sites_by_client ON sites (client_uuid, removed) WHERE client_uuid IS NOT NULL;
