--@include "meta"
-- set_dead(Q, id, meta, now, reason, detail): record a message as dead (its lease, if
-- any, no longer held) and add it to the dead set; other dead fields are the caller's.
local function set_dead(Q, id, meta, now, reason, detail)
  meta.l, meta.r, meta.x, meta.d = nil, reason, detail, now
  save_meta(Q, id, meta)
  redis.call('ZADD', Q.dead, now, id)
end
