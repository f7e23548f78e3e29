local messages, bodies, head_key, reactions = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local mode, offset, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ids
if mode == 'after' then
  ids = redis.call('ZRANGEBYSCORE', messages, '(' .. offset, '+inf', 'LIMIT', 0, limit)
else
  if mode == 'before' then
    ids = redis.call('ZREVRANGEBYSCORE', messages, '(' .. offset, '-inf', 'LIMIT', 0, limit)
  else
    ids = redis.call('ZREVRANGE', messages, 0, limit - 1)
  end
  local n = #ids
  for i = 1, math.floor(n / 2) do ids[i], ids[n - i + 1] = ids[n - i + 1], ids[i] end
end
local newer, older = 0, 0
if #ids > 0 then
  local first = redis.call('ZSCORE', messages, ids[1])
  local last = redis.call('ZSCORE', messages, ids[#ids])
  if #redis.call('ZRANGEBYSCORE', messages, '(' .. last, '+inf', 'LIMIT', 0, 1) > 0 then newer = 1 end
  if #redis.call('ZREVRANGEBYSCORE', messages, '(' .. first, '-inf', 'LIMIT', 0, 1) > 0 then older = 1 end
elseif mode == 'after' then
  if #redis.call('ZREVRANGEBYSCORE', messages, offset, '-inf', 'LIMIT', 0, 1) > 0 then older = 1 end
elseif mode == 'before' then
  if #redis.call('ZRANGEBYSCORE', messages, offset, '+inf', 'LIMIT', 0, 1) > 0 then newer = 1 end
end
local page_bodies, page_counts, page_mine = {}, {}, {}
if #ids > 0 then
  page_bodies = redis.call('HMGET', bodies, unpack(ids))
  page_counts = redis.call('HMGET', reactions, unpack(ids))
end
local user, users_prefix, sep = ARGV[4], ARGV[5], ARGV[6]
if user then
  for i, id in ipairs(ids) do
    local held = {}
    if page_counts[i] then
      for emoji, _ in pairs(cjson.decode(page_counts[i])) do
        if redis.call('HEXISTS', users_prefix .. id, emoji .. sep .. user) == 1 then
          table.insert(held, emoji)
        end
      end
    end
    page_mine[i] = held
  end
end
return { redis.call('HGET', head_key, 'id'), newer, older, page_bodies, page_counts, page_mine }
