-- enqueue: store one message as ready, delayed or waiting (for an operator, or for the
-- tasks it depends on: see includes/cascade), or as dead when a parent already failed.
-- KEYS: the queue's group (see includes/queue_keys); a message with parents also reads
--       and writes the dependency keys of its parents (built from the prefix, see
--       includes/cascade)
-- ARGV[1] id, ARGV[2] payload, ARGV[3] priority, ARGV[4] eta in ms or "",
-- ARGV[5] target: "auto" (ready or delayed by eta) or "waiting",
-- ARGV[6] task name, ARGV[7] task id, ARGV[8] the message's own time to live in ms or "",
-- ARGV[9] its limits as a lane id (JSON [[kind, name, key], ...]) or "",
-- and only for a message with parents: ARGV[10] completion record TTL in ms,
-- ARGV[11] on parent failure ("dead" or "run"), ARGV[12] dependency deadline in ms or "",
-- ARGV[13...] the parents' task ids
-- Returns the state the message was stored in, or "exists" when the queue already
-- holds a message with that id (the first copy is kept).
--@include "queue_keys"
--@include "store_message"
local m = {
  id = ARGV[1], body = ARGV[2], p = tonumber(ARGV[3]), e = tonumber(ARGV[4]),
  hold = ARGV[5] == 'waiting', t = ARGV[6], i = ARGV[7], ttl = tonumber(ARGV[8]), lm = ARGV[9],
}
if #ARGV > 12 then
  deps.ttl_ms = tonumber(ARGV[10])
  m.dp = {unpack(ARGV, 13)}
  if ARGV[11] == 'run' then m.pf = 'run' end
  m.dl = tonumber(ARGV[12])
end
local now = now_ms()
local state = store_message(queue_keys(1), now, m)
settle_deaths(now)
return state
