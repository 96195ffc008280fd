-- renew.lua: extend the leases of one queue's in-flight messages still held by their callers.
-- KEYS[1] inflight, KEYS[2] meta
-- ARGV[1] lease in ms, then pairs: id, lease token
-- Returns the positions (1-based, counting pairs) of the leases no longer held.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local deadline = now + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local raw = redis.call('HGET', KEYS[2], id)
  local ok, meta = false, nil
  if raw then ok, meta = pcall(cjson.decode, raw) end
  -- unreadable metadata counts as lost: the next fetch sets the message aside as corrupt
  if ok and type(meta) == 'table' and meta.l == token and redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], deadline, id)
  else
    lost[#lost + 1] = i / 2
  end
end
return lost
