--@include "key_names"
--@include "score"
--@include "marker"
-- Limits (see contract/limits.py): a message with limit tags keeps them in meta.lm (its
-- lane id: the tags as JSON [[kind, name, key], ...]) and is indexed, while ready, in its
-- lane as well as in the ready set. Under the queue's hash tag: lane:<lane id> (zset: ready
-- ids by ready score), limited (zset: the ready ids of every lane, exactly: every
-- removal from ready drops them, so a fetch looks past them cheaply and, when it holds as
-- many as ready, knows nothing plain is ready; a lane may keep ids no longer ready), lanes (zset: eligible lanes by head priority, then turn) and
-- blocked (zset: lanes held back by a limit -> the time in ms every refusing limit may
-- admit them; a freed slot or a changed definition wakes them sooner). Under
-- {<prefix>:limits}: defs (hash: name -> JSON {k kind, i interval_us, t tolerance_us, s slots, o origin}), tat:<n>:<name>:<key>
-- (GCRA TAT in us, expiring at its value), slots:<n>:<name>:<key> (set of lease holders
-- "<queue>\0<id>\0<token>"), waiters:<name> (set of "<queue>\0<lane>" blocked on it) and
-- starts:<name> (hash: Unix second -> starts). <n> is the name's length.
-- Every function is only reached for limited messages: plain ones pay nothing.
local lim = {PARKED = @LANE_PARKED_SCORE@, STARTS_KEPT_S = @LIMIT_STARTS_KEPT_S@}

function lim.queue_tag(Q) return string.sub(Q.meta, 1, -5) end
function lim.lane_key(Q, lane) return lim.queue_tag(Q) .. 'lane:' .. lane end
function lim.lanes_key(Q) return lim.queue_tag(Q) .. 'lanes' end
function lim.blocked_key(Q) return lim.queue_tag(Q) .. 'blocked' end
function lim.limited_key(Q) return lim.queue_tag(Q) .. 'limited' end
function lim.base(P) return '{' .. P .. ':limits}:' end
function lim.state_key(P, part, name, key)
  return lim.base(P) .. part .. ':' .. #name .. ':' .. name .. ':' .. key
end
function lim.holder(Q, id, token) return queue_of(Q) .. '\0' .. id .. '\0' .. token end

