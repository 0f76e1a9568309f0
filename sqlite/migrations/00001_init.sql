-- +goose Up
CREATE TABLE drops (
    id              TEXT PRIMARY KEY,
    title           TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('coupon', 'purchase')),
    stock           INTEGER NOT NULL CHECK (stock BETWEEN 1 AND 10000000),
    per_user_limit  INTEGER NOT NULL CHECK (per_user_limit >= 1),
    opens_at        INTEGER NOT NULL, -- unix microseconds
    closes_at       INTEGER,
    hold_ttl_ms     INTEGER NOT NULL DEFAULT 0,
    admission_mode  TEXT NOT NULL DEFAULT 'direct',
    admission_rate  INTEGER NOT NULL DEFAULT 0,
    admission_order TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'closed')),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;

-- Claims are appended once and change state a few times at most; no row is
-- a counter. The partial unique indexes are the final arbiter of exactly-N:
-- whatever the gate does, at most one active claim per slot and per user's
-- nth place can exist.
CREATE TABLE claims (
    id              TEXT PRIMARY KEY,
    drop_id         TEXT NOT NULL REFERENCES drops (id),
    user_id         TEXT NOT NULL,
    slot            INTEGER NOT NULL CHECK (slot >= 1),
    nth             INTEGER NOT NULL CHECK (nth >= 1),
    state           TEXT NOT NULL CHECK (state IN ('held', 'confirmed', 'paid', 'released', 'expired')),
    idempotency_key TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    hold_expires_at INTEGER,
    coupon_code     TEXT
) STRICT, WITHOUT ROWID; -- clustered by the time-ordered id: one B-tree fewer per claim

CREATE UNIQUE INDEX claims_active_slot ON claims (drop_id, slot)
    WHERE state IN ('held', 'confirmed', 'paid');
CREATE UNIQUE INDEX claims_active_user ON claims (drop_id, user_id, nth)
    WHERE state IN ('held', 'confirmed', 'paid');
CREATE INDEX claims_drop_state ON claims (drop_id, state);

-- A slot outside 1..stock or a place outside 1..per_user_limit is skipped,
-- like a unique violation, so that the record never holds more than the
-- drop allows and one bad row cannot fail a whole batch.
-- +goose StatementBegin
CREATE TRIGGER claims_within_drop BEFORE INSERT ON claims
WHEN NEW.slot < 1 OR NEW.nth < 1
  OR NOT EXISTS (SELECT 1 FROM drops WHERE id = NEW.drop_id AND NEW.slot <= stock AND NEW.nth <= per_user_limit)
BEGIN
    SELECT RAISE(IGNORE);
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER claims_within_drop;
DROP TABLE claims;
DROP TABLE drops;
