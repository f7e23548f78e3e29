if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local second, expiry, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local channel = ARGV[5]
local became, cleared = {}, {}
-- The chats at or over the threshold, read from the shards beforehand.
for i = 6, #ARGV do
  local chat = ARGV[i]
  local was = redis.call('ZSCORE', KEYS[2], chat)
  redis.call('ZADD', KEYS[2], 'GT', expiry, chat)
  if (not was) or tonumber(was) <= now then
    table.insert(became, chat)
    redis.call('PUBLISH', channel, cjson.encode({chat = chat, hot = true, ['until'] = expiry, second = second}))
  end
end
for _, chat in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  redis.call('ZREM', KEYS[2], chat)
  table.insert(cleared, chat)
  redis.call('PUBLISH', channel, cjson.encode({chat = chat, hot = false, ['until'] = now, second = second}))
end
return {became, cleared, redis.call('ZCARD', KEYS[2])}
