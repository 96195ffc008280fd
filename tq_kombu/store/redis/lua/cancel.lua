-- cancel: delete a ready, delayed or waiting message so it never runs. A cancelled task
-- counts as failed: what waits on it fails with it (see includes/cascade).
-- KEYS: the queue's group (see includes/queue_keys); a cascade reaches other queues and
--       the dependency keys through names built from the prefix (see includes/cascade)
-- ARGV[1] id, ARGV[2] completion record TTL in ms
-- Returns 1 when cancelled, 0 when the message was not queued in one of those states.
--@include "queue_keys"
--@include "now_ms"
--@include "meta"
--@include "ready"
--@include "forget"
--@include "cascade"
local Q = queue_keys(1)
local id = ARGV[1]
deps.ttl_ms = tonumber(ARGV[2]) or deps.ttl_ms
local queued = ready_remove(Q, id) ~= nil
  or redis.call('ZREM', Q.delayed, id) == 1
  or redis.call('ZREM', Q.waiting, id) == 1
if not queued then return 0 end
local meta = decode_meta(redis.call('HGET', Q.meta, id))
if meta then
  detach(prefix_of(Q), Q, id, meta)
  local now = now_ms()
  gone(Q, id, meta, now)
  settle_deaths(now)
end
forget(Q, id, meta)
return 1
