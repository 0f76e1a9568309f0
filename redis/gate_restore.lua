-- Restore: put an active claim of the record back, as a durable hold of its
-- slot. Holds in its way (on its slot, or on its user's nth place) can never
-- be recorded while it is active, so they go.
-- ARGV: claim id, user, slot, nth, key, created (unix µs), events channel
-- Reply: 1 restored, 0 already held, -1 unbuilt, -2 slot or nth outside the drop
local cid, user, slot, nth = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local st = redis.call('HMGET', STATE, 'built', 'stock', 'next')
if not st[1] then return -1 end
if redis.call('HEXISTS', CLAIMS, cid) == 1 then return 0 end
local stock, nxt = tonumber(st[2]), tonumber(st[3])
if slot < 1 or slot > stock or nth < 1 then return -2 end

local on_slot = redis.call('HGET', SLOTS, slot)
local on_nth = nil
for _, h in ipairs(holds_of(user)) do
  if h[3] == nth and h[1] ~= on_slot then on_nth = h[1] end
end

local function evict(victim)
  local owner = redis.call('HGET', CLAIMS, victim)
  if not owner then
    redis.call('HDEL', SLOTS, slot)
    return
  end
  local gone = drop_hold(owner, victim)
  if gone and gone[2] ~= slot then redis.call('RPUSH', FREE, gone[2]) end
end
if on_slot then evict(on_slot) end
if on_nth then evict(on_nth) end

if not on_slot then
  if slot >= nxt then
    local batch = {}
    for s = nxt, slot - 1 do
      batch[#batch + 1] = s
      if #batch == 1000 then
        redis.call('RPUSH', FREE, unpack(batch))
        batch = {}
      end
    end
    if #batch > 0 then redis.call('RPUSH', FREE, unpack(batch)) end
    redis.call('HSET', STATE, 'next', slot + 1)
  else
    redis.call('LREM', FREE, 1, slot)
  end
end
add_hold(user, holds_of(user), {cid, slot, nth, ARGV[5], ARGV[6], 1})
local left = stock - redis.call('HLEN', CLAIMS)
if left < 0 then left = 0 end
redis.call('HSET', STATE, 'left', left)
redis.call('HINCRBY', STATE, 'gen', 1)
redis.call('PUBLISH', ARGV[7], 'restore')
return 1
