-- Read a drop's waiting room, creating it if it does not exist, and take
-- or renew its leader lease.
-- KEYS[1] room hash, KEYS[2] lease
-- ARGV[1] node ('' to read only), ARGV[2] lease (ms), ARGV[3] fresh epoch,
-- ARGV[4] fresh seed, ARGV[5] key TTL (seconds)
-- Returns {leader (0/1), HGETALL of the room}.
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[3]) == 1 then
  redis.call('HSET', KEYS[1], 'seed', ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
local leader = 0
if ARGV[1] ~= '' then
  if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
    leader = 1
  elseif redis.call('GET', KEYS[2]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
    leader = 1
  end
end
return {leader, redis.call('HGETALL', KEYS[1])}
