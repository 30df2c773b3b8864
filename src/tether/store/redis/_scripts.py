"""Lua scripts: every multi-key change runs as one script, so it is atomic on the Redis server.

Every mutating script starts with the *fence*: ``KEYS[1]`` is the session's ownership key and
``ARGV[1]`` the value this node holds there (``"<node>:<token>"``), or ``""`` for an unfenced store.
When the value is not current any more (the lease expired, another node took the session) the
script changes nothing and replies ``TETHER_FENCED``, which the shell raises as
:class:`tether.LeaseLost`. Checking inside the script closes the gap between "check" and "act".

Outbox layout per session ``s`` (hash tags keep one session's keys in one cluster slot):

* ``<p>:ob:{s}``   stream of undelivered messages (fields t=type, p=payload, k=key, c=created,
  x=expires); consumer group ``g``; the group's pending entries list (PEL) holds messages that
  are leased or waiting out a nack delay.
* ``<p>:obm:{s}``  hash of per-message state: ``a:<id>`` attempts, ``l:<id>`` lease deadline,
  ``n:<id>`` not-before (after a nack), ``e:<id>`` last error.
* ``<p>:dead:{s}`` and ``<p>:dead`` dead-letter streams (per session and global).
* ``<p>:idem:{s}:<key>`` idempotency keys (the first put's id).
"""

from __future__ import annotations

FENCE = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('TETHER_FENCED this node no longer owns the session')
end
"""

# Shared helpers for the outbox scripts. KEYS: 1 own, 2 stream, 3 meta, 4 dead (session), 5 dead (all).
_OUTBOX_HELPERS = """
local stream, meta = KEYS[2], KEYS[3]
local function entry(id)
  local r = redis.call('XRANGE', stream, id, id)
  if #r == 0 then return nil end
  local f, kv = {}, r[1][2]
  for i = 1, #kv, 2 do f[kv[i]] = kv[i + 1] end
  return f
end
local function forget(id)
  redis.call('HDEL', meta, 'a:' .. id, 'l:' .. id, 'n:' .. id, 'e:' .. id)
end
local function release_key(f, idem_prefix, retention_ms)
  if f.k and f.k ~= '' then redis.call('PEXPIRE', idem_prefix .. f.k, retention_ms) end
end
local function die(id, f, session, reason, attempts, now, idem_prefix, retention_ms)
  redis.call('XACK', stream, 'g', id)
  redis.call('XDEL', stream, id)
  local rec = {'s', session, 'i', id, 't', f.t, 'p', f.p, 'k', f.k or '', 'c', f.c, 'r', reason,
               'a', tostring(attempts), 'd', tostring(now)}
  redis.call('XADD', KEYS[4], '*', unpack(rec))
  redis.call('XADD', KEYS[5], '*', unpack(rec))
  forget(id)
  release_key(f, idem_prefix, retention_ms)
