--@include "tasks"
-- forget(Q, id, meta): delete what the queue keeps of a message outside the state sets:
-- metadata, payload, time to live and (meta: its decoded record, if readable) task index.
local function forget(Q, id, meta)
  if meta then unindex_task(Q, meta.i, id) end
  redis.call('HDEL', Q.meta, id)
  redis.call('HDEL', Q.bodies, id)
  redis.call('ZREM', Q.expiring, id)
end
