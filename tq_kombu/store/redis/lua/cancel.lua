-- cancel.lua: delete a ready, delayed or waiting message so it never runs.
-- KEYS[1] ready, KEYS[2] delayed, KEYS[3] waiting, KEYS[4] meta, KEYS[5] bodies
-- ARGV[1] id
-- Returns 1 when cancelled, 0 when the message was not queued in one of those states.
local id = ARGV[1]
for i = 1, 3 do
  if redis.call('ZREM', KEYS[i], id) == 1 then
    redis.call('HDEL', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
    return 1
  end
end
return 0
