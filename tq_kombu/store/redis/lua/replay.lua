-- replay.lua: move a dead message back to ready, atomically, delivery count reset and its
-- dead-letter record (reason, failure, hostname, attempts, dead-at) dropped.
-- KEYS[1] source dead, KEYS[2] source meta, KEYS[3] source bodies,
-- KEYS[4] target ready, KEYS[5] target meta, KEYS[6] target bodies, KEYS[7] target seq,
-- KEYS[8] target marker (target = source unless replayed to another queue)
-- ARGV[1] id, ARGV[2] new priority or ""
-- Returns 1 when replayed, 0 (nothing changed) when the message was not dead or another
-- target queue already holds a message with its id.
local SEQ_SPAN = 17592186044416
local id = ARGV[1]
if not redis.call('ZSCORE', KEYS[1], id) then return 0 end
if KEYS[5] ~= KEYS[2] and redis.call('HEXISTS', KEYS[5], id) == 1 then return 0 end
redis.call('ZREM', KEYS[1], id)
local ok, meta = pcall(cjson.decode, redis.call('HGET', KEYS[2], id) or '')
if not ok or type(meta) ~= 'table' or type(meta.p) ~= 'number' then meta = {p = 5, t = '', i = ''} end
local body = redis.call('HGET', KEYS[3], id)
redis.call('HDEL', KEYS[2], id)
redis.call('HDEL', KEYS[3], id)
if ARGV[2] ~= '' then meta.p = tonumber(ARGV[2]) end
meta.n, meta.l, meta.r, meta.x, meta.f, meta.h, meta.d, meta.a = 0, nil, nil, nil, nil, nil, nil, nil
local seq = redis.call('INCR', KEYS[7])
redis.call('ZADD', KEYS[4], string.format('%.0f', (255 - meta.p) * SEQ_SPAN + seq), id)
redis.call('HSET', KEYS[5], id, cjson.encode(meta))
redis.call('HSET', KEYS[6], id, body)
redis.call('ZADD', KEYS[8], 0, 'm')
return 1
