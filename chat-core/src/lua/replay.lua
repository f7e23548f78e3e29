local trimmed = redis.call('HGET', KEYS[2], 'trimmed')
local frames = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local budget, bytes = tonumber(ARGV[3]), 0
for i = 1, #frames, 2 do
  bytes = bytes + #frames[i]
  if bytes > budget then
    local kept = {}
    for j = 1, i - 1 do kept[j] = frames[j] end
    return { trimmed, kept, 1 }
  end
end
return { trimmed, frames, 0 }
