-- Release: the hold's slot goes back to the pool, and every node hears of it.
-- A hold with an idempotency key is remembered in GONE, so that a retry with
-- the key gets it back instead of a new slot; GONEQ keeps the last ARGV[3]
-- of them, each as length of the claim id, ':', claim id, field.
-- ARGV: claim id, events channel, how many released keys to remember
-- Reply: 1 released, 0 no such hold, -1 unbuilt
if not redis.call('HGET', STATE, 'built') then return -1 end
local user = redis.call('HGET', CLAIMS, ARGV[1])
if not user then return 0 end
local gone = drop_hold(user, ARGV[1])
if not gone then return 0 end
if gone[4] ~= '' then
  local cid, field = ARGV[1], released_field(user, gone[4])
  redis.call('HSET', GONE, field, cid)
  if redis.call('RPUSH', GONEQ, string.len(cid) .. ':' .. cid .. field) > tonumber(ARGV[3]) then
    local e = redis.call('LPOP', GONEQ)
    local colon = string.find(e, ':', 1, true)
    local n = tonumber(string.sub(e, 1, colon - 1))
    local old, oldField = string.sub(e, colon + 1, colon + n), string.sub(e, colon + n + 1)
    if redis.call('HGET', GONE, oldField) == old then redis.call('HDEL', GONE, oldField) end
  end
end
redis.call('RPUSH', FREE, gone[2])
redis.call('HINCRBY', STATE, 'left', 1)
redis.call('HINCRBY', STATE, 'gen', 1)
redis.call('PUBLISH', ARGV[2], 'release')
return 1
