-- complete: record that tasks succeeded or failed for good, in order, and release or set
-- aside every message waiting on each, in one step whatever their number (see
-- includes/cascade).
-- KEYS: per task, its done record, its children and its settled children (the dependency
--       keyspace, see includes/key_names). The children's queues, and the dependency keys
--       of a cascade, are not in KEYS: their names are built from ARGV[1]
--       (includes/cascade), so dependencies need one Redis, not a Cluster.
-- ARGV[1] the key prefix (as key names hold it), ARGV[2] completion record TTL in ms,
-- ARGV[3] dead letters kept for (ms), ARGV[4] most dead letters kept per queue (for the
-- queues where messages die), then per task (in the order of KEYS): its id, and "1"
-- succeeded or "0" failed
-- Returns {released, failed}, summed over the tasks: how many messages became ready or
-- delayed, and how many (transitively) went dead. Recording an outcome already recorded
-- changes nothing.
--@include "now_ms"
--@include "cascade"
--@include "cascade_retention"
local P = ARGV[1]
deps.ttl_ms = tonumber(ARGV[2])
local now = now_ms()
local released, failed = 0, 0
for i = 0, #KEYS / 3 - 1 do
  local task_id = ARGV[5 + 2 * i]
  local outcome = ARGV[6 + 2 * i] == '1' and 'succeeded' or 'failed'
  if redis.call('GET', KEYS[3 * i + 1]) ~= outcome then
    record_outcome(P, task_id, outcome)
    local r, f = finish(P, {task_id}, outcome == 'succeeded', now)
    released, failed = released + r, failed + f
  end
end
trim_cascaded(now, tonumber(ARGV[3]), tonumber(ARGV[4]))
return {released, failed}
