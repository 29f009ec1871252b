-- Analytics (contract section 10): the projection "analytics", one row per round of a request,
-- one per step occurrence that became current, one per decision. GET /v1/analytics/approvals
-- and `approval-ledger report` read them.

-- One row per round of a request (round 1 is its submission, each resubmission opens the next).
CREATE TABLE rm_analytics_rounds (
    request_id    uuid        NOT NULL,
    round         integer     NOT NULL,
    -- The sequence of the event that opened the round: an event of the request belongs to the
    -- round with the greatest since_seq at or below its own sequence.
    since_seq     bigint      NOT NULL,
    system        text        NOT NULL,
    kind          text        NOT NULL,
    submitted_at  timestamptz NOT NULL,
    -- Each step as submitted: {"asked": [approvers], "due_in": seconds or null}, so that a step
    -- can get its row when it becomes current without reading any state.
    plan          jsonb       NOT NULL,
    -- approved | rejected | returned | expired | withdrawn | cancelled, once the round ended.
    outcome       text,
    ended_at      timestamptz,
    PRIMARY KEY (request_id, round)
);
-- The window of a report: rounds submitted in [from, to).
CREATE INDEX rm_analytics_rounds_submitted ON rm_analytics_rounds (submitted_at);

-- One row per step occurrence, written when the step becomes current.
CREATE TABLE rm_analytics_steps (
    request_id         uuid        NOT NULL,
    round              integer     NOT NULL,
    step               integer     NOT NULL,
    -- Everyone asked to decide it: its approvers, delegates and escalations (may repeat).
    asked              jsonb       NOT NULL,
    became_current_at  timestamptz NOT NULL,
    due_at             timestamptz,
    ended_at           timestamptz,
    -- approved (its rule was met) | rejected | returned, or how the request ended while it was
    -- open: expired | withdrawn | cancelled.
    outcome            text,
    PRIMARY KEY (request_id, round, step)
);

-- One row per decision (approve, reject, return), counted as the person it counts as (the
-- absent person a deputy stood in for).
CREATE TABLE rm_analytics_decisions (
    request_id  uuid        NOT NULL,
    sequence    bigint      NOT NULL,
    round       integer     NOT NULL,
    step        integer     NOT NULL,
    person      text        NOT NULL,
    decided_by  text        NOT NULL,
    verdict     text        NOT NULL,
    decided_at  timestamptz NOT NULL,
    PRIMARY KEY (request_id, sequence)
);
