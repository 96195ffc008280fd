-- complete: record that a task succeeded or failed for good, and release or set aside
-- every message waiting on it, in one step whatever their number (see includes/cascade).
-- KEYS[1] the task's done record, KEYS[2] its children, KEYS[3] its settled children
--       (the dependency keyspace, see includes/key_names). The children's queues, and the
--       dependency keys of a cascade, are not in KEYS: their names are built from ARGV[1]
--       (includes/cascade), so dependencies need one Redis, not a Cluster.
-- ARGV[1] the key prefix (as key names hold it), ARGV[2] task id, ARGV[3] "1" succeeded
-- or "0" failed, ARGV[4] completion record TTL in ms, ARGV[5] dead letters kept for (ms),
-- ARGV[6] most dead letters kept per queue (for the queues where messages die)
-- Returns {released, failed}: how many messages became ready or delayed, and how many
-- (transitively) went dead. Recording the outcome already recorded changes nothing.
--@include "now_ms"
--@include "cascade"
--@include "cascade_retention"
local P, task_id = ARGV[1], ARGV[2]
local outcome = ARGV[3] == '1' and 'succeeded' or 'failed'
deps.ttl_ms = tonumber(ARGV[4])
if redis.call('GET', KEYS[1]) == outcome then return {0, 0} end
record_outcome(P, task_id, outcome)
local now = now_ms()
local released, failed = finish(P, {task_id}, outcome == 'succeeded', now)
trim_cascaded(now, tonumber(ARGV[5]), tonumber(ARGV[6]))
return {released, failed}