-- lim.tags(lane): the well-formed tags ({kind, name, key}) of a lane id; others limit nothing
function lim.tags(lane)
  local known = lim.memo and lim.memo['t\0' .. lane]
  if known then return known end
  local ok, tags = pcall(cjson.decode, lane)
  local found = {}
  if ok and type(tags) == 'table' then
    for _, tag in ipairs(tags) do
      if type(tag) == 'table' and type(tag[2]) == 'string' and type(tag[3]) == 'string' then
        found[#found + 1] = tag
      end
    end
  end
  if lim.memo then lim.memo['t\0' .. lane] = found end
  return found
end

-- lim.definition(P, name): the definition of a limit (its kind decides, not the tag's), or
-- nil; read once per script call when lim.memo is a table (a script that changes no
-- definition, such as fetch, sets it; lim.tags keeps there what it decoded too)
function lim.definition(P, name)
  local cached = lim.memo and lim.memo['d\0' .. P .. '\0' .. name]
  if cached ~= nil then return cached or nil end
  local raw = redis.call('HGET', lim.base(P) .. 'defs', name)
  local ok, d = pcall(cjson.decode, raw or 'null')
  if not (ok and type(d) == 'table') then d = false end
  if lim.memo then lim.memo['d\0' .. P .. '\0' .. name] = d end
  return d or nil
end

-- lim.now_us(): the server's clock in whole microseconds
function lim.now_us()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- lim.place(Q, lane): index a lane among the eligible ones by its head's priority, at
-- the back of that priority (a new turn); an empty lane is dropped.
-- Within a fetch (lim.heads a table), what it placed is remembered: lim.head reads it.
function lim.place(Q, lane)
  local key = lim.lane_key(Q, lane)
  local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #head == 0 then
    redis.call('ZREM', lim.lanes_key(Q), lane)
    if lim.heads then lim.heads[key] = nil end
    return
  end
  local turn = redis.call('INCR', Q.seq)
  redis.call('ZADD', lim.lanes_key(Q), score_text(ready_score(priority_of_score(head[2]), turn)), lane)
  if lim.heads then lim.heads[key] = {head[1], turn} end
end

-- lim.head(Q, lane): the id at the head of an eligible lane (or nil) and the lane's turn.
function lim.head(Q, lane)
  local key = lim.lane_key(Q, lane)
  local known = lim.heads and lim.heads[key]
  if known then return known[1], known[2] end
  local head = redis.call('ZRANGE', key, 0, 0)
  if #head == 0 then return nil, nil end
  return head[1], offset_of_score(redis.call('ZSCORE', lim.lanes_key(Q), lane))
end

-- lim.put(Q, lane, id, score): a message of the lane became ready with that ready score.
function lim.put(Q, lane, id, score)
  local key = lim.lane_key(Q, lane)
  if lim.heads then lim.heads[key] = nil end
  redis.call('ZADD', key, score, id)
  redis.call('ZADD', lim.limited_key(Q), score, id)
  if redis.call('ZSCORE', lim.blocked_key(Q), lane) then return end
  local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  local current = redis.call('ZSCORE', lim.lanes_key(Q), lane)
  local turn = current and offset_of_score(current) or redis.call('INCR', Q.seq)
  redis.call('ZADD', lim.lanes_key(Q), score_text(ready_score(priority_of_score(head[2]), turn)), lane)
end

-- lim.unlane(Q, lane, id): a message leaves its lane (handed out, or found no longer ready).
function lim.unlane(Q, lane, id)
  if lim.heads then lim.heads[lim.lane_key(Q, lane)] = nil end
  redis.call('ZREM', lim.lane_key(Q, lane), id)
  redis.call('ZREM', lim.limited_key(Q), id)
end

-- lim.prune_limited(Q): drop from the limited index the ids no longer ready (left by an
-- earlier tq, which kept it loosely); returns how many ids it keeps.
function lim.prune_limited(Q)
  local key, offset = lim.limited_key(Q), 0
  while true do
    local ids = redis.call('ZRANGE', key, offset, offset + 99)
    if #ids == 0 then break end
    local scores = redis.call('ZMSCORE', Q.ready, unpack(ids))
    local kept = #ids
    for j, id in ipairs(ids) do
      if not scores[j] then
        redis.call('ZREM', key, id)
        kept = kept - 1
      end
    end
    offset = offset + kept
  end
  return redis.call('ZCARD', key)
end

-- lim.live_slots(P, key, now): the holders of a slot set whose lease still holds (others,
-- left by a message deleted while leased or a lease run out, are dropped); returns how
-- many remain and the earliest of their lease deadlines (ms), when a slot frees at the latest.
function lim.live_slots(P, key, now)
  local earliest = lim.PARKED
  for _, holder in ipairs(redis.call('SMEMBERS', key)) do
    local queue, rest = split_edge(holder)
    local id, token = split_edge(rest)
    local H = keys_of_queue(P, queue)
    local ok, meta = pcall(cjson.decode, redis.call('HGET', H.meta, id) or 'null')
    local deadline = tonumber(redis.call('ZSCORE', H.inflight, id) or '')
    if ok and type(meta) == 'table' and meta.l == token and deadline and deadline > now then
      if deadline < earliest then earliest = deadline end
    else
      redis.call('SREM', key, holder)
    end
  end
  return redis.call('SCARD', key), earliest
end

-- lim.check(Q, lane, now_us): whether every limit of the lane admits one start now.
-- Returns true and the plan (what to write when it starts), or false, the wake time in ms
-- (when every refusing limit may admit: a rate's next start, the first lease holding a
-- slot running out; a release or a definition change wakes it sooner) and the refusing names.
function lim.check(Q, lane, now_us)
  local P = prefix_of(Q)
  local now_ms = math.floor(now_us / 1000)
  local plan, refused, wake_ms = {}, {}, 0
  for _, tag in ipairs(lim.tags(lane)) do
    local name, key = tag[2], tag[3]
    local d = type(name) == 'string' and type(key) == 'string' and lim.definition(P, name)
    if d and d.k == 'rate' then
      local tat_key = lim.state_key(P, 'tat', name, key)
      local tat = lim.pending and lim.pending.tats[tat_key]
      if tat == nil then tat = tonumber(redis.call('GET', tat_key) or '') end
      -- a TAT beyond what this rate could produce is an older, slower rate's: cap it
      if tat then tat = math.min(tat, now_us + d.i + d.t) end
      local base = (tat and tat > now_us) and tat or now_us
      if base - d.t > now_us then
        refused[#refused + 1] = name
        wake_ms = math.max(wake_ms, math.floor((base - d.t + 999) / 1000))
      else
        plan[#plan + 1] = {'rate', tat_key, base + d.i, name}
      end
    elseif d and d.k == 'concurrency' then
      local slot_key = lim.state_key(P, 'slots', name, key)
      local held, frees = redis.call('SCARD', slot_key), nil
      if held >= d.s then held, frees = lim.live_slots(P, slot_key, now_ms) end
      if held >= d.s then
        refused[#refused + 1] = name
        wake_ms = math.max(wake_ms, frees)
      else
        plan[#plan + 1] = {'slot', slot_key, 0, name}
      end
    end
  end
  if #refused == 0 then return true, plan end
  return false, wake_ms, refused
end

-- lim.block(Q, lane, wake_ms, names): hold a lane back until wake_ms, or until a slot or a
-- definition of one of names changes.
function lim.block(Q, lane, wake_ms, names)
  local P = prefix_of(Q)
  redis.call('ZREM', lim.lanes_key(Q), lane)
  redis.call('ZADD', lim.blocked_key(Q), wake_ms, lane)
  for _, name in ipairs(names) do
    redis.call('SADD', lim.base(P) .. 'waiters:' .. name, edge_of(queue_of(Q), lane))
  end
end

-- lim.defer(): from now on, lim.start keeps new TATs and start counts in this script call
-- (lim.check reads them there) until lim.flush writes each key once (a fetch hands out
-- several messages of one lane: one write per key, not per start).
function lim.defer() lim.pending = {tats = {}, starts = {}} end

-- lim.start(Q, id, token, plan, now_us): write a start: new TATs, slots (token "" = taken
-- without a lease: no slot), the per-second start counters. Returns whether it took a slot.
function lim.start(Q, id, token, plan, now_us)
  local P = prefix_of(Q)
  local second = math.floor(now_us / 1000000)
  local counted, took = {}, false
  for _, step in ipairs(plan) do
    if step[1] == 'rate' then
      if lim.pending then lim.pending.tats[step[2]] = step[3] else lim.write_tat(step[2], step[3]) end
    elseif token ~= '' then
      redis.call('SADD', step[2], lim.holder(Q, id, token))
      took = true
    end
    if not counted[step[4]] then
      counted[step[4]] = true
      local starts = lim.base(P) .. 'starts:' .. step[4]
      if lim.pending then
        local field = starts .. '\0' .. second
        local counts = lim.pending.starts
        counts[field] = counts[field] or {starts, second, 0}
        counts[field][3] = counts[field][3] + 1
      else
        lim.count_starts(starts, second, 1)
      end
    end
  end
  return took
end

-- lim.write_tat(key, tat_us): store a TAT, expiring at its value.
function lim.write_tat(key, tat_us)
  redis.call('SET', key, string.format('%.0f', tat_us), 'PXAT', math.floor((tat_us + 999) / 1000))
end

-- lim.count_starts(starts, second, n): n more starts in that Unix second; the expiry and
-- the trim of old seconds at the first starts of each second.
function lim.count_starts(starts, second, n)
  if redis.call('HINCRBY', starts, second, n) ~= n then return end
  redis.call('EXPIRE', starts, lim.STARTS_KEPT_S)
  if redis.call('HLEN', starts) > lim.STARTS_KEPT_S then
    for _, field in ipairs(redis.call('HKEYS', starts)) do
      if tonumber(field) < second - lim.STARTS_KEPT_S then redis.call('HDEL', starts, field) end
    end
  end
end

-- lim.flush(): write what lim.defer kept, once per key.
function lim.flush()
  if not lim.pending then return end
  for key, tat_us in pairs(lim.pending.tats) do lim.write_tat(key, tat_us) end
  for _, count in pairs(lim.pending.starts) do lim.count_starts(count[1], count[2], count[3]) end
  lim.pending = nil
end

-- lim.wake_waiters(P, name): lanes blocked on a limit become due now, their consumers woken.
function lim.wake_waiters(P, name)
  local waiters = lim.base(P) .. 'waiters:' .. name
  for _, member in ipairs(redis.call('SMEMBERS', waiters)) do
    local queue, lane = split_edge(member)
    local W = keys_of_queue(P, queue)
    if redis.call('ZSCORE', lim.blocked_key(W), lane) then
      redis.call('ZADD', lim.blocked_key(W), 0, lane)
      wake(W)
    end
  end
  redis.call('DEL', waiters)
end

-- lim.release(Q, id, meta, token): a lease of a limited message ended (settled or
-- expired): free its slots and wake the lanes waiting on them. Nothing for a plain one.
function lim.release(Q, id, meta, token)
  -- ns: started holding no slot (rate limits only, see fetch)
  if type(meta.lm) ~= 'string' or not token or meta.ns then return end
  local P = prefix_of(Q)
  local holder = lim.holder(Q, id, token)
  for _, tag in ipairs(lim.tags(meta.lm)) do
    if type(tag[2]) == 'string' and type(tag[3]) == 'string' then
      if redis.call('SREM', lim.state_key(P, 'slots', tag[2], tag[3]), holder) == 1 then
        lim.wake_waiters(P, tag[2])
      end
    end
  end
end

-- lim.forget_lanes(Q): drop every lane of a queue (nothing of it is ready any more).
function lim.forget_lanes(Q)
  for _, index in ipairs({lim.lanes_key(Q), lim.blocked_key(Q)}) do
    for _, lane in ipairs(redis.call('ZRANGE', index, 0, -1)) do
      redis.call('DEL', lim.lane_key(Q, lane))
    end
    redis.call('DEL', index)
  end
  redis.call('DEL', lim.limited_key(Q))
end
