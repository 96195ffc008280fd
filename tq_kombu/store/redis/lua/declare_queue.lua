-- declare_queue: record (or refresh) how long a queue and its messages live.
-- KEYS[1] the queue's lifetime (hash: ttl = message TTL in ms, expires = queue expiry in
--         ms, deadline = when it vanishes unless declared again, ms)
-- KEYS[2] the store's index of self-expiring queues (zset: queue name -> deadline, ms)
-- ARGV[1] queue name, ARGV[2] expiry in ms or "", ARGV[3] message TTL in ms or ""
-- With neither limit the record is forgotten. Returns the deadline in ms, or 0 for none.
--@include "now_ms"
redis.call('DEL', KEYS[1])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'ttl', ARGV[3]) end
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
local deadline = now_ms() + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'expires', ARGV[2], 'deadline', deadline)
redis.call('ZADD', KEYS[2], deadline, ARGV[1])
return deadline
