"""The Lua scripts of :class:`stores.redis.RedisStore`.

Each script runs atomically on the Redis server, so a check (is the version ready? is the
stable version still the one the caller saw?) and the write it guards cannot be interleaved
with another client's write. Every script that moves a pointer also PUBLISHes on the pointer
channel, inside the same atomic step, so replicas hear of a flip as soon as it is visible.

Key names are always passed in ``KEYS`` (never built in Lua), so a key prefix applies to all.
Absent values travel as ``''`` and "don't check" as ``'*'`` (neither is a valid version label
or rollout record).
"""

from __future__ import annotations

from typing import Final

__all__ = ["BEAT", "BEGIN", "FINALIZE", "MOVE", "PIN", "RETIRE", "SCRIPTS", "SEAL"]

BEGIN: Final = """
-- Reserve a version for loading. KEYS: states, started, versions, seq, active.
-- ARGV: version. Returns {existing state or 'ok', current active ('' for none)}.
local state = redis.call('HGET', KEYS[1], ARGV[1])
local active = redis.call('GET', KEYS[5]) or ''
if state then return {state, active} end
local now = redis.call('TIME')
local n = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[3], n, ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], 'loading')
redis.call('HSET', KEYS[2], ARGV[1], now[1] .. '.' .. string.format('%06d', now[2]))
return {'ok', active}
"""

BEAT: Final = """
-- A publisher's heartbeat: refresh a loading version's time (server clock), so GC can tell a
-- live load from a dead publisher's. KEYS: states, started. ARGV: version.
-- Returns 1, or 0 when the version is no longer loading (GC collected it).
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'loading' then return 0 end
local now = redis.call('TIME')
redis.call('HSET', KEYS[2], ARGV[1], now[1] .. '.' .. string.format('%06d', now[2]))
return 1
"""

SEAL: Final = """
-- Mark a loaded version ready and, when asked, make it stable if the stable version is still
-- the one the publisher saw. KEYS: states, rollout, active, history.
-- ARGV: version, activate ('1'/'0'), expected active, new rollout JSON, channel, message.
-- Returns {'ok' | 'state' | 'conflict', detail}.
local state = redis.call('HGET', KEYS[1], ARGV[1])
if state ~= 'loading' then return {'state', state or ''} end
redis.call('HSET', KEYS[1], ARGV[1], 'ready')
if ARGV[2] ~= '1' then return {'ok', ''} end
local active = redis.call('GET', KEYS[3]) or ''
if active ~= ARGV[3] then return {'conflict', active} end
redis.call('SET', KEYS[2], ARGV[4])
redis.call('SET', KEYS[3], ARGV[1])
redis.call('RPUSH', KEYS[4], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {'ok', ''}
"""

MOVE: Final = """
-- Compare-and-set the rollout pointers. KEYS: states, rollout, active, history.
-- ARGV: [1] version that must be ready ('' for none), [2] expected rollout JSON ('*' any,
-- '' absent), [3] expected active ('*' any, '' none), [4] expected history length ('*' any),
-- [5] new rollout JSON, [6] new active ('' keeps it), [7] history op ('push' | 'trim' | ''),
-- [8] last history index to keep (for 'trim'), [9] channel, [10] message.
-- Returns {'ok' | 'missing' | 'conflict', current active}.
local active = redis.call('GET', KEYS[3]) or ''
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], ARGV[1]) ~= 'ready' then
  return {'missing', active}
end
if ARGV[2] ~= '*' and (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then
  return {'conflict', active}
end
if ARGV[3] ~= '*' and active ~= ARGV[3] then return {'conflict', active} end
if ARGV[4] ~= '*' and redis.call('LLEN', KEYS[4]) ~= tonumber(ARGV[4]) then
  return {'conflict', active}
end
redis.call('SET', KEYS[2], ARGV[5])
if ARGV[6] ~= '' then redis.call('SET', KEYS[3], ARGV[6]) end
if ARGV[7] == 'push' then redis.call('RPUSH', KEYS[4], ARGV[6]) end
if ARGV[7] == 'trim' then redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[8])) end
redis.call('PUBLISH', ARGV[9], ARGV[10])
return {'ok', ARGV[6] ~= '' and ARGV[6] or active}
"""

PIN: Final = """
-- Pin a tenant (or unpin it when the version is ''). KEYS: states, pins, the tenant's pin key.
-- ARGV: tenant, version, channel, message. Returns 'ok' or 'missing'.
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[3])
else
  if redis.call('HGET', KEYS[1], ARGV[2]) ~= 'ready' then return 'missing' end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('SET', KEYS[3], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 'ok'
"""

RETIRE: Final = """
-- Mark a version 'deleting' if GC may still remove it. KEYS: states, started, rollout, pins,
-- history. ARGV: version, mode ('ready' | 'partial'), cutoff (server time, for partials).
-- A ready version must not be stable, canary or pinned; a partial must still be loading and
-- older than the cutoff. Returns 1 when the version is now 'deleting', else 0.
local state = redis.call('HGET', KEYS[1], ARGV[1])
if state == 'deleting' then return 1 end
if ARGV[2] == 'ready' then
  if state ~= 'ready' then return 0 end
  local raw = redis.call('GET', KEYS[3])
  if raw then
    local rollout = cjson.decode(raw)
    if rollout.stable == ARGV[1] or rollout.canary == ARGV[1] then return 0 end
  end
  for _, pinned in ipairs(redis.call('HVALS', KEYS[4])) do
    if pinned == ARGV[1] then return 0 end
  end
  redis.call('LREM', KEYS[5], 0, ARGV[1])
else
  if state ~= 'loading' then return 0 end
  local started = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
  if started > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], 'deleting')
return 1
"""

FINALIZE: Final = """
-- Forget a version whose namespace is gone. KEYS: states, started, versions. ARGV: version.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'deleting' then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

SCRIPTS: Final = {
    "BEGIN": BEGIN,
    "BEAT": BEAT,
    "SEAL": SEAL,
    "MOVE": MOVE,
    "PIN": PIN,
    "RETIRE": RETIRE,
    "FINALIZE": FINALIZE,
}
