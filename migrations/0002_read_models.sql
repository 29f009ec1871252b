-- Read models, folded from the feed by the projections crate. Each projection owns its tables
-- and its row in feed_checkpoints; nothing else writes them.

-- Projection "requests": the request detail (its folded state) and its timeline.
CREATE TABLE rm_requests (
    id            uuid        PRIMARY KEY,
    system        text        NOT NULL,
    external_ref  text        NOT NULL,
    requester     text        NOT NULL,
    status        text        NOT NULL,
    version       bigint      NOT NULL,
    state         jsonb       NOT NULL,
    submitted_at  timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    due_at        timestamptz
);
CREATE INDEX rm_requests_pending_due ON rm_requests (due_at) WHERE status = 'pending' AND due_at IS NOT NULL;

CREATE TABLE rm_timeline (
    request_id   uuid        NOT NULL,
    sequence     bigint      NOT NULL,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    actor        text,
    comment      text,
    step         integer,
    delegate     text,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL,
    PRIMARY KEY (request_id, sequence)
);

-- Projection "inbox": one row per person and request awaiting their decision.
CREATE TABLE rm_inbox (
    user_id          text        NOT NULL,
    request_id       uuid        NOT NULL,
    system           text        NOT NULL,
    kind             text        NOT NULL,
    title            text        NOT NULL,
    amount_value     text,
    amount_currency  text,
    requester        text        NOT NULL,
    submitted_at     timestamptz NOT NULL,
    due_at           timestamptz,
    -- due_at with "no due time" last: the key of the inbox's order and of its cursor.
    due_key          timestamptz NOT NULL,
    step             integer     NOT NULL,
    status           text        NOT NULL,
    version          bigint      NOT NULL,
    PRIMARY KEY (user_id, request_id)
);
CREATE INDEX rm_inbox_order ON rm_inbox (user_id, due_key, submitted_at, request_id);
CREATE INDEX rm_inbox_request ON rm_inbox (request_id);

-- The inbox projection's own fold of each request, so it never reads another projection.
CREATE TABLE rm_inbox_state (
    request_id uuid  PRIMARY KEY,
    state      jsonb NOT NULL
);

-- Projection "lookup": a system's reference to the request, for reconciliation.
CREATE TABLE rm_lookup (
    system        text        NOT NULL,
    external_ref  text        NOT NULL,
    request_id    uuid        NOT NULL,
    status        text        NOT NULL,
    version       bigint      NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (system, external_ref)
);
CREATE INDEX rm_lookup_request ON rm_lookup (request_id);
