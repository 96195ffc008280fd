-- trim_dead.lua: drop dead messages older than a cut-off and beyond a count, oldest first.
-- KEYS[1] dead (zset: id -> dead-at, ms), KEYS[2] meta, KEYS[3] bodies
-- ARGV[1] cut-off time in ms (older ones go), ARGV[2] most dead messages to keep
-- Returns how many were dropped.
local dropped = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])) do
  dropped[#dropped + 1] = id
end
local excess = redis.call('ZCARD', KEYS[1]) - #dropped - tonumber(ARGV[2])
if excess > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], #dropped, #dropped + excess - 1)) do
    dropped[#dropped + 1] = id
  end
end
for i = 1, #dropped, 500 do
  local batch = {unpack(dropped, i, math.min(i + 499, #dropped))}
  redis.call('ZREM', KEYS[1], unpack(batch))
  redis.call('HDEL', KEYS[2], unpack(batch))
  redis.call('HDEL', KEYS[3], unpack(batch))
end
return #dropped
