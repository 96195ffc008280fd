--@include "now_ms"
--@include "meta"
--@include "ready"
--@include "marker"
--@include "tasks"
--@include "layout"
--@include "cascade"
--@include "dead"
-- store_message(Q, now, m): store one message as enqueue.lua describes; m holds id, body,
-- p (priority), e (eta ms or nil), hold (true: waiting for an operator), t (task name),
-- i (task id), ttl (ms or nil), lm (its limits' lane id or "", see includes/limits), and for a message with parents: dp (task ids), pf and dl.
-- Returns the state it was stored in, or "exists".

-- place_child(Q, id, meta, now): where a message with parents goes, by their records:
-- "dead" (one failed, policy dead: set aside at once naming the first such parent, held
-- by all of them, as a cascade would), "waiting" (edges recorded for the pending ones)
-- or nil (every parent done: stored as a plain message, out of the graph).
local function place_child(Q, id, meta, now)
  local P = prefix_of(Q)
  -- workers record task outcomes once this store has dependents (dependencies_in_use)
  redis.call('SET', dep_key(P, 'flag', 'in_use'), '1')
  local pending, failed = {}, {}
  for _, parent in ipairs(meta.dp) do
    local outcome = redis.call('GET', dep_key(P, 'done', parent))
    if not outcome then
      pending[#pending + 1] = parent
    elseif outcome == 'failed' and meta.pf ~= 'run' then
      failed[#failed + 1] = parent
    end
  end
  if #pending == 0 and #failed == 0 then
    meta.dt = 1
    return nil
  end
  meta.w = #pending
  local member = edge_of(queue_of(Q), id)
  for _, parent in ipairs(pending) do
    redis.call('SADD', dep_key(P, 'children', parent), member)
  end
  if #failed > 0 then
    for _, parent in ipairs(failed) do
      local settled = dep_key(P, 'settled', parent)
      redis.call('SADD', settled, member)
      redis.call('PEXPIRE', settled, deps.ttl_ms)
    end
    meta.ff, meta.fp = failed, failed[1]
    set_dead(Q, id, meta, now, 'dependency_failed', 'parent ' .. failed[1] .. ' failed')
    return 'dead'
  end
  redis.call('ZADD', Q.waiting, waiting_score(Q, meta), id)
  -- a consumer idle since its last fetch learns of the deadline by fetching again
  if meta.dl then wake(Q) end
  return 'waiting'
end

local function store_message(Q, now, m)
  local id = m.id
  if redis.call('HEXISTS', Q.meta, id) == 1 then return 'exists' end
  mark_layout(Q)
  local meta = {p = m.p, n = 0, t = m.t, i = m.i, c = now, e = m.e}
  if m.lm and m.lm ~= '' then meta.lm = m.lm end
  local state = nil
  if m.dp then
    meta.dp, meta.pf, meta.dl = m.dp, m.pf, m.dl
    state = place_child(Q, id, meta, now)
  end
  if state == 'dead' then
    -- set aside at once: saved by set_dead
  elseif state == 'waiting' then
    save_meta(Q, id, meta)
  elseif m.hold then
    redis.call('ZADD', Q.waiting, waiting_score(Q, meta), id)
    state = 'waiting'
    save_meta(Q, id, meta)
  elseif meta.e and meta.e > now then
    redis.call('ZADD', Q.delayed, meta.e, id)
    wake(Q)
    state = 'delayed'
    save_meta(Q, id, meta)
  else
    ready_add(Q, id, meta.p, now, meta)
    wake(Q)
    state = 'ready'
    save_meta(Q, id, meta)
  end
  redis.call('HSET', Q.bodies, id, m.body)
  index_task(Q, meta.i, id)

  -- time to live: the sooner of the message's own and the queue's
  if state ~= 'dead' then
    local ttl = tonumber(redis.call('HGET', Q.lifetime, 'ttl') or '')
    if m.ttl and (ttl == nil or m.ttl < ttl) then ttl = m.ttl end
    if ttl then redis.call('ZADD', Q.expiring, now + ttl, id) end
  end
  return state
end
