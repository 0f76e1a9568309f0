-- Confirm: mark holds durable in the record.
-- ARGV: claim ids
-- Reply: holds newly marked, or -1 unbuilt
if not redis.call('HGET', STATE, 'built') then return -1 end
local n = 0
for _, cid in ipairs(ARGV) do
  local user = redis.call('HGET', CLAIMS, cid)
  if user then
    local holds, changed = holds_of(user), false
    for _, h in ipairs(holds) do
      if h[1] == cid and h[6] ~= 1 then
        h[6], changed = 1, true
      end
    end
    if changed then
      set_holds(user, holds)
      n = n + 1
    end
  end
end
return n
