local head = redis.call('HMGET', KEYS[1], 'offset', 'id')
-- In slices: unpack() of more than about 8,000 values fails.
local counts = {}
for first = 1, #ARGV, 1000 do
  local slice = redis.call('HMGET', KEYS[2], unpack(ARGV, first, math.min(first + 999, #ARGV)))
  for i = 1, #slice do counts[#counts + 1] = slice[i] end
end
return { head[1], head[2], counts }
