--@include "batches"
--@include "meta"
--@include "forget"
-- trim_dead(Q, now, kept_ms, max_kept): drop the dead messages that died more than
-- kept_ms ago, then the oldest beyond max_kept; returns how many were dropped.
local function trim_dead(Q, now, kept_ms, max_kept)
  local dropped = redis.call('ZRANGEBYSCORE', Q.dead, '-inf', '(' .. string.format('%.0f', now - kept_ms))
  local excess = redis.call('ZCARD', Q.dead) - #dropped - max_kept
  if excess > 0 then
    for _, old in ipairs(redis.call('ZRANGE', Q.dead, #dropped, #dropped + excess - 1)) do
      dropped[#dropped + 1] = old
    end
  end
  each_batch(dropped, function(batch)
    redis.call('ZREM', Q.dead, unpack(batch))
    local raws = redis.call('HMGET', Q.meta, unpack(batch))
    for j, id in ipairs(batch) do forget(Q, id, decode_meta(raws[j])) end
  end)
  return #dropped
end
