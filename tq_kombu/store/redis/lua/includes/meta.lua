-- A message's metadata (hash meta: id -> JSON): p priority, n delivery count, t task
-- name, i task id, c first seen (ms), e eta (ms), l lease token, lm limit lane and ns
-- (started under limits holding no slot: see includes/limits); when dead: r reason,
-- x detail, f sealed failure (base64), h hostname, d dead at (ms), a attempts.

-- decode_meta(raw): the record as a table, or nil when it is missing or not a JSON object.
local function decode_meta(raw)
  if not raw then return nil end
  local ok, meta = pcall(cjson.decode, raw)
  if ok and type(meta) == 'table' then return meta end
  return nil
end

-- load_meta(Q, id): the checked record, or nil, why it cannot be used, and its readable part.
local function load_meta(Q, id)
  local raw = redis.call('HGET', Q.meta, id)
  if not raw then return nil, 'its metadata record is missing', {} end
  local meta = decode_meta(raw)
  if not meta then
    return nil, 'its metadata record is not valid JSON (' .. #raw .. ' bytes)', {}
  end
  if type(meta.p) ~= 'number' or meta.p < 0 or meta.p > @MAX_PRIORITY@ then
    return nil, 'its metadata record has no priority in 0..@MAX_PRIORITY@', meta
  end
  for _, field in ipairs({'n', 'c', 'e'}) do
    if meta[field] ~= nil and type(meta[field]) ~= 'number' then
      return nil, 'its metadata field ' .. field .. ' is not a number', meta
    end
  end
  return meta
end

local function save_meta(Q, id, meta) redis.call('HSET', Q.meta, id, cjson.encode(meta)) end
