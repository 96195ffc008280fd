-- renew: extend the leases of one queue's in-flight messages still held by their callers.
-- KEYS: the queue's meta and inflight keys (includes/lease_keys)
-- ARGV[1] lease in ms, then pairs: id, lease token
-- Returns the positions (1-based, counting pairs) of the leases no longer held.
--@include "lease_keys"
--@include "now_ms"
--@include "meta"
local Q = lease_keys()
local deadline = now_ms() + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local meta = decode_meta(redis.call('HGET', Q.meta, id))
  -- unreadable metadata counts as lost: the next fetch sets the message aside as corrupt
  if meta and meta.l == token and redis.call('ZSCORE', Q.inflight, id) then
    redis.call('ZADD', Q.inflight, deadline, id)
  else
    lost[#lost + 1] = i / 2
  end
end
return lost
