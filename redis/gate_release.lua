-- Release: the hold's slot goes back to the pool, and every node hears of it.
-- ARGV: claim id, events channel
-- Reply: 1 released, 0 no such hold, -1 unbuilt
if not redis.call('HGET', STATE, 'built') then return -1 end
local user = redis.call('HGET', CLAIMS, ARGV[1])
if not user then return 0 end
local gone = drop_hold(user, ARGV[1])
if not gone then return 0 end
redis.call('RPUSH', FREE, gone[2])
redis.call('HINCRBY', STATE, 'left', 1)
redis.call('HINCRBY', STATE, 'gen', 1)
redis.call('PUBLISH', ARGV[2], 'release')
return 1
