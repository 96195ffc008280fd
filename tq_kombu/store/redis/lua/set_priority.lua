-- set_priority.lua: change the priority of a queued message; a ready one keeps its FIFO
-- position within the new level.
-- KEYS[1] ready, KEYS[2] delayed, KEYS[3] waiting, KEYS[4] meta
-- ARGV[1] id, ARGV[2] new priority
-- Returns 1 when changed, 0 when the message was not queued.
local SEQ_SPAN = 17592186044416
local id, priority = ARGV[1], tonumber(ARGV[2])
local score = redis.call('ZSCORE', KEYS[1], id)
if not score and not redis.call('ZSCORE', KEYS[2], id) and not redis.call('ZSCORE', KEYS[3], id) then
  return 0
end
local raw = redis.call('HGET', KEYS[4], id)
if not raw then return 0 end
local ok, meta = pcall(cjson.decode, raw)
if not ok or type(meta) ~= 'table' then return 0 end -- corrupt: the next fetch buries it
meta.p = priority
redis.call('HSET', KEYS[4], id, cjson.encode(meta))
if score then
  local seq = tonumber(score) % SEQ_SPAN
  redis.call('ZADD', KEYS[1], string.format('%.0f', (255 - priority) * SEQ_SPAN + seq), id)
end
return 1
