-- polyhost kv ops: a list of reads and writes run in order, each with its own reply, the
-- replies together bounded in bytes. Used for `kv.pipeline` and for every read whose
-- answer can be large (get, hget, hgetall, ranges, get-many), so that an answer larger than
-- the plugin's `max_result_bytes` is refused here, in Redis, before it is sent: the host
-- never buffers more than the cap.
--
-- KEYS[i]     the key of op i (the host checked it against the grant)
-- ARGV[1]     the byte budget of the replies (limits.max_result_bytes)
-- ARGV[2]     the most members one range may return
-- ARGV[3]     the most members the whole list may examine (bounds the script's run time)
-- ARGV[4..]   per op: its name, how many arguments follow, the arguments
--
-- Returns one entry per op: {'ok', reply}, {'err', message} (the op failed in Redis; the
-- others still ran) or {'big', message} (its answer would exceed a bound; it was not read).
-- Integer replies that may exceed 2^53 (INCRBY, HINCRBY) are returned as strings, since a
-- Lua number would round them.

local cap = tonumber(ARGV[1])
local max_range = tonumber(ARGV[2])
local max_examined = tonumber(ARGV[3])
local used, examined = 0, 0
-- What each entry of a reply costs beyond its bytes, so that many empty items still count.
local ITEM = 8

local function failed(r)
  return type(r) == 'table' and r.err ~= nil
end

-- Counts `n` bytes of replies; false (and nothing counted) when they would exceed the cap.
local function take(n)
  if used + n > cap then
    return false
  end
  used = used + n
  return true
end

local function over(what, n)
  return { 'big', what .. ': ' .. string.format('%.0f', n) .. ' bytes would exceed limits.max_result_bytes (' .. ARGV[1] .. ' bytes)' }
end

local function too_many(n)
  return { 'big', string.format('%.0f', n) .. ' members exceed the host bound of ' .. ARGV[2] .. ' per range; ask for fewer (a limit, a narrower range)' }
end

local function examine(n)
  examined = examined + n
  return examined <= max_examined
end

local function size_of(list)
  local n = 0
  for _, v in ipairs(list) do
    n = n + #v + ITEM
  end
  return n
end

local ops = {}

-- Reads, each measured before it is fetched.
ops.get = function(key)
  local n = redis.pcall('STRLEN', key)
  if failed(n) then return { 'err', n.err } end
  if not take(n + ITEM) then return over('the value', n) end
  return { 'ok', redis.call('GET', key) }
end

ops.hget = function(key, field)
  local n = redis.pcall('HSTRLEN', key, field)
  if failed(n) then return { 'err', n.err } end
  if not take(n + ITEM) then return over('the field', n) end
  return { 'ok', redis.call('HGET', key, field) }
end

ops.hgetall = function(key)
  local len = redis.pcall('HLEN', key)
  if failed(len) then return { 'err', len.err } end
  if len > max_range then return too_many(len) end
  if not examine(len) then return too_many(examined) end
  local fields = redis.call('HKEYS', key)
  local n = 0
  for _, f in ipairs(fields) do
    n = n + #f + redis.call('HSTRLEN', key, f) + 2 * ITEM
  end
  if not take(n) then return over('the hash', n) end
  return { 'ok', redis.call('HGETALL', key) }
end

-- ZRANGE by rank: `start` and `stop` as Redis takes them, resolved here to count members.
ops.zrange = function(key, start, stop, rev)
  local card = redis.pcall('ZCARD', key)
  if failed(card) then return { 'err', card.err } end
  local s, e = tonumber(start), tonumber(stop)
  if s < 0 then s = card + s end
  if e < 0 then e = card + e end
  if s < 0 then s = 0 end
  if e >= card then e = card - 1 end
  local count = e - s + 1
  if count <= 0 then return { 'ok', {} } end
  if count > max_range then return too_many(count) end
  if not examine(count) then return too_many(examined) end
  local r
  if rev == '1' then
    r = redis.call('ZRANGE', key, string.format('%d', s), string.format('%d', e), 'REV', 'WITHSCORES')
  else
    r = redis.call('ZRANGE', key, string.format('%d', s), string.format('%d', e), 'WITHSCORES')
  end
  local n = size_of(r)
  if not take(n) then return over('the range', n) end
  return { 'ok', r }
end

-- ZRANGE BYSCORE from `lo` to `hi` (highest first from `hi` with rev), at most `limit`
-- members ('' for no limit: then more than the bound is refused rather than cut short).
ops.zrangebyscore = function(key, lo, hi, rev, limit)
  local want = max_range + 1
  if limit ~= '' then want = tonumber(limit) end
  local r
  if rev == '1' then
    r = redis.pcall('ZRANGE', key, lo, hi, 'BYSCORE', 'REV', 'LIMIT', '0', string.format('%d', want), 'WITHSCORES')
  else
    r = redis.pcall('ZRANGE', key, lo, hi, 'BYSCORE', 'LIMIT', '0', string.format('%d', want), 'WITHSCORES')
  end
  if failed(r) then return { 'err', r.err } end
  local count = #r / 2
  if count > max_range then return too_many(count) end
  if not examine(count) then return too_many(examined) end
  local n = size_of(r)
  if not take(n) then return over('the range', n) end
  return { 'ok', r }
end

-- Small answers: counted as one item.
local function small(cmd)
  return function(key, ...)
    local r = redis.pcall(cmd, key, ...)
    if failed(r) then return { 'err', r.err } end
    if not take(ITEM + (type(r) == 'string' and #r or 0)) then return over(cmd, ITEM) end
    return { 'ok', r }
  end
end

-- Writes with a list of items (`step` arguments each), sent in chunks: Lua's `unpack`
-- cannot spread more than a few thousand values. The script runs whole, so the chunks are
-- as atomic as one command; a key of the wrong type fails the first chunk, before any
-- change. Replies are the summed counts.
local CHUNK = 1000
local function variadic(cmd, step)
  return function(key, first, ...)
    -- Called with the arguments spread, or (when there are many) as one table.
    local args = first
    if type(first) ~= 'table' then args = { first, ... } end
    local total = 0
    for i = 1, #args, CHUNK * step do
      local last = math.min(#args, i + CHUNK * step - 1)
      local r = redis.pcall(cmd, key, unpack(args, i, last))
      if failed(r) then return { 'err', r.err } end
      total = total + r
    end
    take(ITEM)
    return { 'ok', total }
  end
end
ops.zscore = small('ZSCORE')
ops.zrank = small('ZRANK')
ops.zrevrank = small('ZREVRANK')
ops.zcard = small('ZCARD')
ops.pttl = small('PTTL')
ops.exists = small('EXISTS')

-- Writes: the host checked their keys, values and numbers.
ops.set = function(key, value, px)
  local r
  if px then
    r = redis.pcall('SET', key, value, 'PX', px)
  else
    r = redis.pcall('SET', key, value)
  end
  if failed(r) then return { 'err', r.err } end
  take(ITEM)
  return { 'ok', 1 }
end
ops.del = small('DEL')
ops.pexpire = small('PEXPIRE')
ops.hset = variadic('HSET', 2)
ops.hdel = variadic('HDEL', 1)
ops.zadd = variadic('ZADD', 2)
ops.zincrby = small('ZINCRBY')
ops.zrem = variadic('ZREM', 1)
-- The new value read back as a string: exact past 2^53.
ops.incrby = function(key, delta)
  local r = redis.pcall('INCRBY', key, delta)
  if failed(r) then return { 'err', r.err } end
  take(ITEM)
  return { 'ok', redis.call('GET', key) }
end
ops.hincrby = function(key, field, delta)
  local r = redis.pcall('HINCRBY', key, field, delta)
  if failed(r) then return { 'err', r.err } end
  take(ITEM)
  return { 'ok', redis.call('HGET', key, field) }
end

local out = {}
local a = 4
for i = 1, #KEYS do
  local name, n = ARGV[a], tonumber(ARGV[a + 1])
  local f = ops[name]
  if f == nil or n == nil then
    return redis.error_reply('polyhost ops: unknown op ' .. tostring(name))
  end
  if n > CHUNK then
    -- Only the variadic writes take this many; they chunk the arguments themselves.
    local args = {}
    for j = 1, n do args[j] = ARGV[a + 1 + j] end
    out[i] = f(KEYS[i], args)
  else
    out[i] = f(KEYS[i], unpack(ARGV, a + 2, a + 1 + n))
  end
  a = a + 2 + n
end
return out
