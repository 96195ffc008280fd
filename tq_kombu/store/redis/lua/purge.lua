-- purge.lua: delete every message of one state of a queue.
-- KEYS[1] the state's zset, KEYS[2] meta, KEYS[3] bodies
-- Returns how many messages were deleted.
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
for i = 1, #ids, 500 do
  local batch = {unpack(ids, i, math.min(i + 499, #ids))}
  redis.call('HDEL', KEYS[2], unpack(batch))
  redis.call('HDEL', KEYS[3], unpack(batch))
end
redis.call('DEL', KEYS[1])
return #ids
