-- Load: one chunk of a rebuild from the record's active claims, in slot
-- order. Slots between the claims came back earlier; they go to the pool so
-- that the lowest is handed out first.
-- ARGV: lock token, lock ttl (ms), number of gaps, gaps as (from, to)...,
--       then claims as (id, user, slot, nth, key, created)...
-- Reply: 1, or 0 lock lost
if redis.call('GET', LOCK) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', LOCK, ARGV[2])
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  local batch = {}
  for s = tonumber(ARGV[i]), tonumber(ARGV[i + 1]) do
    batch[#batch + 1] = s
    if #batch == 1000 then
      redis.call('LPUSH', FREE, unpack(batch))
      batch = {}
    end
  end
  if #batch > 0 then redis.call('LPUSH', FREE, unpack(batch)) end
  i = i + 2
end
while i <= #ARGV do
  local user = ARGV[i + 1]
  add_hold(user, holds_of(user), {ARGV[i], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5], 1})
  i = i + 6
end
return 1
