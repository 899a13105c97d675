"""The Lua scripts that keep ``:latest`` and ``:version`` right, each one atomic call.

Versions are unsigned 64-bit integers (SPEC §2), beyond Lua's exact doubles (2^53) and
Redis' ``INCR`` (2^63 - 1), so the scripts handle them as decimal strings: compared by length
then digits, incremented digit by digit. ``:version`` still holds a plain decimal integer.

- :data:`ALLOCATE`: the next version, above the counter, the version ``:latest`` holds and the
  caller's own floor (what it published before): versions stay monotonic even when Redis has
  lost ``:version`` (a restart without persistence, a failover to a lagging replica).
- :data:`PUBLISH`: ``PUBLISH`` the message and move ``:latest`` by the rule of
  ``common/latest.py``; refuse (publish nothing) a version ``:latest`` holds for another
  checkpoint, and an allocated version the counter has passed since (``reallocate``). A
  targeted message (``nodes``, SPEC §11) never moves ``:latest`` (a canary
  never spreads by catch-up) and so is never in conflict with it.
- :data:`RECORD`: a node records a decision it applied that ``:latest`` does not hold yet
  (a raw ``redis-cli PUBLISH``), unless ``:latest`` moved on since that message was sent;
  never a targeted message.
- :data:`RESTORE`: a node that reconnects raises ``:version`` to the version it serves and
  puts its decision back into an empty ``:latest`` (never a targeted one), and sets
  ``:epoch`` when there is none (a later reconnect that finds it gone or changed knows that
  Redis lost its data meanwhile).
- :data:`STORE_BLOB`: the publisher stores a checkpoint's bytes at ``blob:<sha256>`` and
  keeps the newest ``FKS_BLOB_KEEP`` blobs (never the one ``:latest`` names).
"""

from __future__ import annotations

__all__ = ["ALLOCATE", "PUBLISH", "RECORD", "RESTORE", "STORE_BLOB"]

_PRELUDE = r"""
local function vnorm(s)
  if type(s) ~= 'string' or not string.match(s, '^%d+$') then return nil end
  s = string.gsub(s, '^0+', '')
  if s == '' then return '0' end
  return s
end
local function vcmp(a, b)
  if #a ~= #b then if #a < #b then return -1 end return 1 end
  if a == b then return 0 end
  if a < b then return -1 end
  return 1
end
local function vinc(a)
  local out, carry = {}, 1
  for i = #a, 1, -1 do
    local d = string.byte(a, i) - 48 + carry
    if d == 10 then d = 0; carry = 1 else carry = 0 end
    out[i] = string.char(d + 48)
  end
  local s = table.concat(out)
  if carry == 1 then s = '1' .. s end
  return s
end
local function decode(raw)
  if not raw then return nil end
  local ok, obj = pcall(cjson.decode, raw)
  if ok and type(obj) == 'table' then return obj end
  return nil
end
-- the exact decimal version of a message ('0' when unversioned or unreadable)
local function version_of(raw, obj)
  if not obj then return '0' end
  local v = obj['version']
  if type(v) ~= 'number' or v < 0 or v ~= math.floor(v) then return '0' end
  if v < 9007199254740992 then return string.format('%d', v) end
  return vnorm(string.match(raw, '"version"%s*:%s*(%d+)')) or '0'
end
-- what names a checkpoint: its sha256 when both sides carry one, else its path
local function same_checkpoint(obj, sha, path)
  if not obj then return false end
  local held_sha = obj['sha256']
  if type(held_sha) == 'string' and sha ~= '' then return string.lower(held_sha) == sha end
  return obj['model_path'] == path
end
local U64_MAX = '18446744073709551615'
-- a targeted message (SPEC §11) names the nodes that consider it: it never enters :latest
local function targeted(obj)
  return obj ~= nil and obj['nodes'] ~= nil and obj['nodes'] ~= cjson.null
end
"""

ALLOCATE = (
    _PRELUDE
    + r"""
-- KEYS[1] = :version, KEYS[2] = :latest; ARGV[1] = the caller's floor (decimal)
local best = vnorm(redis.call('GET', KEYS[1])) or '0'
local raw = redis.call('GET', KEYS[2])
local held = version_of(raw, decode(raw))
if vcmp(held, best) > 0 then best = held end
local floor = vnorm(ARGV[1]) or '0'
if vcmp(floor, best) > 0 then best = floor end
if best == U64_MAX then return redis.error_reply('version space exhausted (2^64 - 1 used)') end
local v = vinc(best)
redis.call('SET', KEYS[1], v)
return v
"""
)