end
"""

# KEYS: own, stream, meta, idem key, sessions set.
# ARGV: fence, session, type, payload, key, created, expires.
PUT = FENCE + """
local has_key = ARGV[5] ~= ''
if has_key then
  local old = redis.call('GET', KEYS[4])
  if old then return {old, 0} end
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], 'g', '0', 'MKSTREAM')
end
local id = redis.call('XADD', KEYS[2], '*', 't', ARGV[3], 'p', ARGV[4], 'k', ARGV[5], 'c', ARGV[6], 'x', ARGV[7])
if has_key then redis.call('SET', KEYS[4], id, 'NX') end
redis.call('SADD', KEYS[5], ARGV[2])
return {id, 1}
"""

# KEYS: own, stream, meta, dead, dead-all.
# ARGV: fence, session, consumer, n, now, lease_until, ordered, max_attempts (0: none),
#       idem_prefix, retention_ms.
LEASE = FENCE + _OUTBOX_HELPERS + """
local session, consumer, n, now = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local until_, ordered, maxa = ARGV[6], ARGV[7] == '1', tonumber(ARGV[8])
local idem_prefix, retention = ARGV[9], ARGV[10]
if redis.call('EXISTS', stream) == 0 then return {} end
local out = {}
-- 'take' | 'blocked' | 'gone'
local function consider(id, f, in_pel)
  local a = tonumber(redis.call('HGET', meta, 'a:' .. id) or '0')
  local l = tonumber(redis.call('HGET', meta, 'l:' .. id) or '0')
  local nb = tonumber(redis.call('HGET', meta, 'n:' .. id) or '0')
  local err = redis.call('HGET', meta, 'e:' .. id) or ''
  if l > now then return 'blocked' end
  if l > 0 then  -- the lease ran out without ack or nack: one failed attempt
    a = a + 1
    err = 'lease expired'
    redis.call('HSET', meta, 'a:' .. id, a, 'e:' .. id, err)
    redis.call('HDEL', meta, 'l:' .. id)
    if maxa > 0 and a >= maxa then
      die(id, f, session, 'gave up after ' .. a .. ' attempts: ' .. err, a, now, idem_prefix, retention)
      return 'gone'
    end
  end
  if nb > now then return 'blocked' end
  if f.x ~= '' and tonumber(f.x) <= now then
    die(id, f, session, 'expired', a, now, idem_prefix, retention)
    return 'gone'
  end
  if in_pel then redis.call('XCLAIM', stream, 'g', consumer, 0, id, 'JUSTID') end
  redis.call('HSET', meta, 'l:' .. id, until_)
  redis.call('HDEL', meta, 'n:' .. id)
  out[#out + 1] = {id, f.t, f.p, f.k, f.c, f.x, tostring(a), err}
  return 'take'
end
-- 1. the pending entries list: leased, or nacked and waiting; oldest first
local pel = redis.call('XPENDING', stream, 'g', '-', '+', 10000)
for _, e in ipairs(pel) do
  if #out >= n then return out end
  local id = e[1]
  local f = entry(id)
  if not f then
    redis.call('XACK', stream, 'g', id)
    forget(id)
  else
    local r = consider(id, f, true)
    if r == 'blocked' and ordered then return out end
  end
end
-- 2. new entries, never handed out before
for _ = 1, 100 do
  if #out >= n then break end
  local got = redis.call('XREADGROUP', 'GROUP', 'g', consumer, 'COUNT', n - #out, 'STREAMS', stream, '>')
  if not got or #got == 0 or #got[1][2] == 0 then break end
  for _, m in ipairs(got[1][2]) do
    local f, kv = {}, m[2]
    for i = 1, #kv, 2 do f[kv[i]] = kv[i + 1] end
    consider(m[1], f, false)
  end
end
return out
"""

# KEYS: own, stream, meta, dead, dead-all.  ARGV: fence, idem_prefix, retention_ms, ids...
ACK = FENCE + _OUTBOX_HELPERS + """
local done = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local f = entry(id)
  if f then
    redis.call('XACK', stream, 'g', id)
    redis.call('XDEL', stream, id)
    forget(id)
    release_key(f, ARGV[2], ARGV[3])
    done = done + 1
  end
end
return done
"""

# KEYS: own, stream, meta, dead, dead-all.
# ARGV: fence, session, now, delay, reason, ordered, max_attempts, idem_prefix, retention_ms, count, ids...
NACK = FENCE + _OUTBOX_HELPERS + """
local session, now, delay, reason = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local ordered, maxa, idem_prefix, retention = ARGV[6] == '1', tonumber(ARGV[7]), ARGV[8], ARGV[9]
local step = tonumber(ARGV[10])
local first = nil
for i = 11, #ARGV do
  local id = ARGV[i]
  local f = entry(id)
  if f and redis.call('HEXISTS', meta, 'l:' .. id) == 1 then
    local a = tonumber(redis.call('HGET', meta, 'a:' .. id) or '0') + step
    redis.call('HDEL', meta, 'l:' .. id)
    redis.call('HSET', meta, 'a:' .. id, a, 'e:' .. id, reason)
    if step > 0 and maxa > 0 and a >= maxa then
      die(id, f, session, 'gave up after ' .. a .. ' attempts: ' .. reason, a, now, idem_prefix, retention)
    else
      redis.call('HSET', meta, 'n:' .. id, tostring(now + delay))
    end
    if first == nil then first = id end
  end
end
-- Ordered: every later leased message of the session goes back too (no attempt counted), so
-- the run goes out again in order once the head's delay is over.
if ordered and first ~= nil then
  for _, e in ipairs(redis.call('XPENDING', stream, 'g', '(' .. first, '+', 10000)) do
    redis.call('HDEL', meta, 'l:' .. e[1])
  end
end
return 1
"""

# KEYS: own, stream, meta, dead, dead-all.  ARGV: fence, session, now, reason, idem_prefix, retention_ms, ids...
DEAD_LETTER = FENCE + _OUTBOX_HELPERS + """
local n = 0
for i = 7, #ARGV do
  local id = ARGV[i]
  local f = entry(id)
  if f then
    local a = tonumber(redis.call('HGET', meta, 'a:' .. id) or '0')
    die(id, f, ARGV[2], ARGV[4], a, tonumber(ARGV[3]), ARGV[5], ARGV[6])
    n = n + 1
  end
end
return n
"""

# KEYS: own, stream, meta, dead, dead-all.  ARGV: fence, session, now, reason, idem_prefix, retention_ms.
# Every undelivered message of the session goes to the dead letters (the session is deleted).
DEAD_LETTER_SESSION = FENCE + _OUTBOX_HELPERS + """
local n = 0
for _ = 1, 1000 do
  local r = redis.call('XRANGE', stream, '-', '+', 'COUNT', 500)
  if #r == 0 then break end
  for _, m in ipairs(r) do
    local f, kv = {}, m[2]
    for i = 1, #kv, 2 do f[kv[i]] = kv[i + 1] end
    local a = tonumber(redis.call('HGET', meta, 'a:' .. m[1]) or '0')
    die(m[1], f, ARGV[2], ARGV[4], a, tonumber(ARGV[3]), ARGV[5], ARGV[6])
    n = n + 1
  end
end
return n
"""

# KEYS: own, stream, meta.  ARGV: fence, consumer.
# A node taking a session over claims the previous owner's pending entries (XAUTOCLAIM) and gives
# their leases back at once, without counting an attempt (like Outbox.release_leases()).
TAKEOVER = FENCE + """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local cursor, n = '0-0', 0
for _ = 1, 1000 do
  local r = redis.call('XAUTOCLAIM', KEYS[2], 'g', ARGV[2], 0, cursor, 'COUNT', 100, 'JUSTID')
  for _, id in ipairs(r[2]) do
    if redis.call('HDEL', KEYS[3], 'l:' .. id) == 1 then n = n + 1 end
  end
  cursor = r[1]
  if cursor == '0-0' then break end
end
return n
"""

# KEYS: own, marks zset, cursor hash.
# ARGV: fence, message_id, now, window_count, window_age, has_cursor, offset, seq, epoch.
MARK = FENCE + """
local now, count, age = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local sc = redis.call('ZSCORE', KEYS[2], ARGV[2])
if sc and tonumber(sc) > now - age then return 0 end
redis.call('ZADD', KEYS[2], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - age)
local extra = redis.call('ZCARD', KEYS[2]) - count
if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1) end
if ARGV[6] == '1' then
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], 'u', ARGV[3], 'o', ARGV[7], 's', ARGV[8], 'e', ARGV[9])
end
return 1
"""

# KEYS: own, cursor hash.  ARGV: fence, now, offset, seq, epoch ('' = None; epoch prefixed '=').
SET_CURSOR = FENCE + """
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'u', ARGV[2], 'o', ARGV[3], 's', ARGV[4], 'e', ARGV[5])
return 1
"""

# --- ownership ----------------------------------------------------------------------------
# KEYS: own, fence counter.  ARGV: node, ttl_ms.  Returns "<node>:<token>" or false.
ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. ':' .. token
if not redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[2]) then return false end
return value
"""

# KEYS: own.  ARGV: value, ttl_ms.  Compare-and-pexpire.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: own.  ARGV: value.  Compare-and-delete.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS: nodes zset, urls hash.  ARGV: node, url, ttl_ms.  Uses the server's clock, so nodes with
# skewed clocks agree on who is alive.  Returns the live nodes.
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, n in ipairs(dead) do redis.call('HDEL', KEYS[2], n) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# KEYS: nodes zset, urls hash.  ARGV: node.
LEAVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""
