-- The PostgreSQL ceiling: the SQL one decision needs at its leanest, in one transaction, on the
-- service's own seeded tables and server (pgbench -M prepared, the same clients as the
-- service's best saturation level, fsync and synchronous_commit as the server has them):
--   1. read the request's events (what postgres-es's load reads);
--   2. append one event with the next sequence, the primary key being the optimistic lock, as
--      postgres-es appends (the table's defaults fill event_id, global_id, tx_id, recorded_at);
--   3. update the request's read-model row.
-- pgbench variables: clients (-c), requests (rows of ceiling_requests). Each client picks from
-- its own slice of requests, so two clients never race for one key.
\set n :client_id + 1 + :clients * random(0, :requests / :clients - 1)
BEGIN;
SELECT e.aggregate_id AS agg, e.sequence AS seq, e.event_type, e.event_version, e.payload, e.metadata
  FROM events e
 WHERE e.aggregate_type = 'ApprovalRequest'
   AND e.aggregate_id = (SELECT aggregate_id FROM ceiling_requests WHERE n = :n)
 ORDER BY e.sequence \aset
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
VALUES ('ApprovalRequest', :agg, :seq + 1, 'ApprovalRecorded', '1.0',
        '{"ApprovalRecorded": {"step": 0, "approver": "a01234", "comment": "ok", "at": "2026-01-05T09:00:00Z"}}',
        '{"actor": "a01234", "request_id": "6a1f3c52-4d0e-4b8e-9a51-2f7d1c0b9e34"}');
UPDATE rm_requests SET version = :seq + 1, updated_at = now() WHERE id = :agg::uuid;
END;
