-- enqueue_many: store many messages, across queues, as enqueue.lua would, all or none:
-- every argument is read and checked before anything is written.
-- KEYS: one group per queue (see includes/queue_keys); messages with parents also reach
--       their parents' dependency keys (built from the prefix, see includes/cascade)
-- ARGV[1] completion record TTL in ms, ARGV[2] how many messages, then per message 13
-- fields and its parents: queue (1-based group), id, payload, priority, eta in ms or "",
-- target ("auto" or "waiting"), task name, task id, own time to live in ms or "",
-- limits as a lane id or "" (see includes/limits), on parent failure ("dead" or "run"), dependency deadline in ms or "", parent count,
-- then that many parent task ids
-- Returns the state each message was stored in ("exists" when its queue already held it).
--@include "queue_keys"
--@include "store_message"
local nqueues = #KEYS / QUEUE_KEY_COUNT
local function optional_number(value, what)
  if value == '' then return nil end
  local number = tonumber(value)
  if not number then error('enqueue_many: ' .. what .. ' is not a number: ' .. tostring(value)) end
  return number
end

-- 1. read and check everything
deps.ttl_ms = optional_number(ARGV[1], 'the record TTL') or deps.ttl_ms
local count = optional_number(ARGV[2], 'the message count') or 0
local messages, at = {}, 3
for n = 1, count do
  local q = optional_number(ARGV[at], 'a queue index')
  if not q or q < 1 or q > nqueues or q % 1 ~= 0 then
    error('enqueue_many: message ' .. n .. ' names no queue of KEYS')
  end
  local m = {
    q = q, id = ARGV[at + 1], body = ARGV[at + 2],
    p = optional_number(ARGV[at + 3], 'a priority'), e = optional_number(ARGV[at + 4], 'an eta'),
    hold = ARGV[at + 5] == 'waiting', t = ARGV[at + 6], i = ARGV[at + 7],
    ttl = optional_number(ARGV[at + 8], 'a time to live'), lm = ARGV[at + 9],
  }
  if not (m.id and m.body and m.p and m.t and m.i and m.lm) then
    error('enqueue_many: message ' .. n .. ' lacks a field')
  end
  local nparents = optional_number(ARGV[at + 12], 'a parent count') or 0
  if nparents > 0 then
    m.dp = {unpack(ARGV, at + 13, at + 12 + nparents)}
    if #m.dp ~= nparents then error('enqueue_many: message ' .. n .. ' lacks parents') end
    if ARGV[at + 10] == 'run' then m.pf = 'run' end
    m.dl = optional_number(ARGV[at + 11], 'a deadline')
  end
  messages[n] = m
  at = at + 13 + nparents
end
if at ~= #ARGV + 1 then error('enqueue_many: ' .. (#ARGV + 1 - at) .. ' arguments left over') end

-- 2. write
local now = now_ms()
local states = {}
for n, m in ipairs(messages) do
  states[n] = store_message(queue_keys((m.q - 1) * QUEUE_KEY_COUNT + 1), now, m)
end
settle_deaths(now)
return states
