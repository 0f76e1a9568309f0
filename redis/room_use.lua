-- Count a claim won with an admission of batch ARGV[1], if the batch has
-- not expired.
-- KEYS[1] room hash
if redis.call('HEXISTS', KEYS[1], 'b:' .. ARGV[1]) == 1 then
  return redis.call('HINCRBY', KEYS[1], 'u:' .. ARGV[1], 1)
end
return 0
