-- bury_message.lua: set one message of a queue aside as dead by id, without a lease, then
-- apply the retention policy, atomically. A message the queue holds (ready, delayed, waiting
-- or in flight) moves to dead in place, keeping its payload, first-seen time and delivery
-- count; one already dead stays as it is; one not held is stored as dead from ARGV.
-- KEYS[1] ready, KEYS[2] delayed, KEYS[3] waiting, KEYS[4] inflight, KEYS[5] dead,
-- KEYS[6] meta, KEYS[7] bodies (see enqueue.lua and fetch.lua for what each holds)
-- ARGV[1] id, ARGV[2] payload, ARGV[3] priority, ARGV[4] eta in ms or "",
-- ARGV[5] task name, ARGV[6] task id, ARGV[7] dead reason, ARGV[8] dead detail,
-- ARGV[9] sealed failure record (base64, may be empty), ARGV[10] worker hostname,
-- ARGV[11] attempts or "", ARGV[12] delivery count or "", ARGV[13] first seen in ms or "",
-- ARGV[14] retention cut-off in ms (older dead messages go), ARGV[15] most dead messages kept
-- Returns the state the message was in before ("ready", "delayed", "waiting", "inflight",
-- "dead") or "stored" when the queue did not hold it.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local id = ARGV[1]
local function number_or_nil(value) if value == '' then return nil end return tonumber(value) end

local before = 'stored'
local meta
local raw = redis.call('HGET', KEYS[6], id)
if raw then
  if redis.call('ZSCORE', KEYS[5], id) then return 'dead' end
  for i, state in ipairs({'ready', 'delayed', 'waiting', 'inflight'}) do
    if redis.call('ZREM', KEYS[i], id) == 1 then before = state end
  end
  local ok, decoded = pcall(cjson.decode, raw)
  if ok and type(decoded) == 'table' then meta = decoded end
end
if meta then
  meta.l = nil
elseif raw then
  -- held, but its metadata is unreadable: rebuilt from the arguments, payload kept
  meta = {p = tonumber(ARGV[3]), n = number_or_nil(ARGV[12]) or 0, t = ARGV[5], i = ARGV[6], c = now}
else
  meta = {
    p = tonumber(ARGV[3]),
    n = number_or_nil(ARGV[12]) or 0,
    t = ARGV[5],
    i = ARGV[6],
    c = number_or_nil(ARGV[13]) or now,
    e = number_or_nil(ARGV[4]),
  }
  redis.call('HSET', KEYS[7], id, ARGV[2])
end
meta.r, meta.x, meta.f, meta.h, meta.d = ARGV[7], ARGV[8], ARGV[9], ARGV[10], now
meta.a = number_or_nil(ARGV[11])
redis.call('HSET', KEYS[6], id, cjson.encode(meta))
redis.call('ZADD', KEYS[5], now, id)

-- retention: drop dead messages older than the cut-off, then the oldest beyond the count
local dropped = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. ARGV[14])
local excess = redis.call('ZCARD', KEYS[5]) - #dropped - tonumber(ARGV[15])
if excess > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[5], #dropped, #dropped + excess - 1)) do
    dropped[#dropped + 1] = old
  end
end
for i = 1, #dropped, 500 do
  local batch = {unpack(dropped, i, math.min(i + 499, #dropped))}
  redis.call('ZREM', KEYS[5], unpack(batch))
  redis.call('HDEL', KEYS[6], unpack(batch))
  redis.call('HDEL', KEYS[7], unpack(batch))
end
return before
