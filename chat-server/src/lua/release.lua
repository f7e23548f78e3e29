-- Removes the caller's own pending marker (ARGV[1]), never a stored message
-- nor another request's claim.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
