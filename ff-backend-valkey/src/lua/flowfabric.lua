#!lua name=flowfabric
-- FlowFabric function library (one FCALL per backend operation).
--
-- Every partition function gets the partition prefix `ff:<ns>:{fp:N}:` as KEYS[1] and derives
-- every key it touches from it, so all keys of a call share one cluster slot. Functions
-- validate everything before their first write (a Lua error does not roll back). Numbers
-- written to the server always go through `n2s` (Lua would print large numbers in
-- exponent notation); timestamps are integral milliseconds of the server's TIME plus the
-- client's clock offset (ARGV[1]).
--
-- Replies are arrays whose first element is a status: 'ok', or an error kind the client maps
-- to an EngineError ('notfound', 'fenced', 'notactive', 'conflict', 'validation').

local VERSION = '__FF_VERSION__'

local L = {}

-- Terminal transitions whose out-degree is at most this are cascaded inside the call.
local INLINE_LIMIT = 32
-- Most edges one call applies inline (derived completions beyond it stay pending).
local EDGE_BUDGET = 1024
-- Edges one cascade_completion call visits.
local CASCADE_CHUNK = 256
-- Members one cancel_flow call cancels before deferring the rest to the cancel backlog.
local CANCEL_CHUNK = 512
-- Values up to this many bytes stay inside the execution hash (keeps it a listpack).
local INLINE_BLOB = 63
-- Ready score = (MAX_PRIORITY - priority) * 2^42 + sequence: exact in a double.
local MAX_PRIORITY = 1000
local SEQ_SPAN = 4398046511104

local TERMINAL = { succeeded = true, failed = true, cancelled = true, expired = true, skipped = true }
local STATE_OF = {
  completed = 'succeeded', attempts_exhausted = 'failed', non_retryable = 'failed',
  cancelled_by_user = 'cancelled', cancelled_by_flow = 'cancelled', cancelled_by_group = 'cancelled',
  deadline_exceeded = 'expired', dependency_impossible = 'skipped',
}
local FAILS_FLOW = {
  attempts_exhausted = true, non_retryable = true, cancelled_by_user = true,
  deadline_exceeded = true, dependency_impossible = true,
}
local BUCKET = { succeeded = 'success', skipped = 'skip', failed = 'failure', cancelled = 'failure', expired = 'failure' }

local function n2s(x)
  return string.format('%.0f', x)
end

local function split(s, sep)
  local out = {}
  if s == nil or s == false or s == '' then return out end
  local start = 1
  while true do
    local i = string.find(s, sep, start, true)
    if not i then
      table.insert(out, string.sub(s, start))
      return out
    end
    table.insert(out, string.sub(s, start, i - 1))
    start = i + #sep
  end
end

-- ------------------------------------------------------------------ context and keys

-- `clock` is the client's clock offset in ms, or '@<ms>' for a frozen test clock, followed on
-- a standalone server by '|<root>': the key root of the deployment, whose lane indexes
-- (`<root>{lane:<lane>}:parts`) the function then keeps in step itself.
function L.ctx(prefix, clock)
  local now
  local li = nil
  local bar = string.find(clock, '|', 1, true)
  if bar then
    li = string.sub(clock, bar + 1)
    clock = string.sub(clock, 1, bar - 1)
  end
  if string.sub(clock, 1, 1) == '@' then
    now = tonumber(string.sub(clock, 2))
  else
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(clock)
  end
  return { p = prefix, now = now, hints = {}, hintkeys = {}, hint_order = {}, queue = {}, budget = EDGE_BUDGET,
           flows = {}, pending = 0, li = li, touched = {}, touched_order = {}, pub = {}, pubset = {} }
end

-- Queues a wake-up hint for the current partition's channel: 'w|<lane>' (work ready),
-- 'f|<flow>' (flow finished), 'c' (completion pending). Published by L.flush.
function L.note(c, msg)
  if not c.pubset[msg] then
    c.pubset[msg] = true
    table.insert(c.pub, msg)
  end
end

-- Publishes the queued hints of the current partition: shard channel on a cluster, plain
-- channel on a standalone server (same name; hints are lossy wake-ups either way). A
-- work-ready hint is dropped when the same call already took the work again.
function L.publish(c)
  local ch = c.p .. 'hints'
  local cmd = 'SPUBLISH'
  if c.li then cmd = 'PUBLISH' end
  for _, msg in ipairs(c.pub) do
    local send = true
    if string.sub(msg, 1, 2) == 'w|' then
      send = L.lane_status(c, string.sub(msg, 3))[1] > 0
    end
    if send then redis.call(cmd, ch, msg) end
  end
  c.pub = {}
  c.pubset = {}
end

-- The partition number of prefix `p` ('...{fp:N}:').
function L.partition_of(p)
  return string.match(p, '{fp:(%d+)}')
end

-- Standalone: sets this partition's entry in the lane's index from its exact status.
function L.sync_lane(c, lane)
  local key = c.li .. '{lane:' .. lane .. '}:parts'
  local part = L.partition_of(c.p)
  local ls = L.lane_status(c, lane)
  if ls[1] > 0 then
    redis.call('ZADD', key, 0, part)
  elseif ls[2] >= 0 then
    redis.call('ZADD', key, n2s(ls[2]), part)
  else
    redis.call('ZREM', key, part)
  end
end

function L.touch(c, lane)
  if not c.touched[lane] then
    c.touched[lane] = true
    table.insert(c.touched_order, lane)
  end
end

-- Standalone: syncs every lane this call touched on the current partition.
function L.sync_touched(c)
  if not c.li then return end
  for _, lane in ipairs(c.touched_order) do L.sync_lane(c, lane) end
  c.touched = {}
  c.touched_order = {}
end

function L.xk(c, u) return c.p .. 'x:' .. u end
function L.fk(c, f) return c.p .. 'f:' .. f end
function L.ek(c, f) return c.p .. 'f:' .. f .. ':edges' end
function L.capsk(c, lane) return c.p .. 'caps:' .. lane end
function L.dlk(c, lane) return c.p .. 'delayed:' .. lane end
function L.readyk(c, lane, cid)
  if cid == nil or cid == false or cid == '' then return c.p .. 'ready:' .. lane end
  return c.p .. 'ready:' .. lane .. '#' .. cid
end

