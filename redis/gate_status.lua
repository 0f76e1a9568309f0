-- Status: an operator's pause, resume or close, heard by every node.
-- ARGV: status, now (unix µs), events channel
-- Reply: 1, or -1 unbuilt
local st = redis.call('HMGET', STATE, 'built', 'updated')
if not st[1] then return -1 end
redis.call('HSET', STATE, 'status', ARGV[1])
if tonumber(ARGV[2]) > tonumber(st[2]) then
  redis.call('HSET', STATE, 'updated', ARGV[2])
end
redis.call('PUBLISH', ARGV[3], 'status:' .. ARGV[1])
return 1
