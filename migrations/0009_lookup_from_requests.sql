-- The projection "lookup" is gone: a system's reference derives its request's id
-- (RequestId::for_submission), so GET /v1/systems/{system}/requests/{external_ref} reads the
-- request detail's row by its primary key. Its table and its checkpoint go with it.
DROP TABLE IF EXISTS rm_lookup;
DELETE FROM feed_checkpoints WHERE name = 'lookup';
