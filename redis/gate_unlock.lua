-- Unlock: give up a rebuild that failed, so another can start at once.
-- ARGV: lock token
if redis.call('GET', LOCK) == ARGV[1] then redis.call('DEL', LOCK) end
return 1
