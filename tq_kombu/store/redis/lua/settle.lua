-- settle.lua: finish one delivery: ack, release, requeue or bury. Acts only while the
-- caller's lease token is still the message's current lease.
-- KEYS[1] ready, KEYS[2] inflight, KEYS[3] dead, KEYS[4] meta, KEYS[5] bodies,
-- KEYS[6] seq, KEYS[7] marker
-- ARGV[1] action: "ack" (delete), "release" or "requeue" (ready; the delivery stays
--         counted either way) or "bury" (dead)
-- ARGV[2] id, ARGV[3] lease token, ARGV[4] dead reason, ARGV[5] dead detail,
-- ARGV[6] sealed failure record (base64, may be empty), ARGV[7] worker hostname,
-- ARGV[8] attempts or "" (bury)
-- Returns 1 when settled, 0 when the lease was no longer held.
local SEQ_SPAN = 17592186044416
local action, id, token = ARGV[1], ARGV[2], ARGV[3]
local raw = redis.call('HGET', KEYS[4], id)
if not raw then return 0 end
local ok, meta = pcall(cjson.decode, raw)
-- unreadable metadata: left to expire; the next fetch sets it aside as corrupt
if not ok or type(meta) ~= 'table' then return 0 end
if meta.l ~= token or not redis.call('ZSCORE', KEYS[2], id) then return 0 end
redis.call('ZREM', KEYS[2], id)

if action == 'ack' then
  redis.call('HDEL', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
  return 1
end

meta.l = nil
if action == 'bury' then
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  meta.r = ARGV[4]
  meta.x = ARGV[5]
  meta.f = ARGV[6]
  meta.h = ARGV[7]
  meta.a = tonumber(ARGV[8])
  meta.d = now
  redis.call('ZADD', KEYS[3], now, id)
else
  local seq = redis.call('INCR', KEYS[6])
  redis.call('ZADD', KEYS[1], string.format('%.0f', (255 - (tonumber(meta.p) or 0)) * SEQ_SPAN + seq), id)
  redis.call('ZADD', KEYS[7], 0, 'm')
end
redis.call('HSET', KEYS[4], id, cjson.encode(meta))
return 1