-- A lane-index update for the client: the lane has work claimable from `score` on.
-- `rk` is the ready set that became non-empty (the hint is dropped if the same call emptied it
-- again, as a chain's claim_next does).
function L.hint(c, lane, score, rk)
  if score == 0 then L.note(c, 'w|' .. lane) end
  L.index_hint(c, lane, score, rk)
end

-- The lane-index half of L.hint, without a wake-up.
function L.index_hint(c, lane, score, rk)
  if c.li then
    L.touch(c, lane)
    return
  end
  local cur = c.hints[lane]
  if cur == nil then
    table.insert(c.hint_order, lane)
    c.hints[lane] = score
    c.hintkeys[lane] = rk
  elseif score < cur then
    c.hints[lane] = score
    c.hintkeys[lane] = rk
  end
end

function L.hint_reply(c)
  L.sync_touched(c)
  L.publish(c)
  local out = {}
  for _, lane in ipairs(c.hint_order) do
    local rk = c.hintkeys[lane]
    if not (rk and redis.call('ZCARD', rk) == 0 and L.lane_status(c, lane)[1] == 0) then
      table.insert(out, lane)
      table.insert(out, c.hints[lane])
    end
  end
  table.insert(out, '#flows')
  for _, f in ipairs(c.flows) do table.insert(out, f) end
  table.insert(out, '#pending')
  table.insert(out, c.pending)
  return out
end

function L.load(c, u)
  local r = redis.call('HGETALL', L.xk(c, u))
  if #r == 0 then return nil end
  local e = {}
  for i = 1, #r, 2 do e[r[i]] = r[i + 1] end
  e.u = u
  return e
end

function L.status(e)
  return { e.st, tonumber(e.ep), tonumber(e.at), e.er or '' }
end

-- ------------------------------------------------------------------ blobs

-- Small values live in the hash field (prefixed 'i'); larger ones in their own key (field 'b').
function L.put_blob(c, u, field, suffix, value)
  local xk = L.xk(c, u)
  if value == nil then
    redis.call('HDEL', xk, field)
    redis.call('DEL', xk .. suffix)
  elseif #value <= INLINE_BLOB then
    local old = redis.call('HGET', xk, field)
    if old == 'b' then redis.call('DEL', xk .. suffix) end
    redis.call('HSET', xk, field, 'i' .. value)
  else
    redis.call('SET', xk .. suffix, value)
    redis.call('HSET', xk, field, 'b')
  end
end

function L.get_blob(c, u, v, suffix)
  if v == nil or v == false then return nil end
  if string.sub(v, 1, 1) == 'i' then return string.sub(v, 2) end
  local b = redis.call('GET', L.xk(c, u) .. suffix)
  if not b then return '' end
  return b
end

-- ------------------------------------------------------------------ ready / delayed

function L.ready_score(pr, seq)
  return (MAX_PRIORITY - tonumber(pr)) * SEQ_SPAN + seq
end

function L.make_ready(c, u, lane, cid, pr, seq)
  if seq == nil then seq = redis.call('INCR', c.p .. 'seq') end
  redis.call('HSET', L.xk(c, u), 'st', 'ready', 'sq', n2s(seq))
  redis.call('HDEL', L.xk(c, u), 'aa')
  L.enter_ready(c, u, lane, cid, pr, seq)
end

-- Adds u to its ready set (the hash already says 'ready').
function L.enter_ready(c, u, lane, cid, pr, seq)
  local rk = L.readyk(c, lane, cid)
  redis.call('ZADD', rk, n2s(L.ready_score(pr, seq)), u)
  if redis.call('ZCARD', rk) == 1 then
    L.hint(c, lane, 0, rk)
    redis.call('SADD', c.p .. 'lanes', lane)
  end
end

function L.make_delayed(c, u, lane, at)
  redis.call('HSET', L.xk(c, u), 'st', 'delayed', 'aa', n2s(at))
  redis.call('ZADD', c.p .. 'delayed', n2s(at), u)
  redis.call('ZADD', L.dlk(c, lane), n2s(at), u)
  redis.call('SADD', c.p .. 'lanes', lane)
  L.hint(c, lane, at)
end

-- Eligible now (ready) or after `delay` ms (delayed).
function L.make_eligible(c, u, lane, cid, pr, delay, seq)
  if delay > 0 then
    L.make_delayed(c, u, lane, c.now + delay)
  else
    L.make_ready(c, u, lane, cid, pr, seq)
  end
end

function L.promote(c, u)
  local e = redis.call('HMGET', L.xk(c, u), 'st', 'ln', 'ci', 'pr')
  redis.call('ZREM', c.p .. 'delayed', u)
  if e[1] ~= 'delayed' then
    if e[2] then redis.call('ZREM', L.dlk(c, e[2]), u) end
    return false
  end
  redis.call('ZREM', L.dlk(c, e[2]), u)
  L.make_ready(c, u, e[2], e[3], e[4], nil)
  return true
end

-- Ready and earliest-delayed work of a lane on this partition.
function L.lane_status(c, lane)
  local ready = redis.call('ZCARD', L.readyk(c, lane, ''))
  local cids = redis.call('HKEYS', L.capsk(c, lane))
  for _, cid in ipairs(cids) do ready = ready + redis.call('ZCARD', L.readyk(c, lane, cid)) end
  local d = redis.call('ZRANGE', L.dlk(c, lane), 0, 0, 'WITHSCORES')
  local nextd = -1
  if d[1] then nextd = tonumber(d[2]) end
  return { ready, nextd }
end

-- ------------------------------------------------------------------ retry backoff

-- The same formula as RetryPolicy::delay_after (square-and-multiply power, as powi), in ms
-- rounded up. bk is 'f:<secs>:<nanos>' or 'e:<isecs>:<inanos>:<factor>:<msecs>:<mnanos>:<jitter>'.
function L.backoff_ms(bk, attempt, rnd)
  local p = split(bk, ':')
  if p[1] == 'f' then
    return tonumber(p[2]) * 1000 + math.ceil(tonumber(p[3]) / 1000000)
  end
  local initial = tonumber(p[2]) + tonumber(p[3]) / 1e9
  local factor = tonumber(p[4])
  local maxs = tonumber(p[5]) + tonumber(p[6]) / 1e9
  local jitter = tonumber(p[7])
  local r, a, b = 1.0, factor, attempt - 1
  if b < 0 then b = 0 end
  while true do
    if b % 2 == 1 then r = r * a end
    b = math.floor(b / 2)
    if b == 0 then break end
    a = a * a
  end
  local grown = initial * r
  local capped
  if grown ~= grown or grown == math.huge then capped = maxs else capped = math.min(grown, maxs) end
  if rnd ~= rnd then rnd = 0 end
  if rnd < 0 then rnd = 0 elseif rnd > 1 then rnd = 1 end
  if jitter < 0 then jitter = 0 elseif jitter > 1 then jitter = 1 end
  local secs = capped * (1 - jitter * rnd)
  if secs < 0 then secs = 0 end
  local whole = math.floor(secs)
  local nanos = math.floor((secs - whole) * 1e9 + 0.5)
  return whole * 1000 + math.ceil(nanos / 1000000)
end

-- ------------------------------------------------------------------ terminal transitions

-- Moves execution e to the terminal state of `reason`, out of every index. For a running
-- execution the attempt ends with `outcome`; `bump` moves the epoch (fencing the worker out).
-- `extra` holds more hash fields to write.
function L.finish(c, e, reason, outcome, bump, extra)
  local u = e.u
  local xk = L.xk(c, u)
  local st = e.st
  if st == 'ready' then
    redis.call('ZREM', L.readyk(c, e.ln, e.ci), u)
  elseif st == 'delayed' then
    redis.call('ZREM', c.p .. 'delayed', u)
    redis.call('ZREM', L.dlk(c, e.ln), u)
  elseif st == 'running' then
    redis.call('ZREM', c.p .. 'leases', u)
    redis.call('ZREM', c.p .. 'timeouts', u)
  end
  if e.dl then redis.call('ZREM', c.p .. 'deadlines', u) end
  local h = { 'st', STATE_OF[reason], 'er', reason, 'fa', n2s(c.now) }
  if st == 'running' then
    table.insert(h, 'an'); table.insert(h, n2s(c.now))
    table.insert(h, 'ao'); table.insert(h, outcome)
    if bump then
      table.insert(h, 'ep'); table.insert(h, n2s(tonumber(e.ep) + 1))
    end
  end
  if extra then for _, v in ipairs(extra) do table.insert(h, v) end end
  redis.call('HSET', xk, unpack(h))
  redis.call('HDEL', xk, 'aa')
  e.st = STATE_OF[reason]
  e.er = reason
  if e.fl then
    L.member_ended(c, e, reason)
  else
    redis.call('ZADD', c.p .. 'terminal', n2s(c.now), 'x:' .. u)
  end
end

-- A failed attempt of running execution e (worker fail, lease expiry, timeout): retry with
-- backoff when attempts are left and the failure is retryable, otherwise fail it.
-- Returns the retry time, or false when the execution failed.
function L.fail_attempt(c, e, outcome, retryable, msg, rnd, bump)
  local u = e.u
  local xk = L.xk(c, u)
  local at = tonumber(e.at)
  local extra = {}
  if msg then
    extra = { 'fm', msg, 'fr', retryable and '1' or '0' }
  end
  if retryable and at < tonumber(e.ma) and not L.flow_cancelled(c, e) then
    local delay = L.backoff_ms(e.bk, at, rnd)
    redis.call('ZREM', c.p .. 'leases', u)
    redis.call('ZREM', c.p .. 'timeouts', u)
    local h = { 'an', n2s(c.now), 'ao', outcome, 'dp', n2s(c.now + delay) }
    if bump then table.insert(h, 'ep'); table.insert(h, n2s(tonumber(e.ep) + 1)) end
    for _, v in ipairs(extra) do table.insert(h, v) end
    if not msg then redis.call('HDEL', xk, 'fm', 'fr') end
    redis.call('HSET', xk, unpack(h))
    L.make_eligible(c, u, e.ln, e.ci, e.pr, delay, nil)
    return c.now + delay
  end
  table.insert(extra, 'dp'); table.insert(extra, 'f')
  if not msg then redis.call('HDEL', xk, 'fm', 'fr') end
  local reason = retryable and 'attempts_exhausted' or 'non_retryable'
  if retryable and at < tonumber(e.ma) then
    -- Attempts were left, but the flow was cancelled: no retry.
    reason = 'cancelled_by_flow'
  end
  L.finish(c, e, reason, outcome, bump, extra)
  return false
end

-- ------------------------------------------------------------------ flows and the cascade

function L.member_ended(c, e, reason)
  local fk = L.fk(c, e.fl)
  local tm = redis.call('HINCRBY', fk, 'tm', 1)
  if FAILS_FLOW[reason] then redis.call('HINCRBY', fk, 'fg', 1) end
  local tt = tonumber(redis.call('HGET', fk, 'tt'))
  if tm >= tt then L.flow_finish(c, e.fl) end
  table.insert(c.queue, { u = e.u, fl = e.fl, fi = e.fi, st = e.st })
end

function L.flow_finish(c, f)
  local fk = L.fk(c, f)
  local v = redis.call('HMGET', fk, 'cr', 'fg', 'st')
  if v[3] ~= 'running' then return end
  local st = 'succeeded'
  if v[1] == '1' then st = 'cancelled' elseif tonumber(v[2] or '0') > 0 then st = 'failed' end
  redis.call('HSET', fk, 'st', st, 'fa', n2s(c.now))
  redis.call('ZADD', c.p .. 'terminal', n2s(c.now), 'f:' .. f)
  redis.call('ZREM', c.p .. 'cancels', f)
  table.insert(c.flows, f)
  L.note(c, 'f|' .. f)
end

function L.evaluate(gp, gk, gi, gn, gu)
  local required = gi
  if gp == 'y' then required = 1 elseif gp == 'q' then required = gk end
  if gn >= required then return 's' end
  if gu > gi - required then return 'i' end
  return 'p'
end

-- Applies one edge to downstream member index `d` of flow f; `sat` says whether the upstream
-- outcome satisfies the edge.
function L.apply_edge(c, f, d, sat)
  local du = redis.call('HGET', L.fk(c, f), 'm' .. d)
  if not du then return end
  local dk = L.xk(c, du)
  local g = redis.call('HMGET', dk, 'gv', 'gp', 'gk', 'gi', 'gn', 'gu')
  local gn, gu = tonumber(g[5] or '0'), tonumber(g[6] or '0')
  if sat then
    gn = redis.call('HINCRBY', dk, 'gn', 1)
  else
    gu = redis.call('HINCRBY', dk, 'gu', 1)
  end
  if g[1] ~= 'p' then return end
  local verdict = L.evaluate(g[2], tonumber(g[3] or '0'), tonumber(g[4]), gn, gu)
  if verdict == 'p' then return end
  redis.call('HSET', dk, 'gv', verdict)
  local e = L.load(c, du)
  local blocked = e.st == 'blocked'
  if blocked and L.flow_cancelled(c, e) then
    -- A member of a cancelled flow never becomes eligible.
    L.finish(c, e, 'cancelled_by_flow', nil, false, nil)
    blocked = false
  end
  if verdict == 's' then
    if blocked then L.make_eligible(c, du, e.ln, e.ci, e.pr, tonumber(e.dy or '0'), nil) end
    if e.gs == 'c' then
      local ek = L.ek(c, f)
      for _, k in ipairs(split(redis.call('HGET', ek, 'i' .. d), ',')) do
        local rec = split(redis.call('HGET', ek, 'e' .. k), '|')
        local uu = redis.call('HGET', L.fk(c, f), 'm' .. rec[1])
        local ue = L.load(c, uu)
        if ue and not TERMINAL[ue.st] then
          L.finish(c, ue, 'cancelled_by_group', 'cancelled', true, nil)
        end
      end
    end
  elseif blocked then
    L.finish(c, e, 'dependency_impossible', nil, false, nil)
  end
end

-- Applies the edges `ks` (edge indices) of a completed upstream in flow f whose final state is
-- `st`. Each edge applies at most once (its applied mark is set with HSETNX).
function L.apply_edges(c, f, st, ks)
  local ek = L.ek(c, f)
  local bucket = BUCKET[st]
  local applied = 0
  for _, k in ipairs(ks) do
    if redis.call('HSETNX', ek, 'a' .. k, '1') == 1 then
      applied = applied + 1
      local rec = split(redis.call('HGET', ek, 'e' .. k), '|')
      local sat = (bucket == 'success') or (rec[3] == 'a')
      L.apply_edge(c, f, rec[2], sat)
    end
  end
  return applied
end

-- Cascades the completions queued by this call: inline when the out-degree is small and the
-- call's edge budget allows, otherwise recorded as pending for cascade_completion.
function L.drain(c)
  local i = 1
  while i <= #c.queue do
    local item = c.queue[i]
    i = i + 1
    local outs = split(redis.call('HGET', L.ek(c, item.fl), 'o' .. item.fi), ',')
    if #outs > 0 then
      if #outs <= INLINE_LIMIT and c.budget >= #outs then
        c.budget = c.budget - #outs
        L.apply_edges(c, item.fl, item.st, outs)
      else
        redis.call('ZADD', c.p .. 'completions', n2s(c.now), item.u)
        c.pending = c.pending + 1
        L.note(c, 'c')
      end
    end
  end
  c.queue = {}
end

-- ------------------------------------------------------------------ creation

-- Reads one execution spec from ARGV starting at index i (11 values); returns spec, next i.
function L.read_spec(a, i)
  return {
    u = a[i], lane = a[i + 1], pr = a[i + 2], caps = a[i + 3], payload = a[i + 4],
    delay = tonumber(a[i + 5]), ma = a[i + 6], bk = a[i + 7], to = a[i + 8], dl = a[i + 9],
    key = a[i + 10],
  }, i + 11
end

-- Writes a new execution. `blocked` members wait for their group; others are eligible now.
function L.new_exec(c, s, member)
  local xk = L.xk(c, s.u)
  local seq = redis.call('INCR', c.p .. 'seq')
  local h = { 'ln', s.lane, 'pr', s.pr, 'ep', '0', 'at', '0', 'ca', n2s(c.now), 'ma', s.ma, 'bk', s.bk }
  local cid = ''
  if s.caps ~= '' then
    cid = string.sub(redis.sha1hex(s.caps), 1, 16)
    table.insert(h, 'cp'); table.insert(h, s.caps)
    table.insert(h, 'ci'); table.insert(h, cid)
    redis.call('HSET', L.capsk(c, s.lane), cid, s.caps)
  end
  if s.to ~= '' then table.insert(h, 'to'); table.insert(h, s.to) end
  if s.dl ~= '' then
    local dl = c.now + tonumber(s.dl)
    table.insert(h, 'dl'); table.insert(h, n2s(dl))
    redis.call('ZADD', c.p .. 'deadlines', n2s(dl), s.u)
  end
  if member then
    table.insert(h, 'fl'); table.insert(h, member.fl)
    table.insert(h, 'fi'); table.insert(h, tostring(member.fi))
    table.insert(h, 'nk'); table.insert(h, s.key)
    if s.delay > 0 then table.insert(h, 'dy'); table.insert(h, n2s(s.delay)) end
    if member.gi > 0 then
      for _, v in ipairs({ 'gp', member.gp, 'gk', member.gk, 'gs', member.gs, 'gi', tostring(member.gi),
                           'gn', '0', 'gu', '0', 'gv', 'p' }) do
        table.insert(h, v)
      end
      if member.pi then table.insert(h, 'pi'); table.insert(h, '1') end
    end
  end
  if #s.payload <= INLINE_BLOB then
    table.insert(h, 'p'); table.insert(h, 'i' .. s.payload)
  else
    redis.call('SET', xk .. ':p', s.payload)
    table.insert(h, 'p'); table.insert(h, 'b')
  end
  redis.call('ZADD', c.p .. 'all', n2s(seq), s.u)
  if member and member.gi > 0 then
    table.insert(h, 'st'); table.insert(h, 'blocked')
    redis.call('HSET', xk, unpack(h))
  elseif s.delay > 0 then
    redis.call('HSET', xk, unpack(h))
    L.make_delayed(c, s.u, s.lane, c.now + s.delay)
  else
    -- Ready at once: one write of the hash, the creation sequence doubles as the FIFO one.
    table.insert(h, 'st'); table.insert(h, 'ready')
    table.insert(h, 'sq'); table.insert(h, n2s(seq))
    redis.call('HSET', xk, unpack(h))
    L.enter_ready(c, s.u, s.lane, cid, s.pr, seq)
  end
end

-- ------------------------------------------------------------------ claiming

function L.lease_id(base, i)
  if i == 0 then return base end
  local head = string.sub(base, 1, 28)
  local tail = tonumber(string.sub(base, 29, 36), 16)
  return head .. string.format('%08x', (tail + i) % 4294967296)
end

function L.inputs(c, e)
  local out = {}
  local ek = L.ek(c, e.fl)
  local fk = L.fk(c, e.fl)
  for _, k in ipairs(split(redis.call('HGET', ek, 'i' .. e.fi), ',')) do
    local rec = split(redis.call('HGET', ek, 'e' .. k), '|')
    if rec[4] == '1' then
      local uu = redis.call('HGET', fk, 'm' .. rec[1])
      local v = redis.call('HMGET', L.xk(c, uu), 'st', 'nk', 'r')
      if v[1] == 'succeeded' then
        local r = L.get_blob(c, uu, v[3], ':r')
        if r == nil then
          table.insert(out, { v[2], uu, 0, '' })
        else
          table.insert(out, { v[2], uu, 1, r })
        end
      end
    end
  end
  return out
end

function L.claim_one(c, e, worker, ttl, lease)
  local u = e.u
  local xk = L.xk(c, u)
  local at = tonumber(e.at) + 1
  local ep = tonumber(e.ep) + 1
  if at > 1 then
    redis.call('RPUSH', xk .. ':att', cjson.encode({
      n = at - 1, w = e.wk or '', l = e.li or '', e = tonumber(e.ax or '0'), s = tonumber(e.as or '0'),
      t = tonumber(e.an or '-1'), o = e.ao or '', m = e.fm or false, r = e.fr or false,
    }))
  end
  local le = c.now + ttl
  local h = { 'st', 'running', 'at', tostring(at), 'ep', n2s(ep), 'ax', n2s(ep), 'li', lease, 'wk', worker,
              'le', n2s(le), 'as', n2s(c.now) }
  local ad = -1
  if e.to then
    ad = c.now + tonumber(e.to)
    table.insert(h, 'ad'); table.insert(h, n2s(ad))
    redis.call('ZADD', c.p .. 'timeouts', n2s(ad), u)
  end
  redis.call('HSET', xk, unpack(h))
  redis.call('HDEL', xk, 'an', 'ao', 'fm', 'fr', 'dp', 'aa', 'g')
  if e.g == 'b' then redis.call('DEL', xk .. ':g') end
  redis.call('ZADD', c.p .. 'leases', n2s(le), u)
  local inputs = {}
  if e.pi == '1' then inputs = L.inputs(c, e) end
  return { u, ep, lease, at, e.ln, tonumber(e.pr), L.get_blob(c, u, e.p, ':p') or '', inputs,
           e.fl or '', e.nk or '', le, ad, tonumber(e.dl or '-1') }
end

-- Whether a flow member may be claimed (its flow was not cancelled).
function L.flow_cancelled(c, e)
  if not e.fl then return false end
  return redis.call('HGET', L.fk(c, e.fl), 'cr') == '1'
end

-- Claims up to `max` ready executions of `lane` whose capabilities the worker offers.
-- Returns { claimed..., } and the lane status afterwards.
function L.claim(c, lane, worker, max, ttl, wcaps, lease_base)
  if c.li then L.touch(c, lane) end
  -- Promote this lane's due delayed executions first.
  local due = redis.call('ZRANGEBYSCORE', L.dlk(c, lane), '-inf', n2s(c.now), 'LIMIT', 0, max + 16)
  for _, u in ipairs(due) do L.promote(c, u) end
  local zs = { L.readyk(c, lane, '') }
  if wcaps ~= '' then
    local offered = {}
    for _, cap in ipairs(split(wcaps, ',')) do offered[cap] = true end
    local sets = redis.call('HGETALL', L.capsk(c, lane))
    for i = 1, #sets, 2 do
      local ok = true
      for _, cap in ipairs(split(sets[i + 1], ',')) do
        if not offered[cap] then ok = false break end
      end
      if ok then table.insert(zs, L.readyk(c, lane, sets[i])) end
    end
  end
  local out = {}
  local guard = 0
  while #out < max and guard < max + 64 do
    guard = guard + 1
    local best, bestscore, bestz = nil, nil, nil
    for _, z in ipairs(zs) do
      local h = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
      if h[1] and (best == nil or tonumber(h[2]) < bestscore) then
        best, bestscore, bestz = h[1], tonumber(h[2]), z
      end
    end
    if best == nil then break end
    local e = L.load(c, best)
    if e == nil or e.st ~= 'ready' then
      redis.call('ZREM', bestz, best)
    elseif e.dl and tonumber(e.dl) <= c.now then
      L.finish(c, e, 'deadline_exceeded', nil, false, nil)
    elseif L.flow_cancelled(c, e) then
      L.finish(c, e, 'cancelled_by_flow', nil, false, nil)
    else
      redis.call('ZREM', bestz, best)
      table.insert(out, L.claim_one(c, e, worker, ttl, L.lease_id(lease_base, #out)))
    end
  end
  return out
end

function L.claim_next_reply(c, a, i)
  -- ARGV from i: has_claim, lane, worker, max, ttl, caps, lease_base
  if a[i] ~= '1' then return { {}, -1, -1 } end
  local lane = a[i + 1]
  local claimed = L.claim(c, lane, a[i + 2], tonumber(a[i + 3]), tonumber(a[i + 4]), a[i + 5], a[i + 6])
  local ls = L.lane_status(c, lane)
  return { claimed, ls[1], ls[2] }
end

-- ------------------------------------------------------------------ fencing

-- Checks a worker's fence. Returns nil when the execution is running under this live lease,
-- 'repeat' when the lease matches but the execution is no longer running, or an error reply.
function L.fence(c, e, epoch, lease)
  if tonumber(e.ep) ~= tonumber(epoch) then
    return { 'fenced', 'stale_epoch', L.status(e) }
  end
  if e.li ~= lease then
    return { 'fenced', 'lease_mismatch', L.status(e) }
  end
  if e.st == 'running' then
    if c.now >= tonumber(e.le) then
      return { 'fenced', 'lease_expired', L.status(e) }
    end
    return nil
  end
  return 'repeat'
end

-- ------------------------------------------------------------------ registered functions

local function version()
  return VERSION
end

local function create(keys, a)
  local c = L.ctx(keys[1], a[1])
  local s = L.read_spec(a, 2)
  if redis.call('EXISTS', L.xk(c, s.u)) == 1 then
    return { 'ok', 0, L.hint_reply(c) }
  end
  L.new_exec(c, s, nil)
  return { 'ok', 1, L.hint_reply(c) }
end

-- Reads the node and edge lists of create_flow / add_nodes.
-- Node: spec (11) + gp, gk, gs, gi, pi. Edge: from, to, kind, pass (from is 'n<i>' for a node of
-- the call or 'k<key>' for an existing node).
local function read_graph(a, i, nn, ne)
  local nodes, edges = {}, {}
  for n = 1, nn do
    local s
    s, i = L.read_spec(a, i)
    s.gp, s.gk, s.gs, s.gi, s.pi = a[i], a[i + 1], a[i + 2], tonumber(a[i + 3]), a[i + 4] == '1'
    i = i + 5
    nodes[n] = s
  end
  for n = 1, ne do
    edges[n] = { from = a[i], to = tonumber(a[i + 1]), kind = a[i + 2], pass = a[i + 3] }
    i = i + 4
  end
  return nodes, edges
end

local function flow_nodes_reply(c, f)
  local fk = L.fk(c, f)
  local nn = tonumber(redis.call('HGET', fk, 'nn'))
  local out = {}
  for i = 0, nn - 1 do
    local u = redis.call('HGET', fk, 'm' .. i)
    table.insert(out, redis.call('HGET', L.xk(c, u), 'nk'))
    table.insert(out, u)
  end
  return out
end

-- Writes nodes (indices base..base+#nodes-1) and edges of a new flow or a patch.
-- `resolve(from)` maps an edge's 'from' to a flow member index.
local function write_graph(c, f, nodes, edges, base, resolve)
  local fk, ek = L.fk(c, f), L.ek(c, f)
  local ne0 = tonumber(redis.call('HGET', fk, 'ne') or '0')
  -- Edge lists first (they must exist before any node can be claimed or cascaded).
  local outs, ins = {}, {}
  for n, ed in ipairs(edges) do
    local k = ne0 + n - 1
    local from = resolve(ed.from)
    local to = base + ed.to
    redis.call('HSET', ek, 'e' .. k, from .. '|' .. to .. '|' .. ed.kind .. '|' .. ed.pass)
    outs[from] = outs[from] or {}
    table.insert(outs[from], k)
    ins[to] = ins[to] or {}
    table.insert(ins[to], k)
  end
  for from, ks in pairs(outs) do
    local cur = redis.call('HGET', ek, 'o' .. from)
    local add = table.concat(ks, ',')
    if cur and cur ~= '' then add = cur .. ',' .. add end
    redis.call('HSET', ek, 'o' .. from, add)
  end
  for to, ks in pairs(ins) do
    redis.call('HSET', ek, 'i' .. to, table.concat(ks, ','))
  end
  redis.call('HSET', fk, 'ne', n2s(ne0 + #edges))
  for n, s in ipairs(nodes) do
    local idx = base + n - 1
    redis.call('HSET', fk, 'm' .. idx, s.u, 'n:' .. s.key, tostring(idx))
  end
  for n, s in ipairs(nodes) do
    local idx = base + n - 1
    L.new_exec(c, s, { fl = f, fi = idx, gp = s.gp, gk = s.gk, gs = s.gs, gi = s.gi, pi = s.pi })
  end
  return outs
end

local function create_flow(keys, a)
  local c = L.ctx(keys[1], a[1])
  local f = a[2]
  local nn, ne = tonumber(a[3]), tonumber(a[4])
  local fk = L.fk(c, f)
  if redis.call('EXISTS', fk) == 1 then
    return { 'ok', 0, flow_nodes_reply(c, f), L.hint_reply(c) }
  end
  local nodes, edges = read_graph(a, 5, nn, ne)
  redis.call('HSET', fk, 'st', 'running', 'cr', '0', 'tt', tostring(nn), 'tm', '0', 'fg', '0',
    'ca', n2s(c.now), 'nn', tostring(nn), 'ne', '0')
  write_graph(c, f, nodes, edges, 0, function(from) return tonumber(string.sub(from, 2)) end)
  return { 'ok', 1, {}, L.hint_reply(c) }
end

local function add_nodes(keys, a)
  local c = L.ctx(keys[1], a[1])
  local f = a[2]
  local nn, ne = tonumber(a[3]), tonumber(a[4])
  local fk = L.fk(c, f)
  if redis.call('EXISTS', fk) == 0 then return { 'notfound', 'flow', f } end
  local nodes, edges = read_graph(a, 5, nn, ne)
  -- Existing keys: all → repeat; some → conflict.
  local existing = 0
  local first_dup = nil
  local ids = {}
  for _, s in ipairs(nodes) do
    local idx = redis.call('HGET', fk, 'n:' .. s.key)
    if idx then
      existing = existing + 1
      first_dup = first_dup or s.key
      table.insert(ids, s.key)
      table.insert(ids, redis.call('HGET', fk, 'm' .. idx))
    end
  end
  if existing == #nodes then return { 'ok', 0, ids, L.hint_reply(c) } end
  local fv = redis.call('HMGET', fk, 'st', 'cr', 'nn')
  if fv[1] ~= 'running' or fv[2] == '1' then
    return { 'conflict', 'flow_not_open', fv[1], fv[2] }
  end
  if existing > 0 then return { 'conflict', 'duplicate_node', first_dup } end
  -- External upstreams must exist.
  local ext = {}
  for _, ed in ipairs(edges) do
    if string.sub(ed.from, 1, 1) == 'k' then
      local key = string.sub(ed.from, 2)
      if ext[key] == nil then
        local idx = redis.call('HGET', fk, 'n:' .. key)
        if not idx then return { 'notfound', 'node', key } end
        ext[key] = tonumber(idx)
      end
    end
  end
  local base = tonumber(fv[3])
  redis.call('HINCRBY', fk, 'tt', #nodes)
  redis.call('HSET', fk, 'nn', tostring(base + #nodes))
  local outs = write_graph(c, f, nodes, edges, base, function(from)
    if string.sub(from, 1, 1) == 'k' then return ext[string.sub(from, 2)] end
    return base + tonumber(string.sub(from, 2))
  end)
  -- Edges from existing upstreams that already finished apply now.
  for _, idx in pairs(ext) do
    local uu = redis.call('HGET', fk, 'm' .. idx)
    local st = redis.call('HGET', L.xk(c, uu), 'st')
    if TERMINAL[st] then
      L.apply_edges(c, f, st, outs[idx])
    end
  end
  L.drain(c)
  return { 'ok', 1, {}, L.hint_reply(c) }
end

local function claim(keys, a)
  local c = L.ctx(keys[1], a[1])
  local lane = a[2]
  local claimed = L.claim(c, lane, a[3], tonumber(a[4]), tonumber(a[5]), a[6], a[7])
  L.drain(c)
  local ls = L.lane_status(c, lane)
  return { 'ok', claimed, ls[1], ls[2], L.hint_reply(c) }
end

local function renew(keys, a)
  local c = L.ctx(keys[1], a[1])
  local u, lease, epoch, ttl = a[2], a[3], a[4], tonumber(a[5])
  local e = L.load(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  local f = L.fence(c, e, epoch, lease)
  if f == 'repeat' then return { 'notactive', L.status(e) } end
  if f then return f end
  local le = c.now + ttl
  redis.call('HSET', L.xk(c, u), 'le', n2s(le))
  redis.call('ZADD', c.p .. 'leases', n2s(le), u)
  return { 'ok', le }
end

local function progress(keys, a)
  local c = L.ctx(keys[1], a[1])
  local u, lease, epoch = a[2], a[3], a[4]
  local e = L.load(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  local f = L.fence(c, e, epoch, lease)
  if f == 'repeat' then return { 'notactive', L.status(e) } end
  if f then return f end
  L.put_blob(c, u, 'g', ':g', a[5])
  return { 'ok' }
end

local function complete(keys, a)
  local c = L.ctx(keys[1], a[1])
  local u, lease, epoch = a[2], a[3], a[4]
  local e = L.load(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  local f = L.fence(c, e, epoch, lease)
  if f == 'repeat' then
    if e.st ~= 'succeeded' then return { 'notactive', L.status(e) } end
  elseif f then
    return f
  else
    if a[5] == '1' then L.put_blob(c, u, 'r', ':r', a[6]) end
    L.finish(c, e, 'completed', 'succeeded', false, nil)
    L.drain(c)
  end
  local next = L.claim_next_reply(c, a, 7)
  L.drain(c)
  return { 'ok', next, L.hint_reply(c) }
end

local function fail(keys, a)
  local c = L.ctx(keys[1], a[1])
  local u, lease, epoch, msg, retryable, rnd = a[2], a[3], a[4], a[5], a[6] == '1', tonumber(a[7])
  local e = L.load(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  local f = L.fence(c, e, epoch, lease)
  local disposition
  if f == 'repeat' then
    if e.ao ~= 'failed' or not e.dp then return { 'notactive', L.status(e) } end
    if e.dp == 'f' then disposition = -1 else disposition = tonumber(e.dp) end
  elseif f then
    return f
  else
    local r = L.fail_attempt(c, e, 'failed', retryable, msg, rnd, false)
    if r then disposition = r else disposition = -1 end
    L.drain(c)
  end
  local next = L.claim_next_reply(c, a, 8)
  L.drain(c)
  return { 'ok', disposition, next, L.hint_reply(c) }
end

local function cancel(keys, a)
  local c = L.ctx(keys[1], a[1])
  local u = a[2]
  local e = L.load(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  if TERMINAL[e.st] then return { 'ok', 0, L.status(e), L.hint_reply(c) } end
  local previous = e.st
  L.finish(c, e, 'cancelled_by_user', 'cancelled', true, nil)
  L.drain(c)
  return { 'ok', 1, previous, L.hint_reply(c) }
end

-- Cancels up to `budget` unfinished members of flow f (by its stored cancel mode) from its
-- cancel cursor on. Returns cancelled count and whether members remain.
local function cancel_members(c, f, budget)
  local fk = L.fk(c, f)
  local v = redis.call('HMGET', fk, 'nn', 'cm', 'cc')
  local nn, mode, i = tonumber(v[1]), v[2], tonumber(v[3] or '0')
  local cancelled = 0
  while i < nn and cancelled < budget do
    local u = redis.call('HGET', fk, 'm' .. i)
    local e = L.load(c, u)
    if e and not TERMINAL[e.st] and (mode == 'all' or e.st ~= 'running') then
      L.finish(c, e, 'cancelled_by_flow', 'cancelled', true, nil)
      cancelled = cancelled + 1
    end
    i = i + 1
  end
  redis.call('HSET', fk, 'cc', tostring(i))
  return cancelled, i < nn, nn - i
end

local function cancel_flow(keys, a)
  local c = L.ctx(keys[1], a[1])
  local f, mode = a[2], a[3]
  local fk = L.fk(c, f)
  local v = redis.call('HMGET', fk, 'st', 'cr', 'cm')
  if not v[1] then return { 'notfound', 'flow', f } end
  if v[1] ~= 'running' then return { 'ok', 0, 0, v[1], L.hint_reply(c) } end
  -- A repeat keeps the first mode unless this one cancels more.
  if v[2] ~= '1' or (mode == 'all' and v[3] ~= 'all') then
    redis.call('HSET', fk, 'cr', '1', 'cm', mode, 'cc', '0')
  end
  local cancelled, more, left = cancel_members(c, f, CANCEL_CHUNK)
  L.drain(c)
  local deferred = 0
  if more then
    redis.call('ZADD', c.p .. 'cancels', n2s(c.now), f)
    deferred = left
  end
  -- With nothing left unfinished, the flow finishes now (also when no member needed a cancel).
  local fv = redis.call('HMGET', fk, 'tm', 'tt')
  if tonumber(fv[1]) >= tonumber(fv[2]) then L.flow_finish(c, f) end
  return { 'ok', cancelled, deferred, redis.call('HGET', fk, 'st'), L.hint_reply(c) }
end

local function change_priority(keys, a)
  local c = L.ctx(keys[1], a[1])
  local u, pr = a[2], a[3]
  local e = L.load(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  if TERMINAL[e.st] then return { 'notactive', L.status(e) } end
  redis.call('HSET', L.xk(c, u), 'pr', pr)
  if e.st == 'ready' then
    redis.call('ZADD', L.readyk(c, e.ln, e.ci), n2s(L.ready_score(pr, tonumber(e.sq))), u)
  end
  return { 'ok' }
end

local function pending(keys, a)
  local c = { p = keys[1] }
  local r = redis.call('ZRANGE', c.p .. 'completions', 0, tonumber(a[1]) - 1, 'WITHSCORES')
  local out = {}
  for i = 1, #r, 2 do
    local v = redis.call('HMGET', L.xk(c, r[i]), 'fl', 'st')
    if v[1] then
      table.insert(out, { r[i], v[1], v[2], tonumber(r[i + 1]) })
    end
  end
  return { 'ok', out }
end

local function cascade(keys, a)
  local c = L.ctx(keys[1], a[1])
  local u = a[2]
  if not redis.call('ZSCORE', c.p .. 'completions', u) then
    return { 'ok', 0, 1, L.hint_reply(c) }
  end
  local v = redis.call('HMGET', L.xk(c, u), 'fl', 'fi', 'st')
  if not v[1] then
    redis.call('ZREM', c.p .. 'completions', u)
    return { 'ok', 0, 1, L.hint_reply(c) }
  end
  local f, fi, st = v[1], v[2], v[3]
  local ek = L.ek(c, f)
  local outs = split(redis.call('HGET', ek, 'o' .. fi), ',')
  local i = tonumber(redis.call('HGET', ek, 'c' .. fi) or '0') + 1
  local chunk = {}
  while i <= #outs and #chunk < CASCADE_CHUNK do
    table.insert(chunk, outs[i])
    i = i + 1
  end
  local applied = L.apply_edges(c, f, st, chunk)
  local finished = 0
  if i > #outs then
    redis.call('ZREM', c.p .. 'completions', u)
    redis.call('HDEL', ek, 'c' .. fi)
    finished = 1
  else
    redis.call('HSET', ek, 'c' .. fi, tostring(i - 1))
  end
  L.drain(c)
  return { 'ok', applied, finished, L.hint_reply(c) }
end

-- ------------------------------------------------------------------ scanners

-- Due items of zset `key` (score <= maxscore) after the cursor, skipping `skip`, at most
-- `limit`. Returns items {member, score} and whether more due items follow.
local function due_items(key, maxscore, as, am, limit, skip)
  local items = {}
  local offset = 0
  local page = limit + 32
  local start = '-inf'
  if as then start = n2s(as) end
  while true do
    local r = redis.call('ZRANGEBYSCORE', key, start, n2s(maxscore), 'WITHSCORES', 'LIMIT', offset, page)
    if #r == 0 then return items, false end
    for i = 1, #r, 2 do
      local m, s = r[i], tonumber(r[i + 1])
      local after = (as == nil) or (s > as) or (m > am)
      if after and not skip[m] then
        if #items >= limit then return items, true end
        table.insert(items, { m, s })
      end
    end
    if #r < page * 2 then return items, false end
    offset = offset + page
  end
end

local function scan(keys, a)
  local c = L.ctx(keys[1], a[1])
  local kind, limit = a[2], tonumber(a[3])
  local as, am = nil, nil
  if a[4] ~= '' then as, am = tonumber(a[4]), a[5] end
  local older, rnd = tonumber(a[6]), tonumber(a[7])
  local skip = {}
  for i = 8, #a do skip[a[i]] = true end
  local key, maxscore
  if kind == 'lease_expiry' then key, maxscore = c.p .. 'leases', c.now
  elseif kind == 'delayed_promotion' then key, maxscore = c.p .. 'delayed', c.now
  elseif kind == 'attempt_timeout' then key, maxscore = c.p .. 'timeouts', c.now
  elseif kind == 'execution_deadline' then key, maxscore = c.p .. 'deadlines', c.now
  elseif kind == 'cancel_backlog' then key, maxscore = c.p .. 'cancels', c.now
  elseif kind == 'retention' then key, maxscore = c.p .. 'terminal', c.now - older
  else return { 'validation', 'kind', 'unknown scan kind ' .. kind } end
  local items, more = due_items(key, maxscore, as, am, limit, skip)
  local processed, failures = 0, {}
  local last = nil
  local budget = limit
  for n, it in ipairs(items) do
    local m = it[1]
    last = it
    local r = rnd + n * 0.6180339887498949
    r = r - math.floor(r)
    if kind == 'cancel_backlog' then
      local v = redis.call('HMGET', L.fk(c, m), 'st', 'cr')
      if v[1] ~= 'running' or v[2] ~= '1' then
        redis.call('ZREM', key, m)
      else
        local cancelled, left = cancel_members(c, m, budget)
        budget = budget - cancelled
        if not left then
          redis.call('ZREM', key, m)
          local fv = redis.call('HMGET', L.fk(c, m), 'tm', 'tt')
          if tonumber(fv[1]) >= tonumber(fv[2]) then L.flow_finish(c, m) end
        end
      end
      processed = processed + 1
    elseif kind == 'retention' then
      local what, id = string.sub(m, 1, 1), string.sub(m, 3)
      if what == 'x' then
        local xk = L.xk(c, id)
        redis.call('DEL', xk, xk .. ':att', xk .. ':p', xk .. ':r', xk .. ':g')
        redis.call('ZREM', c.p .. 'all', id)
      else
        local fk = L.fk(c, id)
        local nn = tonumber(redis.call('HGET', fk, 'nn') or '0')
        for i = 0, nn - 1 do
          local u = redis.call('HGET', fk, 'm' .. i)
          if u then
            local xk = L.xk(c, u)
            redis.call('DEL', xk, xk .. ':att', xk .. ':p', xk .. ':r', xk .. ':g')
            redis.call('ZREM', c.p .. 'all', u)
            redis.call('ZREM', c.p .. 'completions', u)
          end
        end
        redis.call('DEL', fk, L.ek(c, id))
        redis.call('ZREM', c.p .. 'cancels', id)
      end
      redis.call('ZREM', key, m)
      processed = processed + 1
    else
      local e = L.load(c, m)
      if e == nil then
        table.insert(failures, { m, 'the index names an execution that does not exist' })
      elseif kind == 'delayed_promotion' then
        L.promote(c, m)
        processed = processed + 1
      elseif kind == 'execution_deadline' then
        if TERMINAL[e.st] then
          redis.call('ZREM', key, m)
        else
          L.finish(c, e, 'deadline_exceeded', 'expired', true, nil)
        end
        processed = processed + 1
      else
        -- lease expiry / attempt timeout of a running execution
        if e.st ~= 'running' then
          redis.call('ZREM', key, m)
        elseif kind == 'lease_expiry' and tonumber(e.le) > c.now then
          redis.call('ZADD', key, e.le, m)
        elseif kind == 'attempt_timeout' and (not e.ad or tonumber(e.ad) > c.now) then
          if not e.ad then redis.call('ZREM', key, m) else redis.call('ZADD', key, e.ad, m) end
        else
          local outcome = 'lease_expired'
          if kind == 'attempt_timeout' then outcome = 'attempt_timeout' end
          L.fail_attempt(c, e, outcome, true, nil, r, true)
        end
        processed = processed + 1
      end
    end
  end
  -- Every due item ends first, then the cascades run (as in the reference backend: an item's
  -- own outcome is never pre-empted by a cascade from another item of the same call).
  L.drain(c)
  -- The delayed-promotion scanner also repairs the lane indexes: it reports every lane with
  -- claimable work here.
  if kind == 'delayed_promotion' then
    for _, lane in ipairs(redis.call('SMEMBERS', c.p .. 'lanes')) do
      local ls = L.lane_status(c, lane)
      if ls[1] > 0 then L.index_hint(c, lane, 0)
      elseif ls[2] >= 0 then L.index_hint(c, lane, ls[2])
      else redis.call('SREM', c.p .. 'lanes', lane) end
    end
  end
  local next = {}
  if more and last then next = { n2s(last[2]), last[1] } end
  local backlog = redis.call('ZCOUNT', key, '-inf', n2s(maxscore))
  return { 'ok', processed, failures, next, backlog, L.hint_reply(c) }
end

local function lane_status(keys, a)
  local c = { p = keys[1] }
  local ls = L.lane_status(c, a[1])
  return { 'ok', ls[1], ls[2] }
end

-- ------------------------------------------------------------------ reads

local function describe(keys, a)
  local c = { p = keys[1] }
  local u = a[1]
  local xk = L.xk(c, u)
  local h = redis.call('HGETALL', xk)
  if #h == 0 then return { 'notfound', 'execution', u } end
  local e = {}
  for i = 1, #h, 2 do e[h[i]] = h[i + 1] end
  local blobs = {}
  for _, b in ipairs({ { 'p', ':p' }, { 'r', ':r' }, { 'g', ':g' } }) do
    local v = L.get_blob(c, u, e[b[1]], b[2])
    if v == nil then table.insert(blobs, { 0, '' }) else table.insert(blobs, { 1, v }) end
  end
  return { 'ok', h, blobs, redis.call('LRANGE', xk .. ':att', 0, -1) }
end

local function describe_flow(keys, a)
  local c = { p = keys[1] }
  local f = a[1]
  local fk = L.fk(c, f)
  local fv = redis.call('HMGET', fk, 'st', 'cr', 'tt', 'tm', 'fg', 'ca', 'fa', 'nn', 'ne')
  if not fv[1] then return { 'notfound', 'flow', f } end
  local members = {}
  for i = 0, tonumber(fv[8]) - 1 do
    local u = redis.call('HGET', fk, 'm' .. i)
    local v = redis.call('HMGET', L.xk(c, u), 'nk', 'st', 'er', 'gp', 'gk', 'gs', 'gi', 'gn', 'gu', 'gv')
    table.insert(members, { u, v[1], v[2], v[3] or '', v[4] or '', v[5] or '', v[6] or '', v[7] or '',
                            v[8] or '', v[9] or '', v[10] or '' })
  end
  local ek = L.ek(c, f)
  local edges = {}
  for k = 0, tonumber(fv[9]) - 1 do
    local v = redis.call('HMGET', ek, 'e' .. k, 'a' .. k)
    table.insert(edges, { v[1], v[2] or '0' })
  end
  for i = 1, 9 do if not fv[i] then fv[i] = '' end end
  return { 'ok', fv, members, edges }
end

local function list(keys, a)
  local c = { p = keys[1] }
  local state, lane, after, limit = a[1], a[2], a[3], tonumber(a[4])
  local start = '-inf'
  if after ~= '' then start = '(' .. after end
  local scanned_max = math.max(limit * 10, 2000)
  local out = {}
  local scanned = 0
  local cursor = nil   -- score of the last entry handed out (or scanned, when the bound hit)
  while scanned < scanned_max do
    local r = redis.call('ZRANGEBYSCORE', c.p .. 'all', start, '+inf', 'WITHSCORES', 'LIMIT', 0, 200)
    if #r == 0 then return { 'ok', out, '' } end
    for i = 1, #r, 2 do
      local u, score = r[i], r[i + 1]
      scanned = scanned + 1
      local v = redis.call('HMGET', L.xk(c, u), 'st', 'ln', 'pr', 'fl', 'ca')
      if v[1] == state and (lane == '' or v[2] == lane) then
        if #out >= limit then
          -- One more match exists: the page is full and another follows.
          return { 'ok', out, cursor }
        end
        table.insert(out, { u, v[1], v[2], tonumber(v[3]), v[4] or '', tonumber(v[5]) })
      end
      cursor = score
      if scanned >= scanned_max then break end
    end
    start = '(' .. cursor
  end
  -- The scan bound was reached: continue after the last entry looked at.
  return { 'ok', out, cursor }
end

-- ------------------------------------------------------------------ lane index (own tag)

-- Standalone only (it touches several partitions): claims up to `max` from the partitions
-- the lane index lists as due, the preferred one first, in one call.
-- KEYS[1] = the lane index; ARGV: clock|root, lane, worker, max, ttl, caps, lease_base,
-- preferred partition or '', random in [0, 1), most partitions to visit.
local function claim_any(keys, a)
  local c = L.ctx('', a[1])
  if not c.li then return { 'validation', 'clock', 'claim_any needs the key root' } end
  local lane, worker, max, ttl, wcaps, base = a[2], a[3], tonumber(a[4]), tonumber(a[5]), a[6], a[7]
  local preferred, rnd, visits = a[8], tonumber(a[9]), tonumber(a[10])
  local due = redis.call('ZRANGEBYSCORE', keys[1], '-inf', n2s(c.now), 'LIMIT', 0, 256)
  local order = {}
  if preferred ~= '' then table.insert(order, preferred) end
  local start = math.floor(rnd * #due)
  for i = 1, #due do
    local part = due[((start + i - 1) % #due) + 1]
    if part ~= preferred then table.insert(order, part) end
  end
  local out = {}
  local got = 0
  local stay = ''
  local visited = 0
  for _, part in ipairs(order) do
    if got >= max or visited >= visits then break end
    visited = visited + 1
    c.p = c.li .. '{fp:' .. part .. '}:'
    local claimed = L.claim(c, lane, worker, max - got, ttl, wcaps, L.lease_id(base, got * 7919))
    L.drain(c)
    L.sync_touched(c)
    L.publish(c)
    if #claimed > 0 then
      table.insert(out, { part, claimed })
      got = got + #claimed
      if stay == '' or L.lane_status(c, lane)[1] > 0 then stay = part end
    end
  end
  return { 'ok', out, stay }
end

local function lane_due(keys, a)
  local c = L.ctx('', a[1])
  return { 'ok', redis.call('ZRANGEBYSCORE', keys[1], '-inf', n2s(c.now), 'LIMIT', 0, tonumber(a[2])) }
end

-- ------------------------------------------------------------------ coordination ({coord} tag)

local function owner_of(v)
  if not v then return nil, nil end
  local who, exp = string.match(v, '^(.*)|(%d+)$')
  return who, tonumber(exp)
end

local function heartbeat(keys, a)
  local c = L.ctx(keys[1], a[1])
  local inst, ttl = a[2], tonumber(a[3])
  local ik = c.p .. 'instances'
  redis.call('ZREMRANGEBYSCORE', ik, '-inf', n2s(c.now))
  redis.call('ZADD', ik, n2s(c.now + ttl), inst)
  return { 'ok', redis.call('ZRANGE', ik, 0, -1, 'WITHSCORES') }
end

local function remove_instance(keys, a)
  local c = L.ctx(keys[1], a[1])
  local inst = a[2]
  redis.call('ZREM', c.p .. 'instances', inst)
  local ok = c.p .. 'owners'
  local h = redis.call('HGETALL', ok)
  for i = 1, #h, 2 do
    local who = owner_of(h[i + 1])
    if who == inst then redis.call('HDEL', ok, h[i]) end
  end
  return { 'ok' }
end

local function acquire(keys, a)
  local c = L.ctx(keys[1], a[1])
  local inst, ttl = a[2], tonumber(a[3])
  local ok = c.p .. 'owners'
  local out = {}
  for i = 4, #a do
    local who, exp = owner_of(redis.call('HGET', ok, a[i]))
    if who == nil or exp <= c.now or who == inst then
      redis.call('HSET', ok, a[i], inst .. '|' .. n2s(c.now + ttl))
      table.insert(out, { a[i], 1, '', c.now + ttl })
    else
      table.insert(out, { a[i], 0, who, exp })
    end
  end
  return { 'ok', out }
end

local function release(keys, a)
  local ok = keys[1] .. 'owners'
  local inst = a[1]
  for i = 2, #a do
    local who = owner_of(redis.call('HGET', ok, a[i]))
    if who == inst then redis.call('HDEL', ok, a[i]) end
  end
  return { 'ok' }
end

local function owners(keys, a)
  local c = L.ctx(keys[1], a[1])
  local h = redis.call('HGETALL', c.p .. 'owners')
  local out = {}
  for i = 1, #h, 2 do
    local who, exp = owner_of(h[i + 1])
    if who and exp > c.now then table.insert(out, { h[i], who, exp }) end
  end
  return { 'ok', out }
end

local RO = { 'no-writes' }
redis.register_function{ function_name = 'ff_version', callback = version, flags = RO }
redis.register_function('ff_create', create)
redis.register_function('ff_create_flow', create_flow)
redis.register_function('ff_add_nodes', add_nodes)
redis.register_function('ff_claim', claim)
redis.register_function('ff_renew', renew)
redis.register_function('ff_progress', progress)
redis.register_function('ff_complete', complete)
redis.register_function('ff_fail', fail)
redis.register_function('ff_cancel', cancel)
redis.register_function('ff_cancel_flow', cancel_flow)
redis.register_function('ff_priority', change_priority)
redis.register_function{ function_name = 'ff_pending', callback = pending, flags = RO }
redis.register_function('ff_cascade', cascade)
redis.register_function('ff_scan', scan)
redis.register_function{ function_name = 'ff_lane_status', callback = lane_status, flags = RO }
redis.register_function{ function_name = 'ff_describe', callback = describe, flags = RO }
redis.register_function{ function_name = 'ff_describe_flow', callback = describe_flow, flags = RO }
redis.register_function{ function_name = 'ff_list', callback = list, flags = RO }
redis.register_function{ function_name = 'ff_lane_due', callback = lane_due, flags = RO }
redis.register_function('ff_claim_any', claim_any)
redis.register_function('ff_heartbeat', heartbeat)
redis.register_function('ff_remove_instance', remove_instance)
redis.register_function('ff_acquire', acquire)
redis.register_function('ff_release', release)
redis.register_function{ function_name = 'ff_owners', callback = owners, flags = RO }
