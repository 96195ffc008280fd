-- enqueue.lua: store one message as ready, delayed or waiting.
-- KEYS[1] ready    (zset: id -> priority score)
-- KEYS[2] delayed  (zset: id -> due time, ms)
-- KEYS[3] waiting  (zset: id -> sequence)
-- KEYS[4] meta     (hash: id -> JSON metadata: p priority, n delivery count, t task name,
--                   i task id, c first seen (ms), e eta (ms), l lease token; when dead:
--                   r reason, x detail, f sealed failure (base64), h hostname, d dead at
--                   (ms), a attempts)
-- KEYS[5] bodies   (hash: id -> payload)
-- KEYS[6] seq      (counter giving FIFO order)
-- KEYS[7] marker   (zset woken consumers block on)
-- KEYS[8] expiring (zset: id -> time, ms, after which it must not be handed out)
-- KEYS[9] lifetime (hash: ttl = message TTL in ms, expires = queue expiry in ms,
--                   deadline = ms; see declare_queue.lua)
-- (the dead set, zset: id -> dead-at time in ms, is written by settle.lua, fetch.lua and
--  bury_message.lua)
-- ARGV[1] id, ARGV[2] payload, ARGV[3] priority, ARGV[4] eta in ms or "",
-- ARGV[5] target: "auto" (ready or delayed by eta) or "waiting",
-- ARGV[6] task name, ARGV[7] task id, ARGV[8] the message's own TTL in ms or ""
-- Returns the state the message was stored in, or "exists" when the queue already
-- holds a message with that id (the first copy is kept).
local SEQ_SPAN = 17592186044416 -- 2^44: priority * SEQ_SPAN + seq keeps FIFO within a level
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local id = ARGV[1]
if redis.call('HEXISTS', KEYS[4], id) == 1 then return 'exists' end
local meta = {p = tonumber(ARGV[3]), n = 0, t = ARGV[6], i = ARGV[7], c = now}
if ARGV[4] ~= '' then meta.e = tonumber(ARGV[4]) end

local state
if ARGV[5] == 'waiting' then
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[6]), id)
  state = 'waiting'
elseif meta.e and meta.e > now then
  redis.call('ZADD', KEYS[2], meta.e, id)
  redis.call('ZADD', KEYS[7], 0, 'm')
  state = 'delayed'
else
  local seq = redis.call('INCR', KEYS[6])
  redis.call('ZADD', KEYS[1], string.format('%.0f', (255 - meta.p) * SEQ_SPAN + seq), id)
  redis.call('ZADD', KEYS[7], 0, 'm')
  state = 'ready'
end
redis.call('HSET', KEYS[4], id, cjson.encode(meta))
redis.call('HSET', KEYS[5], id, ARGV[2])

-- time to live: the sooner of the message's own and the queue's
local ttl = tonumber(redis.call('HGET', KEYS[9], 'ttl') or '')
if ARGV[8] ~= '' and (ttl == nil or tonumber(ARGV[8]) < ttl) then ttl = tonumber(ARGV[8]) end
if ttl then redis.call('ZADD', KEYS[8], now + ttl, id) end
return state
