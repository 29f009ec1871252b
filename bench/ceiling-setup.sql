-- Setup of the PostgreSQL ceiling (bench/ceiling.sql), run by scripts/bench.sh in the seeded
-- benchmark database once the service has stopped: numbers the requests so that each pgbench
-- client can pick one by number without a round trip of its own.
DROP TABLE IF EXISTS ceiling_requests;
CREATE TABLE ceiling_requests AS
    SELECT row_number() OVER (ORDER BY id) AS n, id::text AS aggregate_id FROM rm_requests;
ALTER TABLE ceiling_requests ADD PRIMARY KEY (n);
ANALYZE ceiling_requests;
SELECT count(*) AS requests FROM ceiling_requests;
