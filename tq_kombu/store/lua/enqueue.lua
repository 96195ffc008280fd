-- enqueue.lua: store one message as ready, delayed, waiting or dead.
-- KEYS[1] ready    (zset: id -> priority score)
-- KEYS[2] delayed  (zset: id -> due time, ms)
-- KEYS[3] waiting  (zset: id -> sequence)
-- KEYS[4] dead     (zset: id -> dead-at time, ms)
-- KEYS[5] meta     (hash: id -> JSON metadata)
-- KEYS[6] bodies   (hash: id -> payload)
-- KEYS[7] seq      (counter giving FIFO order)
-- KEYS[8] marker   (zset woken consumers block on)
-- ARGV[1] id, ARGV[2] payload, ARGV[3] priority, ARGV[4] eta in ms or "",
-- ARGV[5] target: "auto" (ready or delayed by eta), "waiting" or "dead",
-- ARGV[6] task name, ARGV[7] task id, ARGV[8] dead reason, ARGV[9] dead detail,
-- ARGV[10] sealed failure record (base64), ARGV[11] worker hostname
-- Returns the state the message was stored in, or "exists" when the queue already
-- holds a message with that id (the first copy is kept).
local SEQ_SPAN = 17592186044416 -- 2^44: priority * SEQ_SPAN + seq keeps FIFO within a level
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local id = ARGV[1]
if redis.call('HEXISTS', KEYS[5], id) == 1 then return 'exists' end
local meta = {p = tonumber(ARGV[3]), n = 0, t = ARGV[6], i = ARGV[7], c = now}
if ARGV[4] ~= '' then meta.e = tonumber(ARGV[4]) end

local state
if ARGV[5] == 'waiting' then
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[7]), id)
  state = 'waiting'
elseif ARGV[5] == 'dead' then
  meta.r = ARGV[8]
  meta.x = ARGV[9]
  meta.f = ARGV[10]
  meta.h = ARGV[11]
  meta.d = now
  redis.call('ZADD', KEYS[4], now, id)
  state = 'dead'
elseif meta.e and meta.e > now then
  redis.call('ZADD', KEYS[2], meta.e, id)
  redis.call('ZADD', KEYS[8], 0, 'm')
  state = 'delayed'
else
  local seq = redis.call('INCR', KEYS[7])
  redis.call('ZADD', KEYS[1], string.format('%.0f', (255 - meta.p) * SEQ_SPAN + seq), id)
  redis.call('ZADD', KEYS[8], 0, 'm')
  state = 'ready'
end
redis.call('HSET', KEYS[5], id, cjson.encode(meta))
redis.call('HSET', KEYS[6], id, ARGV[2])
return state
