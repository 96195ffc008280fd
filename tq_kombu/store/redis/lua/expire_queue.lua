-- expire_queue.lua: delete one self-expiring queue whose deadline has passed, with every
-- message it holds in any state and its lifetime record.
-- KEYS[1] the store's index of self-expiring queues (see declare_queue.lua),
-- KEYS[2] the queue's lifetime, KEYS[3] the set of exchanges it is bound to,
-- KEYS[4...] every other key of the queue (see enqueue.lua and fetch.lua)
-- ARGV[1] queue name
-- Returns the exchanges the queue was bound to (their bindings are the caller's to drop),
-- or false when the queue was declared again in time (then nothing changes).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local deadline = tonumber(redis.call('HGET', KEYS[2], 'deadline') or '')
if deadline and deadline > now then
  redis.call('ZADD', KEYS[1], deadline, ARGV[1])
  return false
end
local exchanges = redis.call('SMEMBERS', KEYS[3])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', unpack(KEYS, 2))
return exchanges
