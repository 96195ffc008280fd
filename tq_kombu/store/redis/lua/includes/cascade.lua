--@include "key_names"
--@include "meta"
--@include "ready"
--@include "marker"
-- Dependencies: completion records and edges in the store's dependency keyspace,
-- <prefix>{deps}:<kind>:<task id> (see key_names), shared by every queue:
--   done:<t>      "succeeded" or "failed"; expires after the record TTL
--   children:<t>  set of edge_of(queue, id): messages still waiting on t
--   settled:<t>   the same, for edges t's completion settled; expires with done:<t>
-- A child's metadata holds dp (its parents), w (how many are still pending), pf ("run":
-- a parent's failure counts as done) and dl (its deadline, ms); set aside by a parent's
-- failure, fp (that parent). Its waiting score is its deadline, else NO_DEADLINE + seq.
-- A cascade reaches children in queues that no KEYS name: their keys are built here from
-- the prefix (key_names), the one exception to "every key a script touches is in KEYS"
-- (so dependencies across queues need one Redis, not a Cluster).
local NO_DEADLINE = @NO_DEADLINE_SCORE@
-- What the running script set: how long records live (ms), and the dead sets of the
-- queues where a cascade set messages aside (their retention is the caller's to apply).
local deps = {ttl_ms = @DEPENDENCY_RECORD_TTL_MS@, died = {}}

local function record_outcome(P, task_id, outcome)
  redis.call('SET', dep_key(P, 'done', task_id), outcome, 'PX', deps.ttl_ms)
end

-- waiting_score(Q, meta): where a waiting message goes in Q.waiting.
local function waiting_score(Q, meta)
  if type(meta.dl) == 'number' then return meta.dl end
  return NO_DEADLINE + redis.call('INCR', Q.seq)
end

-- unlink(P, Q, id, meta): a child leaves waiting other than by release: its pending
-- edges go (meta.w becomes 0; the caller saves meta).
local function unlink(P, Q, id, meta)
  if type(meta.dp) ~= 'table' or (tonumber(meta.w) or 0) <= 0 then return end
  local member = edge_of(queue_of(Q), id)
  for _, parent in ipairs(meta.dp) do
    redis.call('SREM', dep_key(P, 'children', parent), member)
  end
  meta.w = 0
end

-- release_child(Q, id, meta, now): a waiting message whose parents are all done becomes
-- delayed (eta still ahead) or ready at its priority, and consumers are woken.
local function release_child(Q, id, meta, now)
  redis.call('ZREM', Q.waiting, id)
  meta.w = 0
  save_meta(Q, id, meta)
  if type(meta.e) == 'number' and meta.e > now then
    redis.call('ZADD', Q.delayed, meta.e, id)
  else
    ready_add(Q, id, tonumber(meta.p) or 0, tonumber(meta.c) or now)
  end
  wake(Q)
end

-- mark_dead(Q, id, meta, now, reason, detail): record a message as dead (no cascade).
local function mark_dead(Q, id, meta, now, reason, detail)
  meta.l, meta.r, meta.x, meta.d = nil, reason, detail, now
  save_meta(Q, id, meta)
  redis.call('ZADD', Q.dead, now, id)
end

-- take_children(P, t): t's pending edges, moved to its settled set.
local function take_children(P, t)
  local pending = dep_key(P, 'children', t)
  local members = redis.call('SMEMBERS', pending)
  if #members == 0 then return members end
  local settled = dep_key(P, 'settled', t)
  redis.call('SUNIONSTORE', settled, settled, pending)
  redis.call('DEL', pending)
  redis.call('PEXPIRE', settled, deps.ttl_ms)
  return members
end

-- finish(P, task_id, succeeded, now): the messages waiting on task_id: released when it
-- was their last pending parent and it succeeded (or failed, policy run); else set aside
-- as dependency_failed naming it, recorded failed, and their own children after them.
-- Each child is handled once: it must still be waiting. Returns released, failed.
local function finish(P, task_id, succeeded, now)
  local released, failed = 0, 0
  local work = {task_id}
  local i = 0
  while i < #work do
    i = i + 1
    local t = work[i]
    for _, member in ipairs(take_children(P, t)) do
      local queue, id = split_edge(member)
      local C = keys_of_queue(P, queue)
      local meta = redis.call('ZSCORE', C.waiting, id) and decode_meta(redis.call('HGET', C.meta, id))
      if meta and ((succeeded and i == 1) or meta.pf == 'run') then
        meta.w = (tonumber(meta.w) or 1) - 1
        if meta.w <= 0 then
          release_child(C, id, meta, now)
          released = released + 1
        else
          save_meta(C, id, meta)
        end
      elseif meta then
        redis.call('ZREM', C.waiting, id)
        unlink(P, C, id, meta)
        meta.fp = t
        mark_dead(C, id, meta, now, 'dependency_failed', 'parent ' .. t .. ' failed')
        deps.died[C.dead] = C
        failed = failed + 1
        if type(meta.i) == 'string' and meta.i ~= '' then
          record_outcome(P, meta.i, 'failed')
          work[#work + 1] = meta.i
        end
      end
    end
  end
  return released, failed
end

-- gone(Q, id, meta, now): a message leaves for good other than by success (dead,
-- cancelled): its own pending edges go, its task is recorded failed (a child published
-- later goes dead at once), and the messages waiting on it follow. A SET and an EXISTS
-- when none waits. Returns how many died.
local function gone(Q, id, meta, now)
  local task_id = meta.i
  local named = type(task_id) == 'string' and task_id ~= ''
  if not named and type(meta.dp) ~= 'table' then return 0 end
  local P = prefix_of(Q)
  unlink(P, Q, id, meta)
  if not named then return 0 end
  record_outcome(P, task_id, 'failed')
  if redis.call('EXISTS', dep_key(P, 'children', task_id)) == 0 then return 0 end
  local _, failed = finish(P, task_id, false, now)
  return failed
end
