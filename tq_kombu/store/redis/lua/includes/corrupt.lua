--@include "ready"
--@include "dead"
-- bury_corrupt(Q, id, why, kept, now): set aside as dead (reason corrupt) a message whose
-- metadata cannot be used, keeping its payload and whichever fields of kept are readable.
-- Never dropped: an operator can still see, fix and replay it.
local function bury_corrupt(Q, id, why, kept, now)
  local function typed(value, kind) if type(value) == kind then return value end return nil end
  local meta = {
    p = typed(kept.p, 'number') or 0, n = typed(kept.n, 'number') or 0,
    t = typed(kept.t, 'string') or '', i = typed(kept.i, 'string') or '',
    c = typed(kept.c, 'number'), e = typed(kept.e, 'number'),
    dp = typed(kept.dp, 'table'), w = typed(kept.w, 'number'), ff = typed(kept.ff, 'table'),
    pf = typed(kept.pf, 'string'), dl = typed(kept.dl, 'number'), dt = typed(kept.dt, 'number'),
  }
  ready_remove(Q, id)
  for _, set in ipairs({Q.delayed, Q.inflight, Q.waiting}) do redis.call('ZREM', set, id) end
  set_dead(Q, id, meta, now, 'corrupt', why)
end
