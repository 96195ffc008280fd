-- fetch.lua: lease up to ARGV[1] of the most urgent ready messages across queues, atomically.
-- First, in each queue, due delayed messages become ready, expired leases return to ready and
-- messages past their time to live go: dropped in a self-expiring queue (its lifetime has
-- "expires"), dead with reason "expired" in any other.
-- KEYS: eleven per queue, in this order: ready, delayed, inflight, dead, waiting, meta, bodies,
--       seq, marker, expiring, lifetime (see enqueue.lua for what each holds; inflight: id ->
--       lease deadline, ms)
-- ARGV[1] max count, ARGV[2] consumer id, ARGV[3] lease in ms, or 0 to take the messages
-- instead (no-ack consumers: removed from the store, no lease), ARGV[4] max deliveries,
-- ARGV[5...] task names to skip (left ready)
-- A message whose metadata cannot be read goes to dead with reason "corrupt" (never dropped).
-- Returns {more_ready 0|1, next_due_ms or -1, how many were set aside as dead, then per delivery:
--          queue index (0-based), id, payload, priority, delivery count, lease token,
--          first-seen time in ms (0 when unknown)}
local K = 11
local SEQ_SPAN = 17592186044416
local SCAN_WINDOW = 100
local SCAN_LIMIT = 1000
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local nqueues = #KEYS / K
local max_count = tonumber(ARGV[1])
local consumer = ARGV[2]
local lease_ms = tonumber(ARGV[3])
local max_deliveries = tonumber(ARGV[4])
local skip, skipping = {}, false
for i = 5, #ARGV do
  skip[ARGV[i]] = true
  skipping = true
end

local function key(q, k) return KEYS[(q - 1) * K + k] end
local READY, DELAYED, INFLIGHT, DEAD, WAITING, META, BODIES, SEQ, MARKER = 1, 2, 3, 4, 5, 6, 7, 8, 9
local EXPIRING, LIFETIME = 10, 11
local taking = lease_ms == 0
local out = {0, -1, 0}

local function save(q, id, meta) redis.call('HSET', key(q, META), id, cjson.encode(meta)) end

-- A message's metadata, or nil and why it cannot be read (missing, not JSON, bad fields).
local function load(q, id)
  local raw = redis.call('HGET', key(q, META), id)
  if not raw then return nil, 'its metadata record is missing', {} end
  local ok, meta = pcall(cjson.decode, raw)
  if not ok or type(meta) ~= 'table' then
    return nil, 'its metadata record is not valid JSON (' .. #raw .. ' bytes)', {}
  end
  if type(meta.p) ~= 'number' or meta.p < 0 or meta.p > 255 then
    return nil, 'its metadata record has no priority in 0..255', meta
  end
  for _, field in ipairs({'n', 'c', 'e'}) do
    if meta[field] ~= nil and type(meta[field]) ~= 'number' then
      return nil, 'its metadata field ' .. field .. ' is not a number', meta
    end
  end
  return meta
end

-- Set aside as dead (reason corrupt) a message whose metadata cannot be read, keeping its
-- payload and whatever fields of the record are still readable.
local buried_corrupt = 0
local function bury_corrupt(q, id, why, kept)
  local function typed(value, kind) if type(value) == kind then return value end return nil end
  local meta = {
    p = typed(kept.p, 'number') or 0, n = typed(kept.n, 'number') or 0,
    t = typed(kept.t, 'string') or '', i = typed(kept.i, 'string') or '',
    c = typed(kept.c, 'number'), e = typed(kept.e, 'number'),
    r = 'corrupt', x = why, d = now,
  }
  for _, k in ipairs({READY, DELAYED, INFLIGHT}) do redis.call('ZREM', key(q, k), id) end
  redis.call('ZADD', key(q, DEAD), now, id)
  save(q, id, meta)
  buried_corrupt = buried_corrupt + 1
end

local function to_ready(q, id, meta)
  local seq = redis.call('INCR', key(q, SEQ))
  redis.call('ZADD', key(q, READY), string.format('%.0f', (255 - meta.p) * SEQ_SPAN + seq), id)
end

