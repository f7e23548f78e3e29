local trimmed = redis.call('HGET', KEYS[2], 'trimmed')
local frames = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
return { trimmed, frames }
