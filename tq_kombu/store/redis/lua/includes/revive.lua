--@include "cascade"
-- revive(P, task_id): a failed task is replayed: its failed record goes, and the messages
-- its failure set aside (still dead as dependency_failed by it) wait again, each with its
-- edges to the parents still pending, and their own dependents after them. A message
-- with another failed parent (policy dead) stays dead. Returns how many wait again.
local function revive(P, task_id)
  local revived = 0
  local work = {task_id}
  local i = 0
  while i < #work do
    i = i + 1
    local t = work[i]
    if redis.call('GET', dep_key(P, 'done', t)) == 'failed' then
      redis.call('DEL', dep_key(P, 'done', t))
    end
    local settled = dep_key(P, 'settled', t)
    for _, member in ipairs(redis.call('SMEMBERS', settled)) do
      local queue, id = split_edge(member)
      local C = keys_of_queue(P, queue)
      local meta = redis.call('ZSCORE', C.dead, id) and decode_meta(redis.call('HGET', C.meta, id))
      if meta and meta.r == 'dependency_failed' and meta.fp == t and type(meta.dp) == 'table' then
        local pending, blocked = {}, false
        for _, parent in ipairs(meta.dp) do
          local outcome = redis.call('GET', dep_key(P, 'done', parent))
          if outcome == 'failed' and meta.pf ~= 'run' then
            blocked = true
          elseif outcome ~= 'succeeded' and outcome ~= 'failed' then
            pending[#pending + 1] = parent
          end
        end
        if not blocked and #pending > 0 then
          redis.call('SREM', settled, member)
          redis.call('ZREM', C.dead, id)
          meta.r, meta.x, meta.d, meta.fp = nil, nil, nil, nil
          meta.w = #pending
          for _, parent in ipairs(pending) do
            redis.call('SADD', dep_key(P, 'children', parent), member)
          end
          redis.call('ZADD', C.waiting, waiting_score(C, meta), id)
          if meta.dl then wake(C) end
          save_meta(C, id, meta)
          revived = revived + 1
          if type(meta.i) == 'string' and meta.i ~= '' then work[#work + 1] = meta.i end
        end
      end
    end
  end
  return revived
end
