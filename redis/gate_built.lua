-- Built: the last step of a rebuild. The drop takes claims from here on.
-- ARGV: lock token, next slot, stock, limit, opens, closes, status, updated,
--       host, build stamp, events channel
-- Reply: 1, or 0 lock lost
if redis.call('GET', LOCK) ~= ARGV[1] then return 0 end
local left = tonumber(ARGV[3]) - redis.call('HLEN', CLAIMS)
if left < 0 then left = 0 end
redis.call('HSET', STATE, 'next', ARGV[2], 'left', left, 'stock', ARGV[3], 'limit', ARGV[4],
  'opens', ARGV[5], 'closes', ARGV[6], 'status', ARGV[7], 'updated', ARGV[8], 'host', ARGV[9],
  'gen', ARGV[10], 'build', ARGV[10], 'built', 1)
redis.call('DEL', LOCK)
redis.call('PUBLISH', ARGV[11], 'built')
return 1
