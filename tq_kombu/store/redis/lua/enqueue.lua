-- enqueue: store one message as ready, delayed or waiting.
-- KEYS: the queue's group (see includes/queue_keys)
-- ARGV[1] id, ARGV[2] payload, ARGV[3] priority, ARGV[4] eta in ms or "",
-- ARGV[5] target: "auto" (ready or delayed by eta) or "waiting",
-- ARGV[6] task name, ARGV[7] task id, ARGV[8] the message's own time to live in ms or ""
-- Returns the state the message was stored in, or "exists" when the queue already
-- holds a message with that id (the first copy is kept).
--@include "queue_keys"
--@include "now_ms"
--@include "meta"
--@include "ready"
--@include "marker"
--@include "tasks"
--@include "layout"
local Q = queue_keys(1)
local now = now_ms()
local id = ARGV[1]
if redis.call('HEXISTS', Q.meta, id) == 1 then return 'exists' end
mark_layout(Q)
local meta = {p = tonumber(ARGV[3]), n = 0, t = ARGV[6], i = ARGV[7], c = now}
if ARGV[4] ~= '' then meta.e = tonumber(ARGV[4]) end

local state
if ARGV[5] == 'waiting' then
  redis.call('ZADD', Q.waiting, redis.call('INCR', Q.seq), id)
  state = 'waiting'
elseif meta.e and meta.e > now then
  redis.call('ZADD', Q.delayed, meta.e, id)
  wake(Q)
  state = 'delayed'
else
  ready_add(Q, id, meta.p, now)
  wake(Q)
  state = 'ready'
end
save_meta(Q, id, meta)
redis.call('HSET', Q.bodies, id, ARGV[2])
index_task(Q, meta.i, id)

-- time to live: the sooner of the message's own and the queue's
local ttl = tonumber(redis.call('HGET', Q.lifetime, 'ttl') or '')
if ARGV[8] ~= '' and (ttl == nil or tonumber(ARGV[8]) < ttl) then ttl = tonumber(ARGV[8]) end
if ttl then redis.call('ZADD', Q.expiring, now + ttl, id) end
return state
