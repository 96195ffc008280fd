-- set_priority: change the priority of a queued message; a ready one keeps its place in
-- arrival order within the new level.
-- KEYS: the queue's group (see includes/queue_keys)
-- ARGV[1] id, ARGV[2] new priority
-- Returns 1 when changed, 0 when the message was not queued (or its metadata is unreadable:
-- the next fetch sets it aside as corrupt).
--@include "queue_keys"
--@include "now_ms"
--@include "meta"
--@include "ready"
local Q = queue_keys(1)
local id, priority = ARGV[1], tonumber(ARGV[2])
local score = redis.call('ZSCORE', Q.ready, id)
if not score and not redis.call('ZSCORE', Q.delayed, id) and not redis.call('ZSCORE', Q.waiting, id) then
  return 0
end
local meta = decode_meta(redis.call('HGET', Q.meta, id))
if not meta then return 0 end
meta.p = priority
save_meta(Q, id, meta)
if score then
  ready_remove(Q, id, score)
  ready_put(Q, id, priority, offset_of_score(score), tonumber(meta.c) or now_ms(), meta)
end
return 1
