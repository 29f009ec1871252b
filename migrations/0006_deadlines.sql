-- Deadlines (contract part two, section 6): the current step's deadline beside each request and
-- inbox item, and the timers the projection "requests" derives from every request's state.

ALTER TABLE rm_requests ADD COLUMN step_due_at timestamptz;
CREATE INDEX rm_requests_pending_step_due ON rm_requests (step_due_at)
    WHERE status = 'pending' AND step_due_at IS NOT NULL;

ALTER TABLE rm_inbox ADD COLUMN step_due_at timestamptz;

-- One row per timer a request sets now (reminders, overdue notice, escalation, expiry); the
-- worker's timer loop fires the due ones and deletes them, the projection rewrites a request's
-- rows whenever it changes. `timer` is the aggregate's key of the timer (`expiry`,
-- `s0:before:3600`, `s0:overdue`, `s0:escalation`); `rank` orders timers due at one moment.
CREATE TABLE rm_timers (
    request_id  uuid        NOT NULL,
    timer       text        NOT NULL,
    kind        text        NOT NULL,
    rank        smallint    NOT NULL,
    fire_at     timestamptz NOT NULL,
    PRIMARY KEY (request_id, timer)
);
CREATE INDEX rm_timers_due ON rm_timers (fire_at, rank);

-- The requests pending before this migration set their expiry timers here.
INSERT INTO rm_timers (request_id, timer, kind, rank, fire_at)
SELECT id, 'expiry', 'expiry', 3, due_at FROM rm_requests
WHERE status = 'pending' AND due_at IS NOT NULL;
