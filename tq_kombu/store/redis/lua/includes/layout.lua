--@include "batches"
--@include "score"
--@include "meta"
--@include "now_ms"
-- ensure_layout(Q): a queue written before layout @LAYOUT_VERSION@ (or by an older tq) has
-- no kept counts, ages or task index: rebuild them from its ready set and metadata, once.
-- Writers keep them exact from then on; they may touch the structures before the
-- rebuild (it starts afresh), so only readers of counts, ages or tasks call this.
local function ensure_layout(Q)
  if redis.call('HGET', Q.counts, 'v') == '@LAYOUT_VERSION@' then return end
  redis.call('DEL', Q.counts, Q.ages, Q.tasks)
  -- a queue that holds nothing needs no rebuild (and reading one creates no key)
  if redis.call('HLEN', Q.meta) == 0 then return end
  local now = now_ms()
  local ready = redis.call('ZRANGE', Q.ready, 0, -1, 'WITHSCORES')
  local ids, scores = {}, {}
  for i = 1, #ready, 2 do
    ids[#ids + 1] = ready[i]
    scores[ready[i]] = ready[i + 1]
  end
  each_batch(ids, function(batch)
    local raws = redis.call('HMGET', Q.meta, unpack(batch))
    for j, id in ipairs(batch) do
      local priority = priority_of_score(scores[id])
      local meta = decode_meta(raws[j]) or {}
      local first_seen = type(meta.c) == 'number' and meta.c or now
      redis.call('ZADD', Q.ages, score_text(ready_score(priority, first_seen)), id)
      redis.call('HINCRBY', Q.counts, priority, 1)
    end
  end)
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', Q.meta, cursor, 'COUNT', BATCH)
    cursor = page[1]
    for j = 1, #page[2], 2 do
      local meta = decode_meta(page[2][j + 1])
      if meta and type(meta.i) == 'string' and meta.i ~= '' then
        redis.call('HSET', Q.tasks, meta.i, page[2][j])
      end
    end
  until cursor == '0'
  redis.call('HSET', Q.counts, 'v', '@LAYOUT_VERSION@')
end

-- mark_layout(Q): a queue that holds nothing yet starts in the current layout (called
-- before a message is added, so readers never rebuild a queue this tq version created).
local function mark_layout(Q)
  if redis.call('EXISTS', Q.counts) == 0 and redis.call('HLEN', Q.meta) == 0 then
    redis.call('HSET', Q.counts, 'v', '@LAYOUT_VERSION@')
  end
end
