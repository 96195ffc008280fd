-- purge: delete every message of one state of a queue (a purged message waiting on
-- parents leaves their children sets; nothing fails for a purge).
-- KEYS: the queue's group (see includes/queue_keys); purging waiting messages with
--       parents also writes those parents' dependency keys (see includes/cascade)
-- ARGV[1] the state's part of the group: "ready", "delayed", "inflight", "dead" or "waiting"
-- Returns how many messages were deleted.
--@include "queue_keys"
--@include "batches"
--@include "meta"
--@include "forget"
--@include "cascade"
--@include "limits"
local Q = queue_keys(1)
local set = Q[ARGV[1]]
local ids = redis.call('ZRANGE', set, 0, -1)
each_batch(ids, function(batch)
  local raws = redis.call('HMGET', Q.meta, unpack(batch))
  for j, id in ipairs(batch) do
    local meta = decode_meta(raws[j])
    if meta and type(meta.dp) == 'table' then detach(prefix_of(Q), Q, id, meta) end
    if meta and ARGV[1] == 'inflight' then lim.release(Q, id, meta, meta.l) end
    forget(Q, id, meta)
  end
end)
redis.call('DEL', set)
if ARGV[1] == 'ready' then
  -- nothing is ready any more: the kept counts are empty (their layout mark stays)
  local version = redis.call('HGET', Q.counts, 'v')
  redis.call('DEL', Q.counts, Q.ages)
  if version then redis.call('HSET', Q.counts, 'v', version) end
  lim.forget_lanes(Q)
end
return #ids
