--@include "score"
--@include "limits"
-- The ready set and what is kept with it, always together: counts (hash: priority ->
-- ready messages) and ages (zset: id -> ready_score(priority, first seen in ms)).

-- ready_put(Q, id, priority, seq, first_seen[, meta]): make a message ready at sequence
-- seq (and index it in its lane when meta names limits, see includes/limits).
local function ready_put(Q, id, priority, seq, first_seen, meta)
  local score = score_text(ready_score(priority, seq))
  redis.call('ZADD', Q.ready, score, id)
  if meta and type(meta.lm) == 'string' then lim.put(Q, meta.lm, id, score) end
  redis.call('ZADD', Q.ages, score_text(ready_score(priority, first_seen)), id)
  redis.call('HINCRBY', Q.counts, priority, 1)
end

-- ready_add(Q, id, priority, first_seen[, meta]): make a message ready, last of its level.
local function ready_add(Q, id, priority, first_seen, meta)
  ready_put(Q, id, priority, redis.call('INCR', Q.seq), first_seen, meta)
end

-- ready_remove(Q, id[, score[, meta]]): take a message out of ready; returns its priority
-- and score, or nil when it was not ready (score: its ready score when the caller knows
-- it). It leaves the queue's limited index too (kept exact: a fetch trusts its count),
-- unless meta, its record, names no limits (then it is not there: plain ones pay nothing).
local function ready_remove(Q, id, score, meta)
  score = score or redis.call('ZSCORE', Q.ready, id)
  if not score then return nil end
  if redis.call('ZREM', Q.ready, id) == 0 then return nil end
  if not meta or meta.lm ~= nil then redis.call('ZREM', lim.limited_key(Q), id) end
  local priority = priority_of_score(score)
  redis.call('ZREM', Q.ages, id)
  if redis.call('HINCRBY', Q.counts, priority, -1) <= 0 then redis.call('HDEL', Q.counts, priority) end
  return priority, score
end
