local head = redis.call('HMGET', KEYS[1], 'offset', 'id')
return { head[1], head[2], redis.call('HMGET', KEYS[2], unpack(ARGV)) }
