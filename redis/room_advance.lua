-- One step of a waiting room's leader. Nothing is written unless ARGV[1]
-- holds the lease.
-- KEYS[1] room hash, KEYS[2] lease
-- ARGV[1] node, ARGV[2] now (ms), ARGV[3] open (0/1), ARGV[4] positions to
-- admit, ARGV[5] forget batches admitted before (ms), ARGV[6] batch window
-- (ms), ARGV[7] sold out (0/1), ARGV[8] measured rate, ARGV[9] remaining,
-- ARGV[10] key TTL (seconds)
-- Batches are fields 'b:<seq>' = '<at ms> <start> <end>' with their used
-- admissions in 'u:<seq>', seq from 'bfirst' to 'blast'.
-- Returns {1, HGETALL of the room}, or {0} if ARGV[1] does not lead.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return {0}
end
local room = KEYS[1]
local function num(field)
  return tonumber(redis.call('HGET', room, field) or '0')
end
local issued, serving = num('issued'), num('serving')
if ARGV[3] == '1' and redis.call('HGET', room, 'opened') ~= '1' then
  redis.call('HSET', room, 'opened', '1', 'pre', issued)
end

local first, last = num('bfirst'), num('blast')
if first == 0 then first = 1 end
local expireBefore = tonumber(ARGV[5])
while first <= last do
  local b = redis.call('HGET', room, 'b:' .. first)
  if b and tonumber(string.match(b, '^(%d+)')) >= expireBefore then
    break
  end
  redis.call('HDEL', room, 'b:' .. first, 'u:' .. first)
  first = first + 1
end

local n = math.min(tonumber(ARGV[4]), issued - math.min(serving, issued))
if n > 0 then
  local now = tonumber(ARGV[2])
  local b = first <= last and redis.call('HGET', room, 'b:' .. last)
  local at, start = nil, nil
  if b then
    at, start = string.match(b, '^(%d+) (%d+) ')
  end
  if at and now - tonumber(at) < tonumber(ARGV[6]) then
    redis.call('HSET', room, 'b:' .. last, string.format('%s %s %d', at, start, serving + n))
  else
    last = last + 1
    redis.call('HSET', room, 'b:' .. last, string.format('%s %d %d', ARGV[2], serving + 1, serving + n))
  end
  serving = serving + n
end
redis.call('HSET', room, 'serving', string.format('%d', serving), 'bfirst', string.format('%d', first),
  'blast', string.format('%d', last), 'soldout', ARGV[7], 'rate', ARGV[8], 'rem', ARGV[9], 'last', ARGV[2])
redis.call('EXPIRE', room, ARGV[10])
return {1, redis.call('HGETALL', room)}
