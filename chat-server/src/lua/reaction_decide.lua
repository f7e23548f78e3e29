-- Decides whether a reaction change changes anything, atomically with the
-- other changes of the message, and if so marks it in flight.
-- KEYS: bodies, the message's counts, its users, the chat's head, the
-- message's changes. ARGV: message id, emoji, userId, action (add/remove),
-- the most distinct emojis, now (Unix ms), the in-flight marker
-- (`p|<until Unix ms>|<nonce>`), the field separator, how long the changes
-- hash is kept (ms).
-- A changes field is `emoji<sep>userId` (a user's emoji) or `+emoji` (an
-- emoji new to the message); its value is the marker while the write is
-- in flight, then `a|<offset>|<1 or 0>` once Kafka took it, until the
-- projector applies it (and removes the field).
-- Answers `missing`, `busy` (another change of the same reaction is in
-- flight), `same` (it changes nothing), `full` (one distinct emoji too
-- many), or `write` / `write+` (marked; `+`: the emoji's field too).
local bodies, counts, users, head_key, changes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local message, emoji, user, action = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_emojis, now, marker, sep, keep = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[9]
if redis.call('HEXISTS', bodies, message) == 0 then return 'missing' end
local head = tonumber(redis.call('HGET', head_key, 'offset') or '-1')
-- What a field says: `busy`, the value of a change Kafka took that the read
-- model does not show yet, or nil (the read model knows, or a lapsed mark).
local function recorded(value)
  if not value then return nil end
  local kind, a, b = string.match(value, '^(%a)|([^|]*)|(.*)$')
  if kind == 'p' then
    if tonumber(a) > now then return 'busy' end
    return nil
  end
  if kind == 'a' and tonumber(a) > head then return b end
  return nil
end
local field = emoji .. sep .. user
local mine = recorded(redis.call('HGET', changes, field))
if mine == 'busy' then return 'busy' end
local holds
if mine then
  holds = mine == '1'
else
  holds = redis.call('HEXISTS', users, field) == 1
end
if (action == 'add') == holds then return 'same' end
local new_emoji = false
if action == 'add' and redis.call('HEXISTS', counts, emoji) == 0 then
  -- The distinct emojis: the read model's, and those that adds in flight or
  -- not applied yet bring.
  local distinct, coming = redis.call('HLEN', counts), false
  local listed = redis.call('HGETALL', changes)
  for j = 1, #listed, 2 do
    if string.sub(listed[j], 1, 1) == '+' and recorded(listed[j + 1]) then
      local other = string.sub(listed[j], 2)
      if other == emoji then
        coming = true
      elseif redis.call('HEXISTS', counts, other) == 0 then
        distinct = distinct + 1
      end
    end
  end
  if not coming then
    if distinct >= max_emojis then return 'full' end
    new_emoji = true
  end
end
redis.call('HSET', changes, field, marker)
if new_emoji then redis.call('HSET', changes, '+' .. emoji, marker) end
redis.call('PEXPIRE', changes, keep)
if new_emoji then return 'write+' end
return 'write'
