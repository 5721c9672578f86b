-- Pruning walks the requests in creation order instead of through an index
-- of their send times. Every recorded attempt inserted an entry into
-- `requests_sent_at`, which served only the pruner, once a minute: 3.2 % of
-- the instructions a drain spent per delivery (callgrind; see
-- docs/benchmarks.md). A request is sent after it is created and its uuid is
-- a v7 uuid (creation time first), so every request sent before a time has a
-- uuid below one made at that time, and the primary key's index finds them
-- (storage::deliveries::prune).
DROP INDEX requests_sent_at;
