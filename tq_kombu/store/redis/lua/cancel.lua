-- cancel: delete a ready, delayed or waiting message so it never runs.
-- KEYS: the queue's group (see includes/queue_keys)
-- ARGV[1] id
-- Returns 1 when cancelled, 0 when the message was not queued in one of those states.
--@include "queue_keys"
--@include "meta"
--@include "ready"
--@include "forget"
local Q = queue_keys(1)
local id = ARGV[1]
local queued = ready_remove(Q, id) ~= nil
  or redis.call('ZREM', Q.delayed, id) == 1
  or redis.call('ZREM', Q.waiting, id) == 1
if not queued then return 0 end
forget(Q, id, decode_meta(redis.call('HGET', Q.meta, id)))
return 1
