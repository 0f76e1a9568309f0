-- +goose Up
-- Purchase drops carry their price (in the currency's minor unit) and
-- currency; coupon drops keep the defaults.
ALTER TABLE drops
    ADD COLUMN price bigint NOT NULL DEFAULT 0 CHECK (price >= 0),
    ADD COLUMN currency text NOT NULL DEFAULT '';

-- pay_requested_at: when the owner of a hold asked to pay; a hold whose
-- payment is under way does not expire.
--
-- outbox: the claim row is its own outbox entry. The recorder's INSERT does
-- not name the column, so every new claim is born flagged at no extra cost
-- in the group commit; PumpOutbox enqueues the claim's first job and clears
-- the flag in one transaction. The partial index holds only flagged rows,
-- so it stays as small as the backlog, and pumps on several nodes read it
-- in id (time) order, skipping each other's locked rows. Claims recorded
-- before this migration are flagged too: their first jobs are enqueued
-- once, like a new claim's. Both columns have constant defaults, so adding
-- them rewrites no row.
ALTER TABLE claims
    ADD COLUMN pay_requested_at timestamptz,
    ADD COLUMN outbox boolean NOT NULL DEFAULT true;
CREATE INDEX claims_outbox ON claims (id) WHERE outbox;

-- +goose Down
DROP INDEX claims_outbox;
ALTER TABLE claims DROP COLUMN outbox, DROP COLUMN pay_requested_at;
ALTER TABLE drops DROP COLUMN currency, DROP COLUMN price;
