--@include "cascade"
--@include "retention"
-- trim_cascaded(now, kept_ms, max_kept): apply the retention policy to every queue where
-- a cascade set messages aside during this script.
local function trim_cascaded(now, kept_ms, max_kept)
  for _, Q in pairs(deps.died) do trim_dead(Q, now, kept_ms, max_kept) end
end
