-- Claims an id whose first write nobody can finish any more (KEYS[1] holds
-- ARGV[1], the marker the caller saw: unknown outcome, or a pending claim
-- whose server is gone), once the caller has found that the projector has
-- applied the chat's partition to the end of the log: unless the read model
-- knows the id after all (KEYS[2] client ids, ARGV[3] the field), the
-- marker becomes the caller's pending marker ARGV[4], for ARGV[2] ms.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[2])
return 1
