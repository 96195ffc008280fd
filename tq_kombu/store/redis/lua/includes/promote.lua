--@include "meta"
--@include "ready"
--@include "dead"
--@include "corrupt"
--@include "forget"
--@include "cascade"
-- What a fetch does to a queue before it hands anything out, each step at most
-- PROMOTE_LIMIT messages. Each returns how many messages it set aside as dead.
local PROMOTE_LIMIT = @PROMOTE_LIMIT@

-- promote_due(Q, now): delayed messages whose time has come become ready.
local function promote_due(Q, now)
  local buried = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', Q.delayed, '-inf', now, 'LIMIT', 0, PROMOTE_LIMIT)) do
    redis.call('ZREM', Q.delayed, id)
    local meta, why, kept = load_meta(Q, id)
    if meta then
      ready_add(Q, id, meta.p, meta.c or now, meta)
    else
      bury_corrupt(Q, id, why, kept, now)
      buried = buried + 1
    end
  end
  return buried
end

-- reclaim_expired(Q, now): messages whose lease ran out return to ready.
local function reclaim_expired(Q, now)
  local buried = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', Q.inflight, '-inf', now, 'LIMIT', 0, PROMOTE_LIMIT)) do
    redis.call('ZREM', Q.inflight, id)
    local meta, why, kept = load_meta(Q, id)
    if meta then
      lim.release(Q, id, meta, meta.l)
      meta.l = nil
      save_meta(Q, id, meta)
      ready_add(Q, id, meta.p, meta.c or now, meta)
    else
      bury_corrupt(Q, id, why, kept, now)
      buried = buried + 1
    end
  end
  return buried
end

-- expire_past_ttl(Q, now): queued messages past their time to live go: dropped in a
-- self-expiring queue (its lifetime has "expires"), dead (reason expired) in any other.
local function expire_past_ttl(Q, now)
  local buried = 0
  local dropping = redis.call('HEXISTS', Q.lifetime, 'expires') == 1
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', Q.expiring, '-inf', now, 'LIMIT', 0, PROMOTE_LIMIT)) do
    redis.call('ZREM', Q.expiring, id)
    local queued = ready_remove(Q, id) ~= nil
    for _, set in ipairs({Q.delayed, Q.waiting}) do
      if redis.call('ZREM', set, id) == 1 then queued = true end
    end
    if queued and dropping then
      local meta = decode_meta(redis.call('HGET', Q.meta, id))
      if meta and type(meta.dp) == 'table' then detach(prefix_of(Q), Q, id, meta) end
      forget(Q, id, meta)
    elseif queued then
      local meta, why, kept = load_meta(Q, id)
      if meta then
        set_dead(Q, id, meta, now, 'expired', 'its time to live ran out before it was delivered')
      else
        bury_corrupt(Q, id, why, kept, now)
      end
      buried = buried + 1
    end
  end
  return buried
end
