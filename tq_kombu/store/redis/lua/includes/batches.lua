-- each_batch(ids, fn): call fn with slices of ids short enough for unpack().
local BATCH = 500
local function each_batch(ids, fn)
  for i = 1, #ids, BATCH do
    fn({unpack(ids, i, math.min(i + BATCH - 1, #ids))})
  end
end
