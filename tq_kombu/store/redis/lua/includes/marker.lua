-- wake(Q): tell consumers blocked on the queue's marker (BZPOPMIN) that it changed.
local function wake(Q) redis.call('ZADD', Q.marker, 0, 'm') end
