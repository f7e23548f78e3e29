local messages, bodies, client_ids, head_key, reactions, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local counts_prefix, users_prefix, retention, log_length, sep = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local max_emojis, changes_prefix = tonumber(ARGV[6]), ARGV[7]
local function publish_counts(message)
  local flat = redis.call('HGETALL', counts_prefix .. message)
  if #flat == 0 then
    redis.call('HDEL', reactions, message)
  else
    local counts = {}
    for j = 1, #flat, 2 do counts[flat[j]] = tonumber(flat[j + 1]) end
    redis.call('HSET', reactions, message, cjson.encode(counts))
  end
end
-- Forgets what chat-server noted of a change it wrote (reaction_decide),
-- now that the read model shows it.
local function forget(changes, name, offset)
  local noted = redis.call('HGET', changes, name)
  local at = noted and tonumber(string.match(noted, '^a|([^|]*)|'))
  if at and at <= offset then redis.call('HDEL', changes, name) end
end
local head = tonumber(redis.call('HGET', head_key, 'offset') or '-1')
local refused = 0
for i = 8, #ARGV, 8 do
  local kind, id, offset = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if offset > head then
    -- Only an event that changed the read model goes into the replay log:
    -- a copy of a message, an add the emoji cap dropped, or a reaction
    -- change that changed nothing is never replayed.
    local changed = false
    if kind == 'm' then
      local user, client_id, body = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
      local fresh = true
      if client_id ~= '' then
        local field = user .. sep .. client_id
        local first = redis.call('HGET', client_ids, field)
        if first and first ~= id then fresh = false else redis.call('HSET', client_ids, field, id) end
      end
      if fresh then
        changed = true
        redis.call('ZADD', messages, offset, id)
        redis.call('HSET', bodies, id, body)
        local excess = redis.call('ZCARD', messages) - retention
        if excess > 0 then
          for _, old in ipairs(redis.call('ZRANGE', messages, 0, excess - 1)) do
            local stored = cjson.decode(redis.call('HGET', bodies, old) or '{}')
            if stored.clientMessageId then
              local field = stored.userId .. sep .. stored.clientMessageId
              if redis.call('HGET', client_ids, field) == old then redis.call('HDEL', client_ids, field) end
            end
            redis.call('HDEL', bodies, old)
            redis.call('HDEL', reactions, old)
            redis.call('DEL', counts_prefix .. old, users_prefix .. old, changes_prefix .. old)
          end
          redis.call('ZREMRANGEBYRANK', messages, 0, excess - 1)
        end
      end
    else
      local message, user, emoji, action = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
      if redis.call('HEXISTS', bodies, message) == 1 then
        local users, counts = users_prefix .. message, counts_prefix .. message
        local field = emoji .. sep .. user
        local changes = changes_prefix .. message
        forget(changes, field, offset)
        if action == 'add' then
          forget(changes, '+' .. emoji, offset)
        end
        if action == 'add' then
          if redis.call('HEXISTS', counts, emoji) == 0 and redis.call('HLEN', counts) >= max_emojis then
            -- One emoji more than a message may hold: the add is dropped.
            refused = refused + 1
          elseif redis.call('HSETNX', users, field, '1') == 1 then
            changed = true
            redis.call('HINCRBY', counts, emoji, 1)
            publish_counts(message)
          end
        elseif redis.call('HDEL', users, field) == 1 then
          changed = true
          if redis.call('HINCRBY', counts, emoji, -1) <= 0 then redis.call('HDEL', counts, emoji) end
          publish_counts(message)
        end
      end
    end
    if changed then redis.call('ZADD', events, offset, ARGV[i + 7]) end
    head = offset
    redis.call('HSET', head_key, 'offset', ARGV[i + 2], 'id', id)
  end
end
local extra = redis.call('ZCARD', events) - log_length
if extra > 0 then
  local cut = redis.call('ZRANGE', events, extra - 1, extra - 1, 'WITHSCORES')
  redis.call('ZREMRANGEBYRANK', events, 0, extra - 1)
  redis.call('HSET', head_key, 'trimmed', cut[2])
end
return refused