-- 1. promote due delayed messages and reclaim expired leases
for q = 1, nqueues do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', key(q, DELAYED), '-inf', now, 'LIMIT', 0, 1000)) do
    redis.call('ZREM', key(q, DELAYED), id)
    local meta, why, kept = load(q, id)
    if meta then to_ready(q, id, meta) else bury_corrupt(q, id, why, kept) end
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', key(q, INFLIGHT), '-inf', now, 'LIMIT', 0, 1000)) do
    redis.call('ZREM', key(q, INFLIGHT), id)
    local meta, why, kept = load(q, id)
    if meta then
      meta.l = nil
      save(q, id, meta)
      to_ready(q, id, meta)
    else
      bury_corrupt(q, id, why, kept)
    end
  end
  local dropping = redis.call('HEXISTS', key(q, LIFETIME), 'expires') == 1
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', key(q, EXPIRING), '-inf', now, 'LIMIT', 0, 1000)) do
    redis.call('ZREM', key(q, EXPIRING), id)
    local queued = 0
    for _, k in ipairs({READY, DELAYED, WAITING}) do
      queued = queued + redis.call('ZREM', key(q, k), id)
    end
    if queued > 0 then
      if dropping then
        redis.call('HDEL', key(q, META), id)
        redis.call('HDEL', key(q, BODIES), id)
      else
        local meta, why, kept = load(q, id)
        if meta then
          meta.r = 'expired'
          meta.x = 'its time to live ran out before it was delivered'
          meta.d = now
          save(q, id, meta)
          redis.call('ZADD', key(q, DEAD), now, id)
          out[3] = out[3] + 1
        else
          bury_corrupt(q, id, why, kept)
        end
      end
    end
  end
end

-- 2. the best ready candidate of a queue: {id, score} or nil
local function candidate(q)
  if not skipping then
    local top = redis.call('ZRANGE', key(q, READY), 0, 0, 'WITHSCORES')
    if #top == 0 then return nil end
    return {top[1], tonumber(top[2])}
  end
  for offset = 0, SCAN_LIMIT - 1, SCAN_WINDOW do
    local window = redis.call('ZRANGE', key(q, READY), offset, offset + SCAN_WINDOW - 1, 'WITHSCORES')
    if #window == 0 then return nil end
    for j = 1, #window, 2 do
      local meta = load(q, window[j])
      if not (meta and skip[meta.t]) then return {window[j], tonumber(window[j + 1])} end
    end
  end
  return nil
end

local candidates = {}
for q = 1, nqueues do candidates[q] = candidate(q) end

-- 3. lease (or take) the best candidates, one at a time, strictly by score across queues
out[3] = out[3] + buried_corrupt
local delivered = 0
while delivered < max_count do
  local best = nil
  for q = 1, nqueues do
    if candidates[q] and (best == nil or candidates[q][2] < candidates[best][2]) then best = q end
  end
  if best == nil then break end
  local id = candidates[best][1]
  redis.call('ZREM', key(best, READY), id)
  local meta, why, kept = load(best, id)
  if not meta then
    bury_corrupt(best, id, why, kept)
    out[3] = out[3] + 1
  else
    meta.n = (meta.n or 0) + 1
    if taking then
      local body = redis.call('HGET', key(best, BODIES), id)
      for _, v in ipairs({best - 1, id, body or '', meta.p, meta.n, '', meta.c or 0}) do
        out[#out + 1] = v
      end
      redis.call('HDEL', key(best, META), id)
      redis.call('HDEL', key(best, BODIES), id)
      redis.call('ZREM', key(best, EXPIRING), id)
      meta = nil
      delivered = delivered + 1
    elseif meta.n > max_deliveries then
      meta.l = nil
      meta.r = 'max_deliveries'
      meta.x = 'handed out ' .. (meta.n - 1) .. ' times without being acknowledged'
      meta.d = now
      redis.call('ZADD', key(best, DEAD), now, id)
      out[3] = out[3] + 1
    else
      meta.l = consumer .. ':' .. meta.n
      redis.call('ZADD', key(best, INFLIGHT), now + lease_ms, id)
      local body = redis.call('HGET', key(best, BODIES), id)
      for _, v in ipairs({best - 1, id, body or '', meta.p, meta.n, meta.l, meta.c or 0}) do
        out[#out + 1] = v
      end
      delivered = delivered + 1
    end
    if meta then save(best, id, meta) end
  end
  candidates[best] = candidate(best)
end

-- 4. tell the consumer what is left, and wake others when ready messages remain
local next_due = nil
for q = 1, nqueues do
  if candidates[q] then
    out[1] = 1
    redis.call('ZADD', key(q, MARKER), 0, 'm')
  end
  for _, k in ipairs({DELAYED, INFLIGHT}) do
    local first = redis.call('ZRANGE', key(q, k), 0, 0, 'WITHSCORES')
    if #first > 0 and (next_due == nil or tonumber(first[2]) < next_due) then
      next_due = tonumber(first[2])
    end
  end
end
if next_due then out[2] = next_due end
return out
