-- Count a claim won with an admission of batch ARGV[1], if the batch has
-- not expired, and remember that ticket ARGV[2] won.
-- KEYS[1] room hash, KEYS[2] the won tickets' bitmap
-- ARGV[1] batch, ARGV[2] ticket number, ARGV[3] key TTL (seconds)
redis.call('SETBIT', KEYS[2], ARGV[2], 1)
redis.call('EXPIRE', KEYS[2], ARGV[3])
if redis.call('HEXISTS', KEYS[1], 'b:' .. ARGV[1]) == 1 then
  return redis.call('HINCRBY', KEYS[1], 'u:' .. ARGV[1], 1)
end
return 0
