-- define_limits: write, replace or remove limit definitions, then wake the lanes blocked
-- on each name changed (see includes/limits), so consumers obey it at their next fetch.
-- KEYS[1] the definitions hash ({<prefix>:limits}:defs)
-- ARGV[1] "settings" (each replaces one of its name unless that one was set at run time),
-- "runtime" (replaces) or "remove"; then for settings and runtime: pairs of name and
-- definition (JSON {k, i, t, s, o}), for remove: the names
-- Returns how many definitions were written or removed.
--@include "limits"
local defs, mode = KEYS[1], ARGV[1]
local P = string.match(defs, '^{(.*):limits}:defs$')
local changed = {}
if mode == 'remove' then
  for i = 2, #ARGV do
    if redis.call('HDEL', defs, ARGV[i]) == 1 then changed[#changed + 1] = ARGV[i] end
  end
else
  for i = 2, #ARGV, 2 do
    local name, definition = ARGV[i], ARGV[i + 1]
    local current = redis.call('HGET', defs, name)
    local ok, old = pcall(cjson.decode, current or 'null')
    local kept = mode == 'settings' and ok and type(old) == 'table' and old.o == 'runtime'
    if not kept and current ~= definition then
      redis.call('HSET', defs, name, definition)
      changed[#changed + 1] = name
    end
  end
end
for _, name in ipairs(changed) do lim.wake_waiters(P, name) end
return #changed
