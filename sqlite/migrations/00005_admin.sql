-- +goose Up
-- The kill switches: one row, whose state is the JSON of dibs.Switches and
-- whose version every save increments, so that saves from several callers
-- apply one after the other (a save names the version it read).
CREATE TABLE admin_switches (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    state   TEXT    NOT NULL,
    version INTEGER NOT NULL
);
INSERT INTO admin_switches (id, state, version) VALUES (1, '{}', 0);

-- What operators did, read newest first through the primary key.
CREATE TABLE admin_actions (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL, -- unix microseconds
    actor   TEXT    NOT NULL,
    kind    TEXT    NOT NULL,
    drop_id TEXT    NOT NULL DEFAULT '',
    detail  TEXT              -- JSON object, or NULL
);

-- +goose Down
DROP TABLE admin_actions;
DROP TABLE admin_switches;
