-- fetch: lease up to ARGV[1] of the most urgent ready messages across queues, atomically.
-- First, in each queue, due delayed messages become ready, expired leases return to ready
-- and messages past their time to live go (see includes/promote). A message whose metadata
-- cannot be read goes to dead with reason "corrupt" (never dropped); whenever messages of
-- a queue die here, its dead letters are trimmed to the retention policy.
-- KEYS: one group per queue (see includes/queue_keys), in the order of the queues, then
-- the limit definitions key ({<prefix>:limits}:defs) when the caller knows that a fetched
-- queue holds limited messages (see includes/limits): only then are lanes looked at
-- ARGV[1] max count, ARGV[2] consumer id, ARGV[3] lease in ms, or 0 to take the messages
-- instead (no-ack consumers: removed from the store, no lease), ARGV[4] max deliveries,
-- ARGV[5] dead letters kept for (ms), ARGV[6] most dead letters kept per queue,
-- ARGV[7] completion record TTL in ms (for what dies here, see includes/cascade),
-- ARGV[8...] task names to skip (left ready; at most SKIP_SCAN_LIMIT looked at per queue)
-- Waiting messages past their dependency deadline go dead (dependency_timeout) like the
-- expired ones; what waits on a message that dies here follows it, in whatever queue
-- (keys built from the prefix: see includes/cascade).
-- Limited messages: without the definitions key, the fetch stops at the first one it
-- would hand out and answers more_ready 2 ("fetch again with the limits key"); with it,
-- a queue's candidates are its best plain ready message and the head of its first
-- eligible lane that every limit admits (lanes refused are blocked, at most
-- SKIP_SCAN_LIMIT per queue), and next_due covers the wake times of blocked lanes.
-- Returns {more_ready 0|1|2, next_due_ms or -1, how many were set aside as dead, then per
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
--@include "limits"
local SKIP_SCAN_LIMIT = @SKIP_SCAN_LIMIT@
local SCAN_WINDOW, FIRST_WINDOW = 100, 8
local now = now_ms()
local nqueues = math.floor(#KEYS / QUEUE_KEY_COUNT)
local limiting = #KEYS % QUEUE_KEY_COUNT == 1
-- definitions do not change during a fetch: each is read (and each lane decoded) once
-- TATs and start counts are written once per key, at the end (see lim.defer); the heads
-- of the lanes it places are remembered (see lim.place)
if limiting then
  lim.memo, lim.heads = {}, {}
  lim.defer()
end
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
  if limiting then
    -- lanes whose wake time has come are eligible again
    for _, lane in ipairs(redis.call('ZRANGEBYSCORE', lim.blocked_key(Q), '-inf', now, 'LIMIT', 0, PROMOTE_LIMIT)) do
      redis.call('ZREM', lim.blocked_key(Q), lane)
      lim.place(Q, lane)
    end
  end
end
-- what waited on the messages set aside follows them (see includes/cascade)
settle_deaths(now)

-- 2. the best ready candidate of a queue: {id, score} or nil for a plain message,
-- {id, score it competes at, lane, plan, ready score, clock (us) of the check, hand-outs
-- of limited messages before the check} for a limited one: a lane's head competes at its
-- priority and the later of its sequence and the lane's turn, so lanes take turns with
-- each other and with plain messages
local limited_handouts = 0
local function plain_candidate(q)
  local ready = queues[q].ready
  if not skipping and not limiting then
    local top = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
    if #top == 0 then return nil end
    return {top[1], top[2]}
  end
  -- every ready message limited (the limited index is exact): nothing plain to look for;
  -- an index larger than ready holds ids an earlier tq left there: dropped
  if limiting then
    local nready, nlimited = redis.call('ZCARD', ready), redis.call('ZCARD', lim.limited_key(queues[q]))
    if nlimited > nready then nlimited = lim.prune_limited(queues[q]) end
    if nready <= nlimited then return nil end
  end
  -- a first small window: a plain message is usually near the front
  local first, size = 0, FIRST_WINDOW
  while first < SKIP_SCAN_LIMIT do
    local last = math.min(first + size, SKIP_SCAN_LIMIT) - 1
    local window = redis.call('ZRANGE', ready, first, last, 'WITHSCORES')
    first, size = last + 1, SCAN_WINDOW
    if #window == 0 then return nil end
    local in_lane = {}
    if limiting then
      local ids = {}
      for j = 1, #window, 2 do ids[#ids + 1] = window[j] end
      in_lane = redis.call('ZMSCORE', lim.limited_key(queues[q]), unpack(ids))
    end
    for j = 1, #window, 2 do
      if not in_lane[(j + 1) / 2] then
        if not skipping then return {window[j], window[j + 1]} end
        local meta = load_meta(queues[q], window[j])
        if not (meta and (skip[meta.t] or (limiting and meta.lm))) then return {window[j], window[j + 1]} end
      end
    end
  end
  return nil
end

-- the head of the first eligible lane that every limit admits now (lanes refused are
-- blocked; ids no longer ready are dropped from their lane)
local function lane_candidate(q)
  local Q = queues[q]
  local lanes, offset = lim.lanes_key(Q), 0
  for _ = 1, SKIP_SCAN_LIMIT do
    local first = redis.call('ZRANGE', lanes, offset, offset)
    if #first == 0 then return nil end
    local lane = first[1]
    local head, turn = lim.head(Q, lane)
    local score = head and redis.call('ZSCORE', Q.ready, head)
    if not head then
      redis.call('ZREM', lanes, lane)
    elseif not score then
      lim.unlane(Q, lane, head)
      lim.place(Q, lane)
    elseif skipping and skip[(load_meta(Q, head) or {}).t] then
      offset = offset + 1
    else
      local now_us = lim.now_us()
      local admitted, plan, names = lim.check(Q, lane, now_us)
      if admitted then
        local at = ready_score(priority_of_score(score), math.max(offset_of_score(score), turn))
        return {head, score_text(at), lane, plan, score, now_us, limited_handouts}
      end
      lim.block(Q, lane, plan, names)
    end
  end
  return nil
end

-- a queue's plain candidate is looked for once per fetch, and again only once it is
-- handed out (false: none within the scan)
local plains = {}
local function candidate(q)
  if plains[q] == nil then plains[q] = plain_candidate(q) or false end
  local plain = plains[q] or nil
  if not limiting then return plain end
  local limited = lane_candidate(q)
  if plain and limited then
    if tonumber(limited[2]) < tonumber(plain[2]) then return limited end
    return plain
  end
  return plain or limited
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
  local Q, id, lane = queues[best], candidates[best][1], candidates[best][3]
  local meta, why, kept = load_meta(Q, id)
  local plan, now_us = candidates[best][4], candidates[best][6]
  if not lane then plains[best] = nil end
  if meta and meta.lm and not limiting then
    out[1] = 2 -- a limited message: the caller fetches again with the limits key
    break
  end
  if meta and type(meta.lm) == 'string' and not lane then
    -- a limited message outside its lane (never expected): indexed there, not handed out
    lim.put(Q, meta.lm, id, candidates[best][2])
    plan = nil
    lane = meta.lm
  elseif lane then
    if candidates[best][7] ~= limited_handouts then
      -- a limited hand-out since the check may have used what it saw: check again
      now_us = lim.now_us()
      local admitted, wake_ms, names = lim.check(Q, lane, now_us)
      if admitted then
        plan = wake_ms
      else
        lim.block(Q, lane, wake_ms, names)
        plan = nil
      end
    end
    if plan then
      redis.call('ZREM', lim.lane_key(Q, lane), id)
      lim.place(Q, lane)
      limited_handouts = limited_handouts + 1
    end
  end
  local ready_score_of = candidates[best][5] or candidates[best][2]
  if lane and not plan then
    -- held back: nothing handed out
  elseif not meta then
    ready_remove(Q, id, ready_score_of)
    bury_corrupt(Q, id, why, kept, now)
    died[best] = died[best] + 1
  else
    ready_remove(Q, id, ready_score_of, meta)
    meta.n = (meta.n or 0) + 1
    if taking then
      if lane then lim.start(Q, id, '', plan, now_us) end
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
      -- ns: it holds no slot, so settling it frees nothing (see lim.release)
      if lane then meta.ns = (not lim.start(Q, id, meta.l, plan, now_us)) or nil end
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
    if out[1] == 0 then out[1] = 1 end
    wake(Q)
  elseif limiting then
    -- only held-back messages left: a wake from before this fetch is spent (a consumer
    -- blocked on the marker would have taken it), so waiters sleep until a slot frees
    redis.call('DEL', Q.marker)
  end
  for _, set in ipairs({Q.delayed, Q.inflight}) do
    local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
    if #first > 0 and (next_due == nil or tonumber(first[2]) < next_due) then
      next_due = tonumber(first[2])
    end
  end
  if deadlines[q] and (next_due == nil or deadlines[q] < next_due) then next_due = deadlines[q] end
  if limiting then
    local first = redis.call('ZRANGE', lim.blocked_key(Q), 0, 0, 'WITHSCORES')
    if #first > 0 and tonumber(first[2]) < lim.PARKED and (next_due == nil or tonumber(first[2]) < next_due) then
      next_due = tonumber(first[2])
    end
  end
end
trim_cascaded(now, kept_ms, max_kept)
lim.flush()
if next_due then out[2] = next_due end
return out
