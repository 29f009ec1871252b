-- People (contract part two, section 7): absences with deputies, group items in the inbox.

-- Projection "absences": every absence as its person's `Absences` aggregate recorded it. An
-- early end moves `until_at` (and sets `ended_at`), so "in force at t" is always
-- `from_at <= t AND t < until_at`. The inbox query follows `deputy` from the caller to the
-- people they stand in for, hence the index.
CREATE TABLE rm_absences (
    id          uuid        PRIMARY KEY,
    person      text        NOT NULL,
    deputy      text        NOT NULL,
    from_at     timestamptz NOT NULL,
    until_at    timestamptz NOT NULL,
    comment     text,
    recorded_at timestamptz NOT NULL,
    ended_at    timestamptz
);
CREATE INDEX rm_absences_deputy ON rm_absences (deputy, until_at);
CREATE INDEX rm_absences_person ON rm_absences (person, from_at);

-- Items of a group (a step's `groups`) are rows of rm_inbox whose user_id is 'group <name>':
-- no user id holds white space, so they never meet a person's. `decided` lists who decided
-- the open step (as their decisions count), whom a group's item no longer waits for.
ALTER TABLE rm_inbox ADD COLUMN decided text[] NOT NULL DEFAULT '{}';
