-- The ready score: (MAX_PRIORITY - priority) * SCORE_SPAN + offset, so that lower scores
-- are more urgent. The offset is the queue's sequence number in the ready set (FIFO
-- within a level) and the first-seen time in ms in the ages set.
local SCORE_SPAN = @SCORE_SPAN@
local MAX_PRIORITY = @MAX_PRIORITY@
local function ready_score(priority, offset) return (MAX_PRIORITY - priority) * SCORE_SPAN + offset end
-- a score as ZADD takes it (no exponent, exact up to 2^53)
local function score_text(score) return string.format('%.0f', score) end
local function priority_of_score(score)
  return MAX_PRIORITY - math.floor(tonumber(score) / SCORE_SPAN)
end
local function offset_of_score(score) return tonumber(score) % SCORE_SPAN end
