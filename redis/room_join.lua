-- Join a drop's waiting room: the person's ticket number, new or theirs.
-- KEYS[1] room hash, KEYS[2] the person's bucket hash
-- ARGV[1] person field (6 bytes), ARGV[2] key TTL (seconds),
-- ARGV[3] fresh epoch, ARGV[4] fresh seed
-- Returns {number, epoch, existing (0/1)}.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[3], 'seed', ARGV[4])
  epoch = ARGV[3]
end
local n = redis.call('HGET', KEYS[2], ARGV[1])
if n then
  return {tonumber(n), epoch, 1}
end
n = redis.call('HINCRBY', KEYS[1], 'issued', 1)
redis.call('HSET', KEYS[2], ARGV[1], n)
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {n, epoch, 0}
