-- ack: delete one delivered message, only while the caller's lease token is still its
-- lease (the hot settle: it touches only the keys it needs, see keys.KEY_SUBSETS).
-- KEYS: the queue's meta, inflight, bodies, expiring and tasks keys (includes/ack_keys)
-- ARGV[1] id, ARGV[2] lease token
-- Returns 1 when acknowledged, 0 when the lease was no longer held.
--@include "ack_keys"
--@include "meta"
--@include "forget"
--@include "limits"
local Q = ack_keys()
local id, token = ARGV[1], ARGV[2]
-- unreadable metadata: left to expire; the next fetch sets it aside as corrupt
local meta = decode_meta(redis.call('HGET', Q.meta, id))
if not meta or meta.l ~= token or redis.call('ZREM', Q.inflight, id) == 0 then return 0 end
lim.release(Q, id, meta, token) -- a limited message frees its slots
forget(Q, id, meta)
return 1
