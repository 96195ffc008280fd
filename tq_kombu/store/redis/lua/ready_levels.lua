-- ready_levels: ready messages per priority and the first-seen time of each level's
-- oldest, from the kept counts and ages: O(levels), no scan of the messages.
-- KEYS: the queue's group (see includes/queue_keys)
-- Returns flat triples: priority, count, oldest first-seen time in ms (-1 when unknown).
--@include "queue_keys"
--@include "score"
--@include "layout"
local Q = queue_keys(1)
ensure_layout(Q)
local counts = redis.call('HGETALL', Q.counts)
local out = {}
for i = 1, #counts, 2 do
  local priority = tonumber(counts[i])
  if priority and counts[i] ~= 'v' then
    local low = ready_score(priority, 0)
    local oldest = redis.call('ZRANGEBYSCORE', Q.ages, score_text(low),
      score_text(low + SCORE_SPAN - 1), 'WITHSCORES', 'LIMIT', 0, 1)
    out[#out + 1] = priority
    out[#out + 1] = tonumber(counts[i + 1])
    out[#out + 1] = #oldest > 0 and offset_of_score(oldest[2]) or -1
  end
end
return out
