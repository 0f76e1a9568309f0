-- +goose Up
-- Purchase drops carry their price (in the currency's minor unit) and
-- currency; coupon drops keep the defaults.
ALTER TABLE drops ADD COLUMN price INTEGER NOT NULL DEFAULT 0 CHECK (price >= 0);
ALTER TABLE drops ADD COLUMN currency TEXT NOT NULL DEFAULT '';

-- pay_requested_at: when the owner of a hold asked to pay; a hold whose
-- payment is under way does not expire.
--
-- outbox: the claim row is its own outbox entry. The recorder's INSERT does
-- not name the column, so every new claim is born flagged at no extra cost
-- in the group commit; PumpOutbox enqueues the claim's first job and clears
-- the flag in one transaction. The partial index holds only flagged rows,
-- so it stays as small as the backlog and the pump reads it in id (time)
-- order. Claims recorded before this migration are flagged too: their
-- first jobs are enqueued once, like a new claim's.
ALTER TABLE claims ADD COLUMN pay_requested_at INTEGER; -- unix microseconds
-- No CHECK on outbox: it would run for every row of every group commit,
-- and only the default (1) and the pump (0) ever write the column.
ALTER TABLE claims ADD COLUMN outbox INTEGER NOT NULL DEFAULT 1;
CREATE INDEX claims_outbox ON claims (id) WHERE outbox = 1;

-- +goose Down
DROP INDEX claims_outbox;
ALTER TABLE claims DROP COLUMN outbox;
ALTER TABLE claims DROP COLUMN pay_requested_at;
ALTER TABLE drops DROP COLUMN currency;
ALTER TABLE drops DROP COLUMN price;
