-- Working with the requester (contract part two, section 8): the projection "lists", the
-- caller's own requests and the requests they decided, newest first, searchable.

-- Trigram indexes make `q` (a substring of title, reference or requester, in any case) an
-- index search at any table size. pg_trgm is a trusted extension (PostgreSQL 13 and later),
-- so the service's own role may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- One row per request, shaped like an inbox item.
CREATE TABLE rm_list (
    request_id       uuid        PRIMARY KEY,
    system           text        NOT NULL,
    external_ref     text        NOT NULL,
    kind             text        NOT NULL,
    title            text        NOT NULL,
    amount_value     text,
    amount_currency  text,
    requester        text        NOT NULL,
    -- When the current round was submitted: the requester's list is newest first by it.
    submitted_at     timestamptz NOT NULL,
    due_at           timestamptz,
    step             integer     NOT NULL,
    status           text        NOT NULL,
    version          bigint      NOT NULL,
    round            integer     NOT NULL,
    updated_at       timestamptz NOT NULL,
    -- What `q` searches, lower-cased; the parts on lines of their own.
    search           text        GENERATED ALWAYS AS
                         (lower(title || chr(10) || external_ref || chr(10) || requester)) STORED
);
-- role=requester, newest first, read backwards from a cursor (with or without a status).
CREATE INDEX rm_list_requester ON rm_list (requester, submitted_at, request_id);
CREATE INDEX rm_list_requester_status ON rm_list (requester, status, submitted_at, request_id);
CREATE INDEX rm_list_search ON rm_list USING gin (search gin_trgm_ops);

-- One row per person and request they decided (approve, reject or return, any step, any
-- round), with their latest decision's moment: role=decided is newest first by it.
CREATE TABLE rm_list_decided (
    user_id     text        NOT NULL,
    request_id  uuid        NOT NULL,
    decided_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, request_id)
);
CREATE INDEX rm_list_decided_order ON rm_list_decided (user_id, decided_at, request_id);
