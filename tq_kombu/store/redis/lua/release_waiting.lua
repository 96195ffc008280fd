-- release_waiting: a waiting message becomes delayed (ETA still ahead) or ready; one
-- waiting on parents leaves the graph (its edges go, see includes/cascade).
-- KEYS: the queue's group (see includes/queue_keys); a message with parents also writes
--       their dependency keys (built from the prefix, see includes/cascade)
-- ARGV[1] id
-- Returns 1 when released, 0 when the message was not waiting.
--@include "queue_keys"
--@include "now_ms"
--@include "meta"
--@include "ready"
--@include "marker"
--@include "cascade"
local Q = queue_keys(1)
local id = ARGV[1]
if redis.call('ZREM', Q.waiting, id) == 0 then return 0 end
local meta = decode_meta(redis.call('HGET', Q.meta, id))
-- unreadable metadata: made ready at the lowest level; the next fetch sets it aside as corrupt
if not meta or type(meta.p) ~= 'number' then
  meta = {p = 0}
elseif type(meta.dp) == 'table' then
  detach(prefix_of(Q), Q, id, meta)
  save_meta(Q, id, meta)
end
local now = now_ms()
if type(meta.e) == 'number' and meta.e > now then
  redis.call('ZADD', Q.delayed, meta.e, id)
else
  ready_add(Q, id, meta.p, tonumber(meta.c) or now, meta)
end
wake(Q)
return 1
