-- fetch: lease up to ARGV[1] of the most urgent ready messages across queues, atomically.
-- First, in each queue, due delayed messages become ready, expired leases return to ready
-- and messages past their time to live go (see includes/promote). A message whose metadata
-- cannot be read goes to dead with reason "corrupt" (never dropped); whenever messages of
-- a queue die here, its dead letters are trimmed to the retention policy.
-- KEYS: one group per queue (see includes/queue_keys), in the order of the queues
-- ARGV[1] max count, ARGV[2] consumer id, ARGV[3] lease in ms, or 0 to take the messages
-- instead (no-ack consumers: removed from the store, no lease), ARGV[4] max deliveries,
-- ARGV[5] dead letters kept for (ms), ARGV[6] most dead letters kept per queue,
-- ARGV[7] completion record TTL in ms (for what dies here, see includes/cascade),
-- ARGV[8...] task names to skip (left ready; at most SKIP_SCAN_LIMIT looked at per queue)
-- Waiting messages past their dependency deadline go dead (dependency_timeout) like the
-- expired ones; what waits on a message that dies here follows it, in whatever queue
-- (keys built from the prefix: see includes/cascade).
-- Returns {more_ready 0|1, next_due_ms or -1, how many were set aside as dead, then per
--          delivery: queue index (0-based), id, payload, priority, delivery count, lease
--          token, first-seen time in ms (0 when unknown)}
--@include "queue_keys"
--@include "now_ms"
--@include "meta"
--@include "ready"
--@include "marker"
--@include "dead"
--@include "corrupt"
--@include "forget"
--@include "promote"
--@include "retention"
--@include "deadlines"
--@include "cascade_retention"
local SKIP_SCAN_LIMIT = @SKIP_SCAN_LIMIT@
local SCAN_WINDOW = 100
local now = now_ms()
local nqueues = #KEYS / QUEUE_KEY_COUNT
local max_count = tonumber(ARGV[1])
local consumer = ARGV[2]
local lease_ms = tonumber(ARGV[3])
local max_deliveries = tonumber(ARGV[4])
local kept_ms, max_kept = tonumber(ARGV[5]), tonumber(ARGV[6])
deps.ttl_ms = tonumber(ARGV[7]) or deps.ttl_ms
local skip, skipping = {}, false
for i = 8, #ARGV do
  skip[ARGV[i]] = true
  skipping = true
end
local taking = lease_ms == 0
local out = {0, -1, 0}
local queues, died, deadlines = {}, {}, {}

-- 1. promote due delayed messages, reclaim expired leases, expire messages past their TTL
-- or their dependency deadline
for q = 1, nqueues do
  local Q = queue_keys((q - 1) * QUEUE_KEY_COUNT + 1)
  queues[q] = Q
  died[q] = promote_due(Q, now) + reclaim_expired(Q, now) + expire_past_ttl(Q, now)
  local timed_out
  timed_out, deadlines[q] = time_out_waiting(Q, now)
  died[q] = died[q] + timed_out
end
-- what waited on the messages set aside follows them (see includes/cascade)
settle_deaths(now)

-- 2. the best ready candidate of a queue: {id, score} or nil
local function candidate(q)
  local ready = queues[q].ready
  if not skipping then
    local top = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
    if #top == 0 then return nil end
    return {top[1], top[2]}
  end
  for offset = 0, SKIP_SCAN_LIMIT - 1, SCAN_WINDOW do
    local last = math.min(offset + SCAN_WINDOW, SKIP_SCAN_LIMIT) - 1
    local window = redis.call('ZRANGE', ready, offset, last, 'WITHSCORES')
    if #window == 0 then return nil end
    for j = 1, #window, 2 do
      local meta = load_meta(queues[q], window[j])
      if not (meta and skip[meta.t]) then return {window[j], window[j + 1]} end
    end
  end
  return nil
end

local candidates = {}
for q = 1, nqueues do candidates[q] = candidate(q) end

-- 3. lease (or take) the best candidates, one at a time, strictly by score across queues
local delivered = 0
while delivered < max_count do
  local best = nil
  for q = 1, nqueues do
    if candidates[q] and (best == nil or tonumber(candidates[q][2]) < tonumber(candidates[best][2])) then
      best = q
    end
  end
  if best == nil then break end
  local Q, id = queues[best], candidates[best][1]
  ready_remove(Q, id, candidates[best][2])
  local meta, why, kept = load_meta(Q, id)
  if not meta then
    bury_corrupt(Q, id, why, kept, now)
    died[best] = died[best] + 1
  else
    meta.n = (meta.n or 0) + 1
    if taking then
      local body = redis.call('HGET', Q.bodies, id)
      for _, v in ipairs({best - 1, id, body or '', meta.p, meta.n, '', meta.c or 0}) do
        out[#out + 1] = v
      end
      forget(Q, id, meta)
      delivered = delivered + 1
    elseif meta.n > max_deliveries then
      set_dead(Q, id, meta, now, 'max_deliveries',
        'handed out ' .. (meta.n - 1) .. ' times without being acknowledged')
      died[best] = died[best] + 1
    else
      meta.l = consumer .. ':' .. meta.n
      redis.call('ZADD', Q.inflight, now + lease_ms, id)
      local body = redis.call('HGET', Q.bodies, id)
      for _, v in ipairs({best - 1, id, body or '', meta.p, meta.n, meta.l, meta.c or 0}) do
        out[#out + 1] = v
      end
      save_meta(Q, id, meta)
      delivered = delivered + 1
    end
  end
  candidates[best] = candidate(best)
end

-- 4. what waited on the messages set aside in 3 follows them; apply the retention
-- policy where messages died, tell the consumer what is left, and wake other consumers
-- when ready messages remain
if settle_deaths(now) > 0 then
  for q = 1, nqueues do candidates[q] = candidates[q] or candidate(q) end
end
local next_due = nil
for q = 1, nqueues do
  local Q = queues[q]
  if died[q] > 0 then
    out[3] = out[3] + died[q]
    trim_dead(Q, now, kept_ms, max_kept)
  end
  if candidates[q] then
    out[1] = 1
    wake(Q)
  end
  for _, set in ipairs({Q.delayed, Q.inflight}) do
    local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
    if #first > 0 and (next_due == nil or tonumber(first[2]) < next_due) then
      next_due = tonumber(first[2])
    end
  end
  if deadlines[q] and (next_due == nil or deadlines[q] < next_due) then next_due = deadlines[q] end
end
trim_cascaded(now, kept_ms, max_kept)
if next_due then out[2] = next_due end
return out
