-- +goose Up
-- The kill switches: one row, whose state is the JSON of dibs.Switches and
-- whose version every save increments, so that saves from several nodes
-- apply one after the other (a save names the version it read).
CREATE TABLE admin_switches (
    id      smallint PRIMARY KEY CHECK (id = 1),
    state   jsonb    NOT NULL,
    version bigint   NOT NULL
);
INSERT INTO admin_switches (id, state, version) VALUES (1, '{}', 0);

-- What operators did, read newest first through admin_actions_pkey.
CREATE TABLE admin_actions (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL,
    actor   text        NOT NULL,
    kind    text        NOT NULL,
    drop_id text        NOT NULL DEFAULT '',
    detail  jsonb
);

-- +goose Down
DROP TABLE admin_actions;
DROP TABLE admin_switches;
