--@include "cascade"
--@include "marker"
-- revive(P, task_id): a failed task is replayed: its failed record goes, and it stops
-- holding its dependents dead: each counts it pending again, and one that its failure
-- (or another's since revived) set aside as dependency_failed, held by no other failed
-- parent, waits again; their own dependents follow (depth first, in (queue, id) order,
-- as the memory store does). Returns how many wait again.
local function revive(P, task_id)
  local revived = 0
  local stack = {task_id}
  while #stack > 0 do
    local parent = table.remove(stack)
    if redis.call('GET', dep_key(P, 'done', parent)) == 'failed' then
      redis.call('DEL', dep_key(P, 'done', parent))
    end
    local settled = dep_key(P, 'settled', parent)
    local members = redis.call('SMEMBERS', settled)
    table.sort(members)
    for _, member in ipairs(members) do
      local queue, id = split_edge(member)
      local C = keys_of_queue(P, queue)
      local meta = decode_meta(redis.call('HGET', C.meta, id))
      if meta and type(meta.dp) == 'table' and not meta.dt and has(meta.ff, parent) then
        meta.ff = without(meta.ff, parent)
        meta.w = (tonumber(meta.w) or 0) + 1
        redis.call('SREM', settled, member)
        redis.call('SADD', dep_key(P, 'children', parent), member)
        if not meta.ff and meta.r == 'dependency_failed' and redis.call('ZSCORE', C.dead, id) then
          redis.call('ZREM', C.dead, id)
          meta.r, meta.x, meta.d, meta.fp, meta.f, meta.h, meta.a = nil, nil, nil, nil, nil, nil, nil
          redis.call('ZADD', C.waiting, waiting_score(C, meta), id)
          if meta.dl then wake(C) end
          revived = revived + 1
          if type(meta.i) == 'string' and meta.i ~= '' then stack[#stack + 1] = meta.i end
        end
        save_meta(C, id, meta)
      end
    end
  end
  return revived
end
