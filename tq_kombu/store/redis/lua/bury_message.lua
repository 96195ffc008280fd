-- bury_message: set one message of a queue aside as dead by id, without a lease, then
-- apply the retention policy, atomically. A message the queue holds (ready, delayed,
-- waiting or in flight) moves to dead in place, keeping its payload, first-seen time and
-- delivery count; one already dead stays as it is; one not held is stored as dead from ARGV.
-- KEYS: the queue's group (see includes/queue_keys)
-- ARGV[1] id, ARGV[2] payload, ARGV[3] priority, ARGV[4] eta in ms or "",
-- ARGV[5] task name, ARGV[6] task id, ARGV[7] dead reason, ARGV[8] dead detail,
-- ARGV[9] sealed failure record (base64, may be empty), ARGV[10] worker hostname,
-- ARGV[11] attempts or "", ARGV[12] delivery count or "", ARGV[13] first seen in ms or "",
-- ARGV[14] dead letters kept for (ms), ARGV[15] most dead letters kept,
-- ARGV[16] completion record TTL in ms (what waits on the task fails with it, in whatever
-- queue, keys built from the prefix: see includes/cascade)
-- Returns the state the message was in before ("ready", "delayed", "waiting", "inflight",
-- "dead") or "stored" when the queue did not hold it.
--@include "queue_keys"
--@include "now_ms"
--@include "meta"
--@include "ready"
--@include "dead"
--@include "tasks"
--@include "retention"
--@include "layout"
--@include "cascade_retention"
--@include "limits"
local Q = queue_keys(1)
local now = now_ms()
local id = ARGV[1]
deps.ttl_ms = tonumber(ARGV[16]) or deps.ttl_ms
local function number_or_nil(value) if value == '' then return nil end return tonumber(value) end

mark_layout(Q)
local before = 'stored'
local meta
local raw = redis.call('HGET', Q.meta, id)
if raw then
  if redis.call('ZSCORE', Q.dead, id) then return 'dead' end
  if ready_remove(Q, id) then before = 'ready' end
  for state, set in pairs({delayed = Q.delayed, waiting = Q.waiting, inflight = Q.inflight}) do
    if redis.call('ZREM', set, id) == 1 then before = state end
  end
  meta = decode_meta(raw)
  if meta and before == 'inflight' then lim.release(Q, id, meta, meta.l) end
end
if not meta and raw then
  -- held, but its metadata is unreadable: rebuilt from the arguments, payload kept
  meta = {p = tonumber(ARGV[3]), n = number_or_nil(ARGV[12]) or 0, t = ARGV[5], i = ARGV[6], c = now}
  index_task(Q, meta.i, id)
elseif not meta then
  meta = {
    p = tonumber(ARGV[3]),
    n = number_or_nil(ARGV[12]) or 0,
    t = ARGV[5],
    i = ARGV[6],
    c = number_or_nil(ARGV[13]) or now,
    e = number_or_nil(ARGV[4]),
  }
  redis.call('HSET', Q.bodies, id, ARGV[2])
  index_task(Q, meta.i, id)
end
meta.f, meta.h, meta.a = ARGV[9], ARGV[10], number_or_nil(ARGV[11])
set_dead(Q, id, meta, now, ARGV[7], ARGV[8])
settle_deaths(now)
trim_dead(Q, now, tonumber(ARGV[14]), tonumber(ARGV[15]))
trim_cascaded(now, tonumber(ARGV[14]), tonumber(ARGV[15]))
return before
