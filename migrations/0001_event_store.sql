-- The event store. postgres-es writes the first seven columns with an explicit column list; the
-- rest take their defaults, so the library stays unaware of them.
--
--   event_id     a stable id, the same on every delivery of the event (RabbitMQ message_id,
--                X-Ledger-Event-Id).
--   global_id    the event's position in the global feed, unique and increasing along it.
--   tx_id        the id of the transaction that wrote the event (pg_current_xact_id(), 64 bits,
--                never wraps). The feed is ordered by (tx_id, global_id) and is read only below
--                the oldest transaction still running, so no reader ever passes an event that
--                has yet to commit. See docs/decisions/0002-gap-free-feed.md.
--   recorded_at  the time the row was written, inside its short append transaction.
CREATE TABLE events (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL CHECK (sequence > 0),
    event_type     text        NOT NULL,
    event_version  text        NOT NULL,
    payload        jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    event_id       uuid        NOT NULL DEFAULT gen_random_uuid(),
    global_id      bigint      NOT NULL GENERATED ALWAYS AS IDENTITY,
    tx_id          bigint      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- The feed's order. Not unique: a unique violation on the event path would surface from
-- postgres-es as an optimistic-lock conflict.
CREATE INDEX events_feed_order ON events (tx_id, global_id);
CREATE INDEX events_event_id ON events (event_id);

-- Where each reader of the feed stands. A reader updates its row in the same transaction as
-- the effect of the events it read, so each event takes effect exactly once.
CREATE TABLE feed_checkpoints (
    name       text        PRIMARY KEY,
    tx_id      bigint      NOT NULL DEFAULT 0,
    global_id  bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The first answer given to a person's command sent with an Idempotency-Key.
CREATE TABLE idempotency_keys (
    principal    text        NOT NULL,
    key          text        NOT NULL,
    fingerprint  text        NOT NULL,
    status_code  smallint    NOT NULL,
    body         jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
