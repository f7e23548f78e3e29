-- Claims a clientMessageId (KEYS[1]) for a new write, with ARGV[1] (the
-- caller's own pending marker) for ARGV[2] ms. A held value that is not a
-- marker (pending, or unknown outcome) is the stored message: answered. For
-- a marker, the message the read model holds for the id (KEYS[2] client
-- ids, KEYS[3] bodies; ARGV[3] the field) is answered if there is one,
-- else the marker itself.
local held = redis.call('GET', KEYS[1])
local open = held and (held == 'pending'
  or string.sub(held, 1, 8) == 'pending:'
  or string.sub(held, 1, 6) == 'maybe:')
if held and not open then return held end
local id = redis.call('HGET', KEYS[2], ARGV[3])
if id then
  local body = redis.call('HGET', KEYS[3], id)
  if body then return body end
end
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
