-- Settles a change marked by reaction_decide: where a field still holds the
-- caller's marker, sets it to what Kafka took (`a|<offset>|<1 or 0>`), or,
-- the write having failed, removes it.
-- KEYS: the message's changes. ARGV: the marker, the record (empty: the
-- write failed), how long the hash is kept (ms), then the fields.
local changes, marker, record, keep = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV do
  if redis.call('HGET', changes, ARGV[i]) == marker then
    if record == '' then
      redis.call('HDEL', changes, ARGV[i])
    else
      redis.call('HSET', changes, ARGV[i], record)
    end
  end
end
if redis.call('EXISTS', changes) == 1 then redis.call('PEXPIRE', changes, keep) end
return 1
