-- expire_queue: delete one self-expiring queue whose deadline has passed, with every
-- message it holds in any state, its lanes (see includes/limits) and its lifetime record.
-- KEYS: the queue's group (see includes/queue_keys), then the store's index of
--       self-expiring queues (see declare_queue.lua)
-- ARGV[1] queue name
-- Returns the exchanges the queue was bound to (their bindings are the caller's to drop),
-- or false when the queue was declared again in time (then nothing changes).
--@include "queue_keys"
--@include "now_ms"
--@include "limits"
local Q = queue_keys(1)
local index = KEYS[QUEUE_KEY_COUNT + 1]
local deadline = tonumber(redis.call('HGET', Q.lifetime, 'deadline') or '')
if deadline and deadline > now_ms() then
  redis.call('ZADD', index, deadline, ARGV[1])
  return false
end
local exchanges = redis.call('SMEMBERS', Q.exchanges)
redis.call('ZREM', index, ARGV[1])
lim.forget_lanes(Q)
redis.call('DEL', unpack(KEYS, 1, QUEUE_KEY_COUNT))
return exchanges
