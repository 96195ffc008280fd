--@include "key_names"
--@include "meta"
--@include "ready"
--@include "marker"
-- Dependencies: completion records and edges in the store's dependency keyspace,
-- <prefix>{deps}:<kind>:<task id> (see key_names), shared by every queue:
--   done:<t>      "succeeded" or "failed"; expires after the record TTL
--   children:<t>  set of edge_of(queue, id): messages that count t pending (waiting,
--                 or dead: a dead dependent keeps its edges, as in the memory store)
--   settled:<t>   the same, for edges t's completion settled; expires with done:<t>
-- A child's metadata holds dp (its parents), w (how many are still pending: it is in
-- their children sets, waiting or dead), pf ("run": a parent's failure counts as done),
-- dl (its deadline, ms), ff (the parents whose failure holds it dead), fp (the one that
-- set it aside) and dt (detached: released, replayed or released by hand; out of the
-- graph). Its waiting score is its deadline, else NO_DEADLINE + seq. Children are
-- handled in (queue, id) order, cascades level by level in task id order, as the
-- memory store does.
-- A cascade reaches children in queues that no KEYS name: their keys are built here from
-- the prefix (key_names), the one exception to "every key a script touches is in KEYS"
-- (so dependencies across queues need one Redis, not a Cluster).
local NO_DEADLINE = @NO_DEADLINE_SCORE@
-- What the running script set: how long records live (ms), the dead sets of the queues
-- where a cascade set messages aside (their retention is the caller's to apply), and
-- the tasks that died here, whose dependents follow at settle_deaths (deaths journaled
-- and settled in task id order, as the memory store does).
local deps = {ttl_ms = @DEPENDENCY_RECORD_TTL_MS@, died = {}, deaths = {}, journaled = {}}

local function record_outcome(P, task_id, outcome)
  redis.call('SET', dep_key(P, 'done', task_id), outcome, 'PX', deps.ttl_ms)
end

-- waiting_score(Q, meta): where a waiting message goes in Q.waiting.
local function waiting_score(Q, meta)
  if type(meta.dl) == 'number' then return meta.dl end
  return NO_DEADLINE + redis.call('INCR', Q.seq)
end

-- has(list, value), without(list, value): a parent in (out of) a list of task ids;
-- an empty list is nil (cjson would write an empty table as an object).
local function has(list, value)
  if type(list) ~= 'table' then return false end
  for _, item in ipairs(list) do if item == value then return true end end
  return false
end
local function without(list, value)
  local kept = {}
  for _, item in ipairs(list or {}) do if item ~= value then kept[#kept + 1] = item end end
  if #kept == 0 then return nil end
  return kept
end

-- detach(P, Q, id, meta): a child leaves the graph (released, replayed, released by hand,
-- cancelled, purged): its pending edges go (the caller saves meta).
local function detach(P, Q, id, meta)
  if type(meta.dp) ~= 'table' then return end
  if (tonumber(meta.w) or 0) > 0 then
    local member = edge_of(queue_of(Q), id)
    for _, parent in ipairs(meta.dp) do
      redis.call('SREM', dep_key(P, 'children', parent), member)
    end
  end
  meta.w, meta.dt = 0, 1
end

-- release_child(Q, id, meta, now): a waiting message whose parents are all done becomes
-- delayed (eta still ahead) or ready at its priority, out of the graph, consumers woken.
local function release_child(Q, id, meta, now)
  redis.call('ZREM', Q.waiting, id)
  meta.w, meta.dt = 0, 1
  save_meta(Q, id, meta)
  if type(meta.e) == 'number' and meta.e > now then
    redis.call('ZADD', Q.delayed, meta.e, id)
  else
    ready_add(Q, id, tonumber(meta.p) or 0, tonumber(meta.c) or now, meta)
  end
  wake(Q)
end

-- mark_dead(Q, id, meta, now, reason, detail): record a message as dead (no cascade).
local function mark_dead(Q, id, meta, now, reason, detail)
  meta.l, meta.r, meta.x, meta.d = nil, reason, detail, now
  save_meta(Q, id, meta)
  redis.call('ZADD', Q.dead, now, id)
end

-- take_children(P, t): t's pending edges in (queue, id) order, moved to its settled set.
local function take_children(P, t)
  local pending = dep_key(P, 'children', t)
  local members = redis.call('SMEMBERS', pending)
  if #members == 0 then return members end
  table.sort(members)
  local settled = dep_key(P, 'settled', t)
  redis.call('SUNIONSTORE', settled, settled, pending)
  redis.call('DEL', pending)
  redis.call('PEXPIRE', settled, deps.ttl_ms)
  return members
end

-- finish(P, tasks, succeeded, now): the messages waiting on each of tasks (or dead,
-- still counting it pending) stop waiting on it. A success, or a failure under policy
-- run, releases those left waiting on nothing; a failure under policy dead holds them
-- dead: a waiting one is set aside as dependency_failed naming it and recorded failed,
-- and its own dependents follow, level by level (each in task id order). Returns
-- released, failed.
local function finish(P, tasks, succeeded, now)
  local released, failed = 0, 0
  local level, first = tasks, true
  while #level > 0 do
    local next_level, seen = {}, {}
    for _, t in ipairs(level) do
      for _, member in ipairs(take_children(P, t)) do
        local queue, id = split_edge(member)
        local C = keys_of_queue(P, queue)
        local meta = decode_meta(redis.call('HGET', C.meta, id))
        if meta and type(meta.dp) == 'table' and not meta.dt then
          local waiting = redis.call('ZSCORE', C.waiting, id)
          meta.w = math.max((tonumber(meta.w) or 1) - 1, 0)
          if (first and succeeded) or meta.pf == 'run' then
            if waiting and meta.w == 0 then
              release_child(C, id, meta, now)
              released = released + 1
            else
              save_meta(C, id, meta)
            end
          else
            local holding = meta.ff or {}
            holding[#holding + 1] = t
            meta.ff = holding
            if waiting then
              redis.call('ZREM', C.waiting, id)
              meta.fp = t
              mark_dead(C, id, meta, now, 'dependency_failed', 'parent ' .. t .. ' failed')
              deps.died[C.dead] = C
              failed = failed + 1
              if type(meta.i) == 'string' and meta.i ~= '' then
                record_outcome(P, meta.i, 'failed')
                if not seen[meta.i] then
                  seen[meta.i] = true
                  next_level[#next_level + 1] = meta.i
                end
              end
            else
              save_meta(C, id, meta)
            end
          end
        end
      end
    end
    first = false
    table.sort(next_level)
    level = next_level
  end
  return released, failed
end

-- gone(Q, id, meta, now): a message leaves for good other than by success (dead,
-- cancelled): its task is recorded failed (a child published later goes dead at once)
-- and journaled: the messages waiting on it follow at settle_deaths. (A dying child
-- keeps its own edges, as a dead dependent; cancel and purge detach it first.)
local function gone(Q, id, meta, now)
  local task_id = meta.i
  if type(task_id) ~= 'string' or task_id == '' then return end
  deps.prefix = deps.prefix or prefix_of(Q)
  record_outcome(deps.prefix, task_id, 'failed')
  if not deps.journaled[task_id] then
    deps.journaled[task_id] = true
    deps.deaths[#deps.deaths + 1] = task_id
  end
end

-- settle_deaths(now): the dependents of the tasks that died since the last call follow
-- them (one EXISTS per task when nothing waits on it). Returns released, failed.
local function settle_deaths(now)
  if #deps.deaths == 0 then return 0, 0 end
  local P, tasks = deps.prefix, {}
  for _, task_id in ipairs(deps.deaths) do
    if redis.call('EXISTS', dep_key(P, 'children', task_id)) == 1 then
      tasks[#tasks + 1] = task_id
    end
  end
  deps.deaths, deps.journaled = {}, {}
  table.sort(tasks)
  return finish(P, tasks, false, now)
end
