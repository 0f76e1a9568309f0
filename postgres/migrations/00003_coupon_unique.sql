-- +goose Up
-- A coupon code names one claim: a collision of two random codes is refused
-- by the record (the job then draws another) instead of handing one code
-- to two winners.
CREATE UNIQUE INDEX claims_coupon_code ON claims (coupon_code) WHERE coupon_code IS NOT NULL;

-- +goose Down
DROP INDEX claims_coupon_code;
