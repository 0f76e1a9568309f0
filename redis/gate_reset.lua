-- Reset: the first step of a rebuild, by the holder of the lock: forget
-- whatever is left of the drop, unless another node has just rebuilt it on
-- this very server.
-- ARGV: lock token, host (the server's run id, '' if unknown)
-- Reply: 1 reset, 0 lock lost, 2 nothing to do
if redis.call('GET', LOCK) ~= ARGV[1] then return 0 end
local st = redis.call('HMGET', STATE, 'built', 'host')
if st[1] and st[2] == ARGV[2] then
  redis.call('DEL', LOCK)
  return 2
end
redis.call('DEL', STATE, USERS, CLAIMS, SLOTS, FREE, ROSTER, GONE, GONEQ)
return 1
