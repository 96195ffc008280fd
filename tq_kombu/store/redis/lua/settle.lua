-- settle: finish one delivery other than by ack (ack.lua): release, requeue, give back or bury.
-- Acts only while the caller's lease token is still the message's current lease.
-- KEYS: the queue's group (see includes/queue_keys)
-- ARGV[1] action: "release" or "requeue" (ready; the delivery stays counted either way),
--         "give_back" (ready; never started: the count goes back to before this fetch)
--         or "bury" (dead, then the retention policy applies)
-- ARGV[2] id, ARGV[3] lease token; for "bury" only: ARGV[4] dead reason, ARGV[5] dead
-- detail, ARGV[6] sealed failure record (base64, may be empty), ARGV[7] worker hostname,
-- ARGV[8] attempts or "", ARGV[9] dead letters kept for (ms), ARGV[10] most kept,
-- ARGV[11] completion record TTL in ms (what waits on the task fails with it, in
-- whatever queue, keys built from the prefix: see includes/cascade)
-- Returns 1 when settled, 0 when the lease was no longer held.
--@include "queue_keys"
--@include "now_ms"
--@include "meta"
--@include "ready"
--@include "marker"
--@include "dead"
--@include "retention"
--@include "cascade_retention"
local Q = queue_keys(1)
local action, id, token = ARGV[1], ARGV[2], ARGV[3]
-- unreadable metadata: left to expire; the next fetch sets it aside as corrupt
local meta = decode_meta(redis.call('HGET', Q.meta, id))
if not meta or meta.l ~= token or not redis.call('ZSCORE', Q.inflight, id) then return 0 end
redis.call('ZREM', Q.inflight, id)
lim.release(Q, id, meta, token)

local now = now_ms()
if action == 'bury' then
  deps.ttl_ms = tonumber(ARGV[11]) or deps.ttl_ms
  meta.f, meta.h, meta.a = ARGV[6], ARGV[7], tonumber(ARGV[8])
  set_dead(Q, id, meta, now, ARGV[4], ARGV[5])
  settle_deaths(now)
  trim_dead(Q, now, tonumber(ARGV[9]), tonumber(ARGV[10]))
  trim_cascaded(now, tonumber(ARGV[9]), tonumber(ARGV[10]))
else
  if action == 'give_back' then meta.n = math.max((tonumber(meta.n) or 1) - 1, 0) end
  meta.l = nil
  save_meta(Q, id, meta)
  ready_add(Q, id, tonumber(meta.p) or 0, tonumber(meta.c) or now, meta)
  wake(Q)
end
return 1
