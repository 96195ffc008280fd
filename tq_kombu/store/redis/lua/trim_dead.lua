-- trim_dead: drop dead messages older than the retention policy and beyond its count,
-- oldest first.
-- KEYS: the queue's group (see includes/queue_keys)
-- ARGV[1] dead letters kept for (ms), ARGV[2] most dead letters kept
-- Returns how many were dropped.
--@include "queue_keys"
--@include "now_ms"
--@include "retention"
return trim_dead(queue_keys(1), now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]))
