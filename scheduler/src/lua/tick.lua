if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local threshold, second, expiry, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local channel = ARGV[6]
local became, cleared = {}, {}
-- Only the chats at or over the threshold: the second may hold many more.
local counts = redis.call('ZRANGEBYSCORE', KEYS[2], threshold, '+inf', 'WITHSCORES')
for i = 1, #counts, 2 do
  local chat, n = counts[i], tonumber(counts[i + 1])
  if n >= threshold then
    local was = redis.call('ZSCORE', KEYS[3], chat)
    redis.call('ZADD', KEYS[3], 'GT', expiry, chat)
    if (not was) or tonumber(was) <= now then
      table.insert(became, chat)
      redis.call('PUBLISH', channel, cjson.encode({chat = chat, hot = true, ['until'] = expiry, second = second}))
    end
  end
end
for _, chat in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('ZREM', KEYS[3], chat)
  table.insert(cleared, chat)
  redis.call('PUBLISH', channel, cjson.encode({chat = chat, hot = false, ['until'] = now, second = second}))
end
return {became, cleared, redis.call('ZCARD', KEYS[3])}
