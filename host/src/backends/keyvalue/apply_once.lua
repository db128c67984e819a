-- polyhost kv.apply-once: run lists of writes once per dedupe key, each all or none.
--
-- Entries are taken in order; entry e is a dedupe key and its commands.
-- KEYS        per entry: its dedupe key (in the host's namespace), then the key of each
--             of its commands
-- ARGV[1]     the dedupe keys' TTL in milliseconds
-- ARGV[2]     how many entries
-- ARGV[3..]   per entry: how many commands, then per command its op and its arguments
--             (how many: ARITY[op])
--
-- Returns one answer per entry: 0 when its dedupe key was already there (a replay: nothing
-- ran), 1 when every command ran, or {i, reason} when command i would fail: then nothing of
-- the entry ran and its dedupe key is released, so a corrected retry can apply. An entry's
-- answer does not depend on the others' except through the state they leave.
--
-- Redis runs a script without interleaving, but does not roll back: a command failing
-- half-way would leave the ones before it applied. So every command of an entry is first
-- simulated against the keys' types and integer values (the only things that make these
-- commands fail once the host has checked their arguments), and only then are they applied.

local ARITY = {
  set = 1, setpx = 2, del = 0, incrby = 1, pexpire = 1, hset = 2, hincrby = 2,
  hdel = 1, zadd = 2, zincrby = 2, zrem = 1,
}
-- The type an op needs its key to hold ('none', a missing key, always does).
local NEEDS = {
  incrby = 'string', hset = 'hash', hincrby = 'hash', hdel = 'hash',
  zadd = 'zset', zincrby = 'zset', zrem = 'zset',
}
-- The type the key holds after the op (nil: unchanged; HDEL and ZREM may empty a key,
-- which is then treated as still holding its type: a refusal at worst, never a failure).
local MAKES = {
  set = 'string', setpx = 'string', del = 'none', incrby = 'string',
  hset = 'hash', hincrby = 'hash', zadd = 'zset', zincrby = 'zset',
}
-- Lua numbers are doubles: a sum within this bound is certainly within a signed 64-bit
-- integer, whatever the rounding (a value within 4096 of the limit is refused).
local LIMIT = 2 ^ 63 - 4096


-- What INCRBY and HINCRBY accept: Redis's own integer syntax.
local function integer(s)
  if s == '0' or (string.len(s) <= 20 and string.find(s, '^%-?[1-9]%d*$')) then
    local n = tonumber(s)
    if math.abs(n) < LIMIT then
      return n
    end
  end
  return false
end

-- Simulates, then applies, one entry's `ops` (its dedupe key already set); returns 1, or
-- {i, reason} (the dedupe key then released).
local function apply(dedupe, ops)
  local function refuse(i, reason)
    redis.call('DEL', dedupe)
    return { i, reason }
  end

  -- The simulated state: each key's type, the integer in a string key (false: not an
  -- integer), the integers in a hash's fields, and which keys were emptied by the script.
  local types, ints, fields, cleared = {}, {}, {}, {}

  local function type_of(key)
    if types[key] == nil then
      types[key] = redis.call('TYPE', key).ok
    end
    return types[key]
  end

  local function int_of(key)
    if ints[key] == nil then
      if type_of(key) == 'none' then
        ints[key] = 0
      else
        ints[key] = integer(redis.call('GET', key))
      end
    end
    return ints[key]
  end

  local function fields_of(key)
    if fields[key] == nil then
      fields[key] = {}
    end
    return fields[key]
  end

  local function field_of(key, field)
    local f = fields_of(key)
    if f[field] == nil then
      if cleared[key] or type_of(key) == 'none' then
        f[field] = 0
      else
        f[field] = integer(redis.call('HGET', key, field) or '0')
      end
    end
    return f[field]
  end

  local function clear(key)
    ints[key] = 0
    fields[key] = {}
    cleared[key] = true
  end

  for i, c in ipairs(ops) do
    local key, op, args = c.key, c.op, c.args
    local need, has = NEEDS[op], type_of(key)
    if need and has ~= 'none' and has ~= need then
      return refuse(i, 'the key holds a ' .. has .. ', not a ' .. need)
    end
    if op == 'incrby' then
      local v = int_of(key)
      if not v then
        return refuse(i, 'the value is not an integer')
      end
      local r = v + tonumber(args[1])
      if math.abs(r) >= LIMIT then
        return refuse(i, 'the result would overflow a 64-bit integer')
      end
      ints[key] = r
    elseif op == 'hincrby' then
      local v = field_of(key, args[1])
      if not v then
        return refuse(i, 'the field does not hold an integer')
      end
      local r = v + tonumber(args[2])
      if math.abs(r) >= LIMIT then
        return refuse(i, 'the result would overflow a 64-bit integer')
      end
      fields_of(key)[args[1]] = r
    elseif op == 'set' or op == 'setpx' then
      clear(key)
      ints[key] = integer(args[1])
    elseif op == 'del' or (op == 'pexpire' and tonumber(args[1]) == 0) then
      clear(key)
      types[key] = 'none'
    elseif op == 'hset' then
      fields_of(key)[args[1]] = integer(args[2])
    elseif op == 'hdel' then
      fields_of(key)[args[1]] = 0
    end
    if MAKES[op] then
      types[key] = MAKES[op]
    end
  end

  for _, c in ipairs(ops) do
    local key, op, args = c.key, c.op, c.args
    if op == 'set' then
      redis.call('SET', key, args[1])
    elseif op == 'setpx' then
      redis.call('SET', key, args[1], 'PX', args[2])
    elseif op == 'del' then
      redis.call('DEL', key)
    elseif op == 'incrby' then
      redis.call('INCRBY', key, args[1])
    elseif op == 'pexpire' then
      redis.call('PEXPIRE', key, args[1])
    elseif op == 'hset' then
      redis.call('HSET', key, args[1], args[2])
    elseif op == 'hincrby' then
      redis.call('HINCRBY', key, args[1], args[2])
    elseif op == 'hdel' then
      redis.call('HDEL', key, args[1])
    elseif op == 'zadd' then
      redis.call('ZADD', key, args[1], args[2])
    elseif op == 'zincrby' then
      redis.call('ZINCRBY', key, args[1], args[2])
    elseif op == 'zrem' then
      redis.call('ZREM', key, args[1])
    end
  end
  return 1
end

local ttl, count = ARGV[1], tonumber(ARGV[2])

-- Every entry read before anything is written: an op the script does not know (a host
-- bug) fails the call whole, with nothing applied.
local entries = {}
local k, a = 1, 3
for e = 1, count do
  local n_ops = tonumber(ARGV[a])
  a = a + 1
  local ops = {}
  for i = 1, n_ops do
    local op = ARGV[a]
    local n = ARITY[op]
    if n == nil then
      return redis.error_reply('ERR polyhost apply-once: unknown op ' .. tostring(op))
    end
    ops[i] = { op = op, key = KEYS[k + i], args = { unpack(ARGV, a + 1, a + n) } }
    a = a + 1 + n
  end
  entries[e] = { dedupe = KEYS[k], ops = ops }
  k = k + 1 + n_ops
end

local out = {}
for e, entry in ipairs(entries) do
  if redis.call('SET', entry.dedupe, '1', 'NX', 'PX', ttl) then
    out[e] = apply(entry.dedupe, entry.ops)
  else
    out[e] = 0
  end
end
return out
