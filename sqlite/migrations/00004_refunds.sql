-- +goose Up
-- Money that arrives late goes back. late_paid_at: when the payment gateway
-- turned out to hold a paid charge for a claim that had ended (released or
-- expired); refund_payment is enqueued in the same transaction. refunded_at:
-- when that refund went through; payment_refunded is enqueued with it. Both
-- are set once, by updates conditional on the claim having ended, so a live
-- claim's charge is never refunded. Claims are read through claims_pkey
-- only, so neither column is indexed.
ALTER TABLE claims ADD COLUMN late_paid_at INTEGER; -- unix microseconds
ALTER TABLE claims ADD COLUMN refunded_at INTEGER;  -- unix microseconds

-- +goose Down
ALTER TABLE claims DROP COLUMN refunded_at;
ALTER TABLE claims DROP COLUMN late_paid_at;
