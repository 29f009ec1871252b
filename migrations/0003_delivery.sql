-- Events leaving the service: the devices people registered for push notifications, and the
-- durable delivery jobs of the legacy-sync and push handlers (the job scheduler's queue).

CREATE TABLE devices (
    token       text        PRIMARY KEY,
    user_id     text        NOT NULL,
    platform    text        NOT NULL CHECK (platform IN ('android', 'ios')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_user ON devices (user_id);

-- One row per event and target (a system for callbacks, a device token for pushes). The unique
-- key makes a redelivered RabbitMQ message harmless: it finds its job already there. (This table
-- is not on the event store's append path, so a unique index here is safe.)
CREATE TABLE deliveries (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel          text        NOT NULL CHECK (channel IN ('callback', 'push')),
    event_id         uuid        NOT NULL,
    request_id       uuid        NOT NULL,
    sequence         bigint      NOT NULL,
    target           text        NOT NULL,
    body             jsonb       NOT NULL,
    -- pending: to be sent (or in flight, leased until next_attempt_at); delivered; dead: a
    -- dead letter (4xx, or retries exhausted), re-driven by `dead-letters retry`; dropped: the
    -- push provider said the device is gone.
    status           text        NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'delivered', 'dead', 'dropped')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    -- The event's recorded_at: commit-to-delivery latency is measured from it.
    committed_at     timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    UNIQUE (channel, event_id, target)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE status = 'pending';
-- Per-request order of callbacks: a job waits while an earlier one of its request is pending
-- or dead.
CREATE INDEX deliveries_request_order ON deliveries (request_id, target, sequence)
    WHERE channel = 'callback' AND status IN ('pending', 'dead');
CREATE INDEX deliveries_dead ON deliveries (id) WHERE status = 'dead';
