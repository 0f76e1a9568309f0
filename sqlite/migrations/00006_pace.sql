-- +goose Up
-- A waiting room's pace at run time. admission_pace: '' (a fixed rate an
-- operator sets) or 'auto' (the room's leader sets admission_rate itself,
-- between admission_rate_min and admission_rate_max, from downstream health).
ALTER TABLE drops ADD COLUMN admission_pace TEXT NOT NULL DEFAULT '';
ALTER TABLE drops ADD COLUMN admission_rate_min INTEGER NOT NULL DEFAULT 0;
ALTER TABLE drops ADD COLUMN admission_rate_max INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE drops DROP COLUMN admission_rate_max;
ALTER TABLE drops DROP COLUMN admission_rate_min;
ALTER TABLE drops DROP COLUMN admission_pace;
