#!lua name=ffbench_floor
-- The Lua floor of the bench (`valkey-lua`): the least a queue built of Valkey functions does
-- for a task that is leased and fenced, as the engine's executions are. A task is a hash
-- (state, epoch, lease expiry, worker, payload) on a ready list; a claim pops ids, bumps each
-- epoch and records the lease in a lease-expiry sorted set; an ack checks the fence (state,
-- epoch, lease not expired, on the server's clock), marks the task done and moves it from the
-- lease set to a retention set, and may claim the worker's next tasks in the same call.
--
-- Nothing else: no partitions, no priorities, no lanes or capabilities, no attempts, no
-- timeouts or deadlines, no flows, no wake-up hints, no validation of arguments. What the
-- engine does on top of this floor is its own cost; what this floor costs above the bare list
-- queue is the price of doing durable leases with functions at all.
--
-- Every function takes the key prefix as KEYS[1] (the bench runs it on a standalone server).

-- `redis.call` as a local (a global lookup per use costs more than many commands). It does not
-- exist while the library loads: each function binds it when it runs.
local call

local function now_ms()
  local t = call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end

-- Claims up to n ready tasks for `worker` with a lease of `ttl` ms; appends id, epoch and
-- payload of each to R.
local function claim_into(p, R, worker, n, ttl, now)
  local ids = call('LPOP', p .. 'ready', n)
  if not ids then return end
  local expiry = now + ttl
  local leases = {}
  for i = 1, #ids do
    local u = ids[i]
    local xk = p .. 'x:' .. u
    local v = call('HMGET', xk, 'ep', 'p')
    local epoch = (tonumber(v[1]) or 0) + 1
    call('HSET', xk, 'st', 'running', 'ep', epoch, 'le', expiry, 'wk', worker)
    R[#R + 1] = u
    R[#R + 1] = epoch
    R[#R + 1] = v[2]
    leases[#leases + 1] = expiry
    leases[#leases + 1] = u
  end
  call('ZADD', p .. 'leases', unpack(leases))
end

-- ARGV: id, payload. Reply: the ready list's length.
local function push(keys, a)
  call = redis.call
  local p = keys[1]
  call('HSET', p .. 'x:' .. a[1], 'st', 'ready', 'p', a[2])
  return call('RPUSH', p .. 'ready', a[1])
end

-- ARGV: worker, most tasks, lease ms. Reply: 'ok', then id, epoch, payload per task.
local function claim(keys, a)
  call = redis.call
  local R = { 'ok' }
  claim_into(keys[1], R, a[1], tonumber(a[2]), tonumber(a[3]), now_ms())
  return R
end

-- ARGV: id, epoch, most tasks to claim next (0: none), worker, lease ms. Reply: 'ok' or
-- 'fenced', then id, epoch, payload per claimed task.
local function ack(keys, a)
  call = redis.call
  local p = keys[1]
  local now = now_ms()
  local u = a[1]
  local xk = p .. 'x:' .. u
  local v = call('HMGET', xk, 'st', 'ep', 'le')
  local R
  if v[1] == 'running' and v[2] == a[2] and now < tonumber(v[3]) then
    call('HSET', xk, 'st', 'done', 'fa', now)
    call('ZREM', p .. 'leases', u)
    call('ZADD', p .. 'done', now, u)
    R = { 'ok' }
  else
    R = { 'fenced' }
  end
  local n = tonumber(a[3])
  if n > 0 then claim_into(p, R, a[4], n, tonumber(a[5]), now) end
  return R
end

redis.register_function('ffbench_push', push)
redis.register_function('ffbench_claim', claim)
redis.register_function('ffbench_ack', ack)
