-- +goose Up
-- A waiting room's pace at run time. admission_pace: '' (a fixed rate an
-- operator sets) or 'auto' (the room's leader sets admission_rate itself,
-- between admission_rate_min and admission_rate_max, from downstream health).
-- Columns with constant defaults are added without rewriting the table.
ALTER TABLE drops ADD COLUMN admission_pace text NOT NULL DEFAULT '',
    ADD COLUMN admission_rate_min integer NOT NULL DEFAULT 0,
    ADD COLUMN admission_rate_max integer NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE drops DROP COLUMN admission_rate_max, DROP COLUMN admission_rate_min, DROP COLUMN admission_pace;
