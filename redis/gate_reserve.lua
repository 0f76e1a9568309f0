-- Reserve: a free slot for the user, or the hold a retry is owed.
-- ARGV: user, idempotency key ('' for none), id of a new claim ('' to take
--       no slot: the reply is then {'need_id'} where a hold would be made),
--       now (unix µs),
--       unrecorded (a released claim of the key the record never got, or '')
-- Reply: {'hold', claim id, slot, nth, key, created, durable, existing}
--      | {'released', claim id} | {'unbuilt'} | {'closed'} | {'paused'}
--      | {'not_open'} | {'limit', n} | {'sold_out', gen, build, roster length}
--      | {'need_id'}
local user, key, cid, now, unrecorded = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local st = redis.call('HMGET', STATE, 'built', 'left', 'limit', 'status', 'opens', 'closes', 'gen', 'build')
if not st[1] then return {'unbuilt'} end

local holds = holds_of(user)
local function give(h, existing)
  return {'hold', h[1], h[2], h[3], h[4], h[5], h[6], existing}
end
-- A key names its first claim for good, released or not.
local reused = nil
if key ~= '' then
  for _, h in ipairs(holds) do
    if h[4] == key then return give(h, 1) end
  end
  local field = released_field(user, key)
  local gone = redis.call('HGET', GONE, field)
  if gone then
    if gone ~= unrecorded then return {'released', gone} end
    reused = field
  end
end
local limit = tonumber(st[3])
if limit == 1 and #holds == 1 then return give(holds[1], 1) end

-- Status and clock, judged in the order dibs.Drop.Admits uses.
local t = tonumber(now)
if st[4] == 'closed' or (st[6] ~= '' and t >= tonumber(st[6])) then return {'closed'} end
if st[4] == 'paused' then return {'paused'} end
if t < tonumber(st[5]) then return {'not_open'} end
if #holds >= limit then return {'limit', #holds} end
if tonumber(st[2]) <= 0 then
  return {'sold_out', st[7], st[8], redis.call('STRLEN', ROSTER)}
end
if cid == '' then return {'need_id'} end

local slot = redis.call('RPOP', FREE)
if slot then
  slot = tonumber(slot)
else
  slot = redis.call('HINCRBY', STATE, 'next', 1) - 1
end
local taken, nth = {}, 1
for _, h in ipairs(holds) do taken[h[3]] = true end
while taken[nth] do nth = nth + 1 end
local h = {cid, slot, nth, key, now, 0}
if reused then redis.call('HDEL', GONE, reused) end
add_hold(user, holds, h)
redis.call('HINCRBY', STATE, 'left', -1)
return give(h, 0)
