-- Shared by every gate script: each one runs as this file followed by its
-- own. A Lua error halfway through a script does not undo the writes before
-- it, so every script checks all it needs before its first write.
--
-- KEYS are always the drop's keys, in this order, all under one hash tag:
local STATE  = KEYS[1] -- hash: built, build, gen, next, left, stock, limit, opens, closes, status, updated, host
local USERS  = KEYS[2] -- hash: user -> JSON array of the user's holds
local CLAIMS = KEYS[3] -- hash: claim id -> user
local SLOTS  = KEYS[4] -- hash: slot -> claim id
local FREE   = KEYS[5] -- list: slots that came back; RPOP takes the next one
local ROSTER = KEYS[6] -- string: 16 hex digits of sha1(user) per user who became a holder
local LOCK   = KEYS[7] -- string: token of the node rebuilding the drop
local GONE   = KEYS[8] -- hash: released field (see released_field) -> claim id
local GONEQ  = KEYS[9] -- list: entries of GONE, oldest first (see release)

-- A hold is {claim id, slot, nth, idempotency key, created (unix µs as a
-- string: cjson keeps only 14 digits of a number), durable 0|1}.
local function holds_of(user)
  local raw = redis.call('HGET', USERS, user)
  if not raw then return {} end
  return cjson.decode(raw)
end

local function set_holds(user, holds)
  if #holds == 0 then
    redis.call('HDEL', USERS, user)
  else
    redis.call('HSET', USERS, user, cjson.encode(holds))
  end
end

-- add_hold stores hold h of user, whose holds so far are holds. A user's
-- first hold enters the roster, which nodes load to tell who cannot be a
-- holder when they answer "sold out" without asking Redis.
local function add_hold(user, holds, h)
  if #holds == 0 then
    redis.call('APPEND', ROSTER, string.sub(redis.sha1hex(user), 1, 16))
  end
  holds[#holds + 1] = h
  set_holds(user, holds)
  redis.call('HSET', CLAIMS, h[1], user)
  redis.call('HSET', SLOTS, h[2], h[1])
end

-- released_field names a user's idempotency key in GONE: the length of
-- the user id first, so that no two (user, key) pairs share a name.
local function released_field(user, key)
  return string.len(user) .. ':' .. user .. key
end

-- drop_hold forgets hold cid of user and returns it; the caller sees to its
-- slot.
local function drop_hold(user, cid)
  local kept, gone = {}, nil
  for _, h in ipairs(holds_of(user)) do
    if h[1] == cid then gone = h else kept[#kept + 1] = h end
  end
  set_holds(user, kept)
  redis.call('HDEL', CLAIMS, cid)
  if gone then redis.call('HDEL', SLOTS, gone[2]) end
  return gone
end

