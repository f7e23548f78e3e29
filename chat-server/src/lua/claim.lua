local held = redis.call('GET', KEYS[1])
local open = held == ARGV[1] or (held and string.sub(held, 1, 6) == 'maybe:')
if held and not open then return held end
local id = redis.call('HGET', KEYS[2], ARGV[3])
if id then
  local body = redis.call('HGET', KEYS[3], id)
  if body then return body end
end
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
