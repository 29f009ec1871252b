-- The event hash is STABLE, not IMMUTABLE: its body calls convert_to() and extract() on a
-- timestamptz, which PostgreSQL marks STABLE, and a SQL function is only inlined into its caller
-- when its body is no more volatile than it is declared. Declared IMMUTABLE, it was run as a
-- separate SQL function whose body was parsed and planned again for every INSERT into events
-- (measured with pg_stat_statements: a third of the append's time; docs/benchmarks.md). STABLE,
-- the trigger's expression inlines it once per connection. The hash itself is unchanged: the same
-- expression over the same values (src/audit/chain.rs must still agree, and the tests check it).
-- The result still depends on nothing but the arguments: the text is converted to UTF-8 whatever
-- the database's encoding, and the epoch of a timestamptz does not depend on the time zone.
ALTER FUNCTION ledger_event_hash(bytea, text, text, bigint, text, text, jsonb, jsonb, uuid,
                                 timestamptz) STABLE;
