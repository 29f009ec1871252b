-- Tamper evidence: every event's hash chains it to the previous event of its request, a feed
-- reader (the "audit" reader) folds every event's hash into one running hash over the global
-- feed and writes periodic checkpoints of it, and the ledger's tables refuse UPDATE and DELETE.
-- See docs/decisions/0004-tamper-evidence.md for the design, its threat model and its limits.
-- src/audit/chain.rs computes the same hashes in Rust; the two must never disagree.

-- The hash before the first event of every request, and the running hash before any event.
CREATE FUNCTION ledger_genesis() RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT decode(repeat('00', 32), 'hex') $$;

-- A field of the canonical form: its length in bytes (4 bytes, big-endian), then its bytes, so no
-- two different sequences of fields can ever give the same bytes.
CREATE FUNCTION ledger_frame(part bytea) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT int4send(length(part)) || part $$;

-- The hash of an event: SHA-256 over a domain tag, the previous event's hash and the canonical
-- form of the event. Text is hashed as UTF-8 whatever the database's encoding; JSON as
-- PostgreSQL's jsonb text form, which is a function of the stored value alone (keys sorted,
-- duplicates removed, fixed spacing); the time as microseconds since the Unix epoch, which does
-- not depend on the session's time zone or date style.
CREATE FUNCTION ledger_event_hash(
    prev bytea, aggregate_type text, aggregate_id text, sequence bigint, event_type text,
    event_version text, payload jsonb, metadata jsonb, event_id uuid, recorded_at timestamptz
) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
    SELECT sha256(
        convert_to('approval-ledger/event/v1', 'UTF8')
        || prev
        || ledger_frame(convert_to(aggregate_type, 'UTF8'))
        || ledger_frame(convert_to(aggregate_id, 'UTF8'))
        || int8send(sequence)
        || ledger_frame(convert_to(event_type, 'UTF8'))
        || ledger_frame(convert_to(event_version, 'UTF8'))
        || ledger_frame(convert_to(payload::text, 'UTF8'))
        || ledger_frame(convert_to(metadata::text, 'UTF8'))
        || uuid_send(event_id)
        || int8send((extract(epoch FROM recorded_at) * 1000000)::bigint))
    $$;

ALTER TABLE events ADD COLUMN hash bytea;

-- Events written before this migration get their chains now, request by request in sequence
-- order. A request with a gap in its sequence would leave a row without a hash and fail the
-- NOT NULL below: a store in that state needs a look before it gets a seal.
WITH RECURSIVE chain AS (
    SELECT e.aggregate_type, e.aggregate_id, e.sequence,
           ledger_event_hash(ledger_genesis(), e.aggregate_type, e.aggregate_id, e.sequence,
               e.event_type, e.event_version, e.payload, e.metadata, e.event_id,
               e.recorded_at) AS hash
    FROM events e
    WHERE e.sequence = 1
  UNION ALL
    SELECT e.aggregate_type, e.aggregate_id, e.sequence,
           ledger_event_hash(c.hash, e.aggregate_type, e.aggregate_id, e.sequence,
               e.event_type, e.event_version, e.payload, e.metadata, e.event_id, e.recorded_at)
    FROM chain c
    JOIN events e ON e.aggregate_type = c.aggregate_type AND e.aggregate_id = c.aggregate_id
                 AND e.sequence = c.sequence + 1
)
UPDATE events e SET hash = chain.hash
FROM chain
WHERE e.aggregate_type = chain.aggregate_type AND e.aggregate_id = chain.aggregate_id
  AND e.sequence = chain.sequence;

ALTER TABLE events
    ALTER COLUMN hash SET NOT NULL,
    ADD CONSTRAINT events_hash_is_sha256 CHECK (octet_length(hash) = 32);

-- Fills the hash of every appended event, whatever the writer sent. One primary-key look-up of
-- the previous event, which the appending command has just loaded: no lock beyond the row's own,
-- so appends to different requests never wait for each other. postgres-es inserts events one
-- statement at a time, so the previous event of the same transaction is visible here.
CREATE FUNCTION events_chain() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    prev bytea;
BEGIN
    IF NEW.sequence = 1 THEN
        prev := ledger_genesis();
    ELSE
        SELECT e.hash INTO prev FROM events e
        WHERE e.aggregate_type = NEW.aggregate_type AND e.aggregate_id = NEW.aggregate_id
          AND e.sequence = NEW.sequence - 1;
        IF prev IS NULL THEN
            RAISE EXCEPTION 'event % of % % has no previous event to chain to',
                NEW.sequence, NEW.aggregate_type, NEW.aggregate_id;
        END IF;
    END IF;
    NEW.hash := ledger_event_hash(prev, NEW.aggregate_type, NEW.aggregate_id, NEW.sequence,
        NEW.event_type, NEW.event_version, NEW.payload, NEW.metadata, NEW.event_id,
        NEW.recorded_at);
    RETURN NEW;
END
$$;

CREATE TRIGGER events_chain BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_chain();

-- The second line of defence: the ledger's tables refuse to change. A superuser can still
-- bypass triggers (session_replication_role = replica, ALTER TABLE ... DISABLE TRIGGER); the
-- hashes and the audit checkpoints are what catch that.
CREATE FUNCTION ledger_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION '% on %: the table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- The audit reader's state: how far it has read the feed, how many events it has counted and
-- the running hash over them, in feed order: running = SHA-256(domain tag || running ||
-- tx_id || global_id || event hash). One row; moved in the same transaction as the reader's
-- checkpoint in feed_checkpoints.
CREATE TABLE audit_chain (
    id              boolean     PRIMARY KEY DEFAULT true CHECK (id),
    tx_id           bigint      NOT NULL DEFAULT 0,
    global_id       bigint      NOT NULL DEFAULT 0,
    event_count     bigint      NOT NULL DEFAULT 0,
    running_hash    bytea       NOT NULL DEFAULT ledger_genesis(),
    checkpointed_at timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO audit_chain DEFAULT VALUES;

-- Periodic statements of the running hash, for operators to export and countersign
-- (`approval-ledger audit checkpoints`) and for `audit verify` to check the store against.
CREATE TABLE audit_checkpoints (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id         bigint      NOT NULL,
    global_id     bigint      NOT NULL,
    event_count   bigint      NOT NULL,
    running_hash  bytea       NOT NULL CHECK (octet_length(running_hash) = 32),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- The last event of each request the audit reader has seen, with its hash: how `audit verify`
-- names the request and sequence of a cut-off tail or of a request removed whole, which a
-- request's own hash chain cannot see.
CREATE TABLE audit_heads (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL,
    hash           bytea  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
