-- release_waiting.lua: a waiting message becomes delayed (ETA still ahead) or ready.
-- KEYS[1] waiting, KEYS[2] delayed, KEYS[3] ready, KEYS[4] meta, KEYS[5] seq, KEYS[6] marker
-- ARGV[1] id
-- Returns 1 when released, 0 when the message was not waiting.
local SEQ_SPAN = 17592186044416
local id = ARGV[1]
if redis.call('ZREM', KEYS[1], id) == 0 then return 0 end
local raw = redis.call('HGET', KEYS[4], id)
local ok, meta = false, nil
if raw then ok, meta = pcall(cjson.decode, raw) end
-- unreadable metadata: made ready at the lowest level; the next fetch sets it aside as corrupt
if not ok or type(meta) ~= 'table' or type(meta.p) ~= 'number' then meta = {p = 0} end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if type(meta.e) == 'number' and meta.e > now then
  redis.call('ZADD', KEYS[2], meta.e, id)
else
  local seq = redis.call('INCR', KEYS[5])
  redis.call('ZADD', KEYS[3], string.format('%.0f', (255 - meta.p) * SEQ_SPAN + seq), id)
end
redis.call('ZADD', KEYS[6], 0, 'm')
return 1