PUBLISH = (
    _PRELUDE
    + r"""
-- KEYS[1] = :latest, KEYS[2] = :version
-- ARGV[1] = channel, ARGV[2] = message, ARGV[3] = version (decimal), ARGV[4] = '1' if forced,
-- ARGV[5] = sha256 ('' if none), ARGV[6] = model_path, ARGV[7] = '1' if ALLOCATE just issued
-- this version (then it is newer than everything, however the counter reads),
-- ARGV[8] = '1' if the message is targeted (it never moves :latest),
-- ARGV[9] = 'SPUBLISH' for sharded pub/sub (Redis >= 7), else 'PUBLISH' (the default)
-- ARGV[10] (optional; a node announcing again what :latest held) = sha1 of that message:
-- nothing is published unless :latest holds it still
-- returns {receivers, latest moved (0/1), 'published' | 'conflict' | 'reallocate' | 'moved',
-- held path or ''}; 'reallocate' (nothing published): a version ALLOCATE issued is no longer
-- above the counter (a node that reconnected after Redis lost its data raised it meanwhile):
-- allocate again, so the checkpoint is not announced under a number the fleet has passed;
-- 'moved' (nothing published): :latest no longer holds the message of ARGV[10]
local v = vnorm(ARGV[3]) or '0'
local forced = ARGV[4] == '1'
local counter = vnorm(redis.call('GET', KEYS[2])) or '0'
if ARGV[7] == '1' and v ~= '0' and vcmp(counter, v) > 0 then return {0, 0, 'reallocate', ''} end
local raw = redis.call('GET', KEYS[1])
if ARGV[10] and ARGV[10] ~= '' and (not raw or redis.sha1hex(raw) ~= ARGV[10]) then
  return {0, 0, 'moved', ''}
end
local obj = decode(raw)
local held = version_of(raw, obj)
local move = true
if ARGV[8] == '1' then
  move = false
elseif v ~= '0' and held ~= '0' and vcmp(v, held) == 0 then
  if not same_checkpoint(obj, ARGV[5], ARGV[6]) then
    local where = ''
    if obj and type(obj['model_path']) == 'string' then where = obj['model_path'] end
    return {0, 0, 'conflict', where}
  end
  move = false
elseif not forced then
  if held ~= '0' then
    if v == '0' or vcmp(v, held) < 0 then move = false end
  elseif v ~= '0' and ARGV[7] ~= '1' and vcmp(v, counter) <= 0 then
    -- an unversioned decision (or none, after Redis lost it) stands against the versions
    -- issued before it: only a version issued after it moves :latest
    move = false
  end
end
if move then redis.call('SET', KEYS[1], ARGV[2]) end
if v ~= '0' and vcmp(counter, v) < 0 then redis.call('SET', KEYS[2], v) end
local command = 'PUBLISH'
if ARGV[9] == 'SPUBLISH' then command = 'SPUBLISH' end
local receivers = redis.call(command, ARGV[1], ARGV[2])
local moved = 0
if move then moved = 1 end
return {receivers, moved, 'published', ''}
"""
)

RECORD = (
    _PRELUDE
    + r"""
-- KEYS[1] = :latest, KEYS[2] = :version
-- ARGV[1] = the message, ARGV[2] = sha1 of what :latest held before it ('' = nothing),
-- ARGV[3] = the version it is served under (decimal: an unversioned message is served under
-- its file's), ARGV[4] = sha1 of the last message this node recorded (that one came before
-- this message too)
-- returns 0: already there, 1: recorded, -1: :latest moved on since (a newer decision),
-- -2: a targeted message (never recorded). Unless targeted, :version is raised to ARGV[3]
-- first, recorded or not: the node serves that version either way, and the next allocation
-- must come above it (as RESTORE raises it on every connect)
if targeted(decode(ARGV[1])) then return -2 end
local v = vnorm(ARGV[3]) or '0'
local counter = vnorm(redis.call('GET', KEYS[2])) or '0'
if vcmp(counter, v) < 0 then redis.call('SET', KEYS[2], v) end
local raw = redis.call('GET', KEYS[1])
if raw == ARGV[1] then return 0 end
local known = ''
if raw then known = redis.sha1hex(raw) end
if known ~= ARGV[2] and (ARGV[4] == '' or known ~= ARGV[4]) then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
)

RESTORE = (
    _PRELUDE
    + r"""
-- KEYS[1] = :version, KEYS[2] = :latest, KEYS[3] = :epoch
-- ARGV[1] = the version this node serves (decimal), ARGV[2] = its decision message ('' = none),
-- ARGV[3] = a fresh token for :epoch, set if there is none, ARGV[4] = how many of its bytes
-- to return (common/keys.EPOCH_BYTES: a token a node sets is 16; a huge value a Redis writer
-- set is not copied out)
-- returns {counter raised (0/1), :latest restored (0/1), the :epoch token's first ARGV[4] bytes}
local served = vnorm(ARGV[1]) or '0'
local counter = vnorm(redis.call('GET', KEYS[1])) or '0'
local raised, restored = 0, 0
if vcmp(counter, served) < 0 then redis.call('SET', KEYS[1], served); raised = 1 end
if ARGV[2] ~= '' and not targeted(decode(ARGV[2])) and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], ARGV[2]); restored = 1
end
redis.call('SET', KEYS[3], ARGV[3], 'NX')
return {raised, restored, redis.call('GETRANGE', KEYS[3], 0, tonumber(ARGV[4]) - 1)}
"""
)

STORE_BLOB = (
    _PRELUDE
    + r"""
-- KEYS[1] = blob:<sha256>, KEYS[2] = blobs (sorted set), KEYS[3] = :latest
-- ARGV[1] = the bytes, ARGV[2] = sha256, ARGV[3] = how many to keep, ARGV[4] = the blob key
-- prefix, ARGV[5] = the score (the publisher's clock, ms)
-- returns the number of blobs evicted
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2])
local keep = tonumber(ARGV[3])
local count = redis.call('ZCARD', KEYS[2])
if count <= keep then return 0 end
local held = ''
local obj = decode(redis.call('GET', KEYS[3]))
if obj and type(obj['model_path']) == 'string' then
  held = string.match(obj['model_path'], '^redis%-blob:(%x+)$') or ''
end
local evicted = 0
for _, sha in ipairs(redis.call('ZRANGE', KEYS[2], 0, count - keep - 1)) do
  if sha ~= held and sha ~= ARGV[2] then
    redis.call('DEL', ARGV[4] .. sha)
    redis.call('ZREM', KEYS[2], sha)
    evicted = evicted + 1
  end
end
return evicted
"""
)
