-- Settings: take the record's settings of a built drop if they are newer
-- than the gate's (a node may read the record just before an operator's
-- change and write just after it).
-- ARGV: updated (unix µs), limit, opens, closes ('' for never), status, events channel
-- Reply: {1, host, status} | {0} unbuilt
local st = redis.call('HMGET', STATE, 'built', 'updated', 'host', 'status')
if not st[1] then return {0} end
local status = st[4]
if tonumber(ARGV[1]) > tonumber(st[2]) then
  redis.call('HSET', STATE, 'updated', ARGV[1], 'limit', ARGV[2], 'opens', ARGV[3], 'closes', ARGV[4], 'status', ARGV[5])
  if status ~= ARGV[5] then
    status = ARGV[5]
    redis.call('PUBLISH', ARGV[6], 'status:' .. status)
  end
end
return {1, st[3], status}
