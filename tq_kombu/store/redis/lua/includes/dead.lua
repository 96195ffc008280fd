--@include "meta"
--@include "cascade"
-- set_dead(Q, id, meta, now, reason, detail): record a message as dead (its lease, if
-- any, no longer held) and add it to the dead set; other dead fields are the caller's.
-- What waits on its task fails with it (see cascade: one EXISTS when nothing does).
local function set_dead(Q, id, meta, now, reason, detail)
  gone(Q, id, meta, now)
  mark_dead(Q, id, meta, now, reason, detail)
end
