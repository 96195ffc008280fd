--@include "meta"
--@include "corrupt"
--@include "cascade"
--@include "dead"
--@include "promote"
-- timeout_detail(Q, id, meta): as contract.dependencies.timeout_detail words it, naming
-- the parents still pending (its pending edges), sorted.
local function timeout_detail(Q, id, meta)
  local P, member, pending = prefix_of(Q), edge_of(queue_of(Q), id), {}
  if type(meta.dp) == 'table' then
    for _, parent in ipairs(meta.dp) do
      if redis.call('SISMEMBER', dep_key(P, 'children', parent), member) == 1 then
        pending[#pending + 1] = parent
      end
    end
  end
  table.sort(pending)
  local named = table.concat(pending, ', ', 1, math.min(#pending, @NAMED_PARENTS@))
  if named == '' then named = 'no parent' end
  local more = #pending > @NAMED_PARENTS@ and ' and more' or ''
  return 'still waiting on ' .. named .. more .. ' when its dependency deadline passed'
end

-- time_out_waiting(Q, now): waiting messages whose dependency deadline passed go dead
-- (dependency_timeout, what waits on them following), at most PROMOTE_LIMIT per call.
-- One ZRANGE when none is due. Returns how many died and the next deadline (ms) or nil.
local function time_out_waiting(Q, now)
  local first = redis.call('ZRANGE', Q.waiting, 0, 0, 'WITHSCORES')
  if #first == 0 then return 0, nil end
  local score = tonumber(first[2])
  if score > now then
    if score < NO_DEADLINE then return 0, score end
    return 0, nil
  end
  local buried = 0
  local due = redis.call('ZRANGEBYSCORE', Q.waiting, '-inf', now, 'WITHSCORES', 'LIMIT', 0, PROMOTE_LIMIT)
  for j = 1, #due, 2 do
    local id = due[j]
    local meta, why, kept = load_meta(Q, id)
    if not redis.call('ZSCORE', Q.waiting, id) then
      -- already set aside by the cascade of one before it
    elseif not meta then
      bury_corrupt(Q, id, why, kept, now)
      buried = buried + 1
    elseif type(meta.dl) ~= 'number' then
      -- no deadline (scored by sequence before scores were deadlines): after every one
      redis.call('ZADD', Q.waiting, NO_DEADLINE + tonumber(due[j + 1]), id)
    else
      redis.call('ZREM', Q.waiting, id)
      set_dead(Q, id, meta, now, 'dependency_timeout', timeout_detail(Q, id, meta))
      buried = buried + 1
    end
  end
  first = redis.call('ZRANGE', Q.waiting, 0, 0, 'WITHSCORES')
  if #first > 0 and tonumber(first[2]) < NO_DEADLINE then return buried, tonumber(first[2]) end
  return buried, nil
end
