-- replay: move a dead message back to ready, atomically, its delivery count reset and its
-- dead-letter record (reason, failure, hostname, attempts, dead-at) dropped. Its task's
-- failed record is forgotten, and what that failure set aside waits again (see
-- includes/revive; those messages and dependency keys are reached through names built
-- from the prefix, see includes/cascade).
-- KEYS: the source queue's group, then the target queue's group (the same queue's again
--       unless replayed to another queue; see includes/queue_keys)
-- ARGV[1] id, ARGV[2] new priority or ""
-- Returns 1 when replayed, 0 (nothing changed) when the message was not dead or another
-- target queue already holds a message with its id.
--@include "queue_keys"
--@include "now_ms"
--@include "meta"
--@include "ready"
--@include "marker"
--@include "forget"
--@include "layout"
--@include "revive"
local S, T = queue_keys(1), queue_keys(QUEUE_KEY_COUNT + 1)
local id = ARGV[1]
if not redis.call('ZSCORE', S.dead, id) then return 0 end
if T.meta ~= S.meta and redis.call('HEXISTS', T.meta, id) == 1 then return 0 end
redis.call('ZREM', S.dead, id)
mark_layout(T)
local meta = decode_meta(redis.call('HGET', S.meta, id))
local body = redis.call('HGET', S.bodies, id)
forget(S, id, meta)
if not meta or type(meta.p) ~= 'number' then meta = {p = 5, t = '', i = ''} end
if ARGV[2] ~= '' then meta.p = tonumber(ARGV[2]) end
meta.n, meta.l, meta.r, meta.x, meta.f, meta.h, meta.d, meta.a = 0, nil, nil, nil, nil, nil, nil, nil
if type(meta.dp) == 'table' then detach(prefix_of(S), S, id, meta) end -- runs as it is
meta.fp = nil
ready_add(T, id, meta.p, tonumber(meta.c) or now_ms(), meta)
save_meta(T, id, meta)
redis.call('HSET', T.bodies, id, body or '')
index_task(T, meta.i, id)
wake(T)
if type(meta.i) == 'string' and meta.i ~= '' then revive(prefix_of(T), meta.i) end
return 1
