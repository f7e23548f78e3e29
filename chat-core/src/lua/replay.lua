local head = redis.call('HMGET', KEYS[2], 'offset', 'trimmed')
local frames = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
return { head[1], head[2], frames }
