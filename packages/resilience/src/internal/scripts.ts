/**
 * Every Lua script of the package, in one place: the idempotency record's claim, renewal,
 * completion and release, and the rate limiter's GCRA decisions. Each runs with EVALSHA (one
 * round trip) through {@link LuaScript}, and touches only the keys it is given.
 */
import { LuaScript } from './lua.js'

// ---------------------------------------------------------------------------------------------
// Idempotency records. One Redis hash per idempotency key, with the fields:
//   s  state: 'p' in flight, 'd' done, 'r' released
//   f  the request's fingerprint ('' for none)
//   t  the fencing token, incremented by every claim (kept across releases)
//   l  when the lease ends (ms, Redis clock)
//   v  the stored record (JSON), once done
//   c  '<claim id>:<token>': the claim id is random, made by the claimer before it first
//      sends the claim, so a script resent after a lost reply (ioredis sends it again to a
//      promoted replica that has the first run's write) recognises the write it made itself.
//      With the token it matches only the claim it came with: a claim by an earlier version
//      of the package, which knows no 'c', moves 't' on and leaves a stale 'c' behind. Kept
//      on release.
//   g  '1' when the claim took over an expired lease, else '0' (for a resent claim's answer)
// The field names are the stored format: renaming them would orphan the records in Redis.
// Records written before 'c' existed have none: no claim id matches them, as before.
// ---------------------------------------------------------------------------------------------

/** Lua that sets `now` to Redis's clock in milliseconds. */
const REDIS_NOW_MS = `local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
`

/**
 * Claims a key. KEYS[1] the record; ARGV[1] fingerprint ('' for none), ARGV[2] lease ms,
 * ARGV[3] retention ms, ARGV[4] the claim id. Returns `{'m'}` on a fingerprint mismatch,
 * `{'d', record}` when done, `{'p', ms left on the lease}` while in flight, or
 * `{'a', token, 1 if reclaimed else 0}`. A claim in flight with this claim id is this claim,
 * run before and resent (its reply was lost): it answers `'a'` again, with the same token, and
 * starts its lease again, as the first run did.
 */
export const CLAIM_SCRIPT = new LuaScript(`${REDIS_NOW_MS}
local record = redis.call('HMGET', KEYS[1], 's', 'f', 'l', 'v', 'c', 't', 'g')
local state = record[1]
if state == 'p' and record[6] and record[5] == ARGV[4] .. ':' .. record[6] then
  redis.call('HSET', KEYS[1], 'l', now + tonumber(ARGV[2]))
  return {'a', tonumber(record[6]), tonumber(record[7]) or 0}
end
if state == 'd' or state == 'p' then
  if ARGV[1] ~= '' and record[2] and record[2] ~= '' and record[2] ~= ARGV[1] then return {'m'} end
  if state == 'd' then return {'d', record[4]} end
  local left = tonumber(record[3]) - now
  if left > 0 then return {'p', left} end
end
local token = redis.call('HINCRBY', KEYS[1], 't', 1)
local reclaimed = 0
if state == 'p' then reclaimed = 1 end
redis.call('HSET', KEYS[1], 's', 'p', 'f', ARGV[1], 'l', now + tonumber(ARGV[2]), 'c', ARGV[4] .. ':' .. token, 'g', reclaimed)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'a', token, reclaimed}
`)

/** Renews a lease. KEYS[1] the record; ARGV[1] token, ARGV[2] lease ms. Returns 1, or 0 when fenced. */
export const RENEW_SCRIPT = new LuaScript(`${REDIS_NOW_MS}
local record = redis.call('HMGET', KEYS[1], 's', 't')
if record[1] ~= 'p' or record[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'l', now + tonumber(ARGV[2]))
return 1
`)

/**
 * Completes a claim (stores the record). KEYS[1] the record; ARGV[1] token, ARGV[2] record,
 * ARGV[3] retention ms, ARGV[4] the claim id. Returns 1, or 0 when fenced. A record already
 * done by this claim (same token and claim id) with this very record is this call, run before
 * and resent: 1 again.
 */
export const COMPLETE_SCRIPT = new LuaScript(`
local record = redis.call('HMGET', KEYS[1], 's', 't', 'c', 'v')
if record[1] == 'd' and record[2] == ARGV[1] and record[3] == ARGV[4] .. ':' .. ARGV[1]
  and record[4] == ARGV[2] then
  return 1
end
if record[1] ~= 'p' or record[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 's', 'd', 'v', ARGV[2])
redis.call('HDEL', KEYS[1], 'l')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`)

/**
 * Releases a claim. KEYS[1] the record; ARGV[1] token, ARGV[2] the claim id. Returns 1, or 0
 * when fenced. A record already released by this claim (same token and claim id, not claimed
 * again since) is this call, run before and resent: 1 again. The token counter and the claim
 * id stay, so fencing holds across releases.
 */
export const RELEASE_SCRIPT = new LuaScript(`
local record = redis.call('HMGET', KEYS[1], 's', 't', 'c')
if record[1] == 'r' and record[2] == ARGV[1] and record[3] == ARGV[2] .. ':' .. ARGV[1] then
  return 1
end
if record[1] ~= 'p' or record[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 's', 'r')
redis.call('HDEL', KEYS[1], 'f', 'l', 'v', 'g')
return 1
`)

// ---------------------------------------------------------------------------------------------
// Rate limiter: GCRA on Redis's clock, in microseconds. A key holds its theoretical arrival
// time (TAT); a call of `cost` moves it `emission interval * cost` ahead, and is refused when
// that would put it more than the burst tolerance ahead of now.
// ---------------------------------------------------------------------------------------------

/**
 * One decision. KEYS[1] key; ARGV[1] emission interval µs, ARGV[2] burst tolerance µs,
 * ARGV[3] cost. Returns `remaining` (>= 0) when allowed, or `-retryAfter` in microseconds
 * (< 0) when refused: one integer, cheap to parse.
 */
export const GCRA_SCRIPT = new LuaScript(`
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + emission * tonumber(ARGV[3])
local wait = new_tat - now - tolerance
if wait > 0 then return -math.ceil(wait) end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return math.floor((tolerance - (new_tat - now)) / emission)
`)

/**
 * The same decision for many keys in one script call (one TIME). KEYS: the keys; ARGV[1]
 * emission interval µs, ARGV[2] burst tolerance µs, ARGV[2 + i] the cost of key i. Returns
 * one integer per key, as {@link GCRA_SCRIPT}.
 */
export const GCRA_BATCH_SCRIPT = new LuaScript(`
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key))
  if tat == nil or tat < now then tat = now end
  local new_tat = tat + emission * tonumber(ARGV[2 + i])
  local wait = new_tat - now - tolerance
  if wait > 0 then
    out[i] = -math.ceil(wait)
  else
    redis.call('SET', key, string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
    out[i] = math.floor((tolerance - (new_tat - now)) / emission)
  end
end
return out
`)
