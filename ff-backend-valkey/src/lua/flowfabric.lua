#!lua name=flowfabric
-- FlowFabric function library (one FCALL per backend operation).
--
-- Every partition function gets the partition prefix `ff:<ns>:{fp:N}:` as KEYS[1] and derives
-- every key it touches from it, so all keys of a call share one cluster slot. Functions
-- validate everything before their first write (a Lua error does not roll back). Timestamps
-- are integral milliseconds of the server's TIME plus the client's clock offset (ARGV[1]).
-- Numbers go to redis.call as Lua numbers (the server prints integers exactly); `n2s` is only
-- for building strings (Lua's own conversion would use exponent notation).
--
-- Replies are arrays whose first element is a status: 'ok', or an error kind the client maps
-- to an EngineError ('notfound', 'fenced', 'notactive', 'conflict', 'validation').
--
-- The hot path (create, claim, complete / fail with claim_next) is written for few commands:
-- hashes are read with HMGET of the fields the operation needs, written with one HSET, fields
-- at their default are not written (ep, at = 0; pr = 0; the default retry policy), and the
-- lane index, the `lanes` set and the wake-up hints are touched only on transitions (a ready
-- set going from empty to non-empty, a claim finding the lane empty), never in the steady
-- state of a busy lane.
--
-- Execution hash `x:<uuid>` (absent field = default):
--   st state; ln lane; pr priority (0); ca created_at; p payload ('i<bytes>' inline; absent:
--   in `x:<uuid>:p`); rp retry policy '<max_attempts>;<backoff>' (none: 1 attempt); to attempt
--   timeout ms; dl deadline; cp / ci capabilities and their set id; ep epoch (0); at attempts
--   (0); li lease; wk worker; as attempt start; le lease expiry; ad attempt deadline; ax the
--   latest attempt's epoch when the epoch moved on after it (else ep); an / ao attempt end and
--   outcome (an absent: the attempt ended with the execution, at fa; ao absent after it ended:
--   succeeded); fm / fr failure message and retryable; dp fail disposition (retry time or 'f');
--   aa available_at (meaningful while delayed); er end reason (only for failed and cancelled:
--   the other final states imply it); fa finished_at; r result and g progress ('i<bytes>'
--   inline, or 'b': in `x:<uuid>:r` / `:g`); flow members: fl flow, fi member index, nk node key, dy delay after
--   satisfaction, pi has pass-result inputs, fo out-edges ('<edge>:<member>:<kind>:<member
--   uuid>,...', or '@' when too long and kept in the edges hash as 'o<fi>'), gp gk gs gi gn gu
--   gv the dependency group.
-- Flow hash `f:<uuid>`: st, cr (cancel requested), cm / cc (cancel mode / cursor), tt (total),
-- lf (members not yet terminal), fg (failing), ca, fa, nn / ne (members / edges), m<i> member
-- uuid, n:<key> member index. Edges hash `f:<uuid>:edges`: e<k> 'from|to|kind|pass',
-- i<member> incoming edge list, o<member> spilled out-edge list, a<k> applied mark (set only
-- by cascade_completion and add_nodes; an edge cascaded inline is applied when its upstream is
-- terminal and its completion is not pending), c<member> cascade cursor.

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
-- Out-edge lists up to this many bytes stay inside the execution hash (a listpack holds values
-- up to 64 bytes by default).
local FO_INLINE = 64
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
-- End reasons implied by the final state (not written: 'er' is stored only for failed and
-- cancelled executions).
local IMPLIED_ER = { succeeded = 'completed', expired = 'deadline_exceeded', skipped = 'dependency_impossible' }
local BUCKET = { succeeded = 'success', skipped = 'skip', failed = 'failure', cancelled = 'failure', expired = 'failure' }

-- Shared empty reply parts (never modified).
local EMPTY = {}
local NO_NEXT = { EMPTY, -1, -1, '' }

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
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + #sep
  end
end

-- ------------------------------------------------------------------ context and keys

-- `clock` is the client's clock offset in ms, or '@<ms>' for a frozen test clock, followed on
-- a standalone server by '|<root>': the key root of the deployment, whose lane indexes
-- (`<root>{lane:<lane>}:parts`) the function then keeps in step itself.
function L.ctx(prefix, clock)
  local li = nil
  local bar = string.find(clock, '|', 1, true)
  if bar then
    li = string.sub(clock, bar + 1)
    clock = string.sub(clock, 1, bar - 1)
  end
  local now
  if string.byte(clock, 1) == 64 then
    now = tonumber(string.sub(clock, 2))
  else
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(clock)
  end
  -- Set when needed: queue (completions to cascade), rt (ready transitions), dt / dto (delayed
  -- lanes), miss / misso (lanes a claim found empty), pub / pubset (hints), idx / idxo
  -- (lane-index updates for the client), cancels (whether the partition has a deferred flow
  -- cancel).
  return { p = prefix, now = now, li = li, budget = EDGE_BUDGET, lease_n = 0 }
end

-- The partition number of the current prefix ('...{fp:N}:').
function L.part(c)
  if not c.part then c.part = string.match(c.p, '{fp:(%d+)}') end
  return c.part
end

function L.xk(c, u) return c.p .. 'x:' .. u end
function L.fk(c, f) return c.p .. 'f:' .. f end
function L.ek(c, f) return c.p .. 'f:' .. f .. ':edges' end
function L.readyk(c, lane, cid)
  if cid == nil or cid == false or cid == '' then return c.p .. 'ready:' .. lane end
  return c.p .. 'ready:' .. lane .. '#' .. cid
end

-- Typed readers of an execution's fields (one HMGET; the table is built by one constructor so
-- it is allocated once). nil when the execution does not exist; absent fields are nil.

-- What claiming a ready execution needs.
function L.get_claim(c, u)
  local xk = c.p .. 'x:' .. u
  local v = redis.call('HMGET', xk, 'st', 'ep', 'at', 'pr', 'dl', 'to', 'p', 'fl')
  if not v[1] then return nil end
  local e = { u = u, st = v[1], ep = v[2] or nil, at = v[3] or nil, pr = v[4] or nil, dl = v[5] or nil,
              to = v[6] or nil, p = v[7] or nil, fl = v[8] or nil, fi = nil, nk = nil, pi = nil, fo = nil }
  if e.fl then
    -- A flow member: its place in the flow too.
    local m = redis.call('HMGET', xk, 'fi', 'nk', 'pi', 'fo')
    e.fi, e.nk, e.pi, e.fo = m[1] or nil, m[2] or nil, m[3] or nil, m[4] or nil
  end
  return e
end

-- What renew / progress need (the fence).
function L.get_lease(c, u)
  local v = redis.call('HMGET', c.p .. 'x:' .. u, 'st', 'ep', 'at', 'er', 'li', 'le', 'g')
  if not v[1] then return nil end
  return { u = u, st = v[1], ep = v[2] or nil, at = v[3] or nil, er = v[4] or nil, li = v[5] or nil,
           le = v[6] or nil, g = v[7] or nil }
end

-- What complete needs: the fence, and ending the attempt.
function L.get_complete(c, u)
  local v = redis.call('HMGET', c.p .. 'x:' .. u, 'st', 'ep', 'at', 'er', 'li', 'le', 'dl', 'to', 'fl', 'fi', 'fo')
  if not v[1] then return nil end
  return { u = u, st = v[1], ep = v[2] or nil, at = v[3] or nil, er = v[4] or nil, li = v[5] or nil,
           le = v[6] or nil, dl = v[7] or nil, to = v[8] or nil, fl = v[9] or nil, fi = v[10] or nil,
           fo = v[11] or nil }
end

-- What fail needs: the fence, and ending or retrying the attempt.
function L.get_fence(c, u)
  local v = redis.call('HMGET', c.p .. 'x:' .. u, 'st', 'ep', 'at', 'er', 'li', 'le', 'ao', 'dp', 'dl', 'to',
    'ln', 'ci', 'pr', 'rp', 'fl', 'fi', 'fo')
  if not v[1] then return nil end
  return { u = u, st = v[1], ep = v[2] or nil, at = v[3] or nil, er = v[4] or nil, li = v[5] or nil,
           le = v[6] or nil, ao = v[7] or nil, dp = v[8] or nil, dl = v[9] or nil, to = v[10] or nil,
           ln = v[11] or nil, ci = v[12] or nil, pr = v[13] or nil, rp = v[14] or nil, fl = v[15] or nil,
           fi = v[16] or nil, fo = v[17] or nil }
end

-- What applying an edge to downstream member `d` (execution u) of flow f needs: its group and
-- what making it eligible takes. Ending it (skip, cancel) takes more: see L.get_down_end.
function L.get_down(c, f, d, u)
  local v = redis.call('HMGET', c.p .. 'x:' .. u, 'st', 'gv', 'gp', 'gk', 'gi', 'gn', 'gu', 'gs', 'ln', 'ci',
    'pr', 'dy')
  if not v[1] then return nil end
  return { u = u, st = v[1], gv = v[2] or nil, gp = v[3] or nil, gk = v[4] or nil, gi = v[5] or nil,
           gn = v[6] or nil, gu = v[7] or nil, gs = v[8] or nil, ln = v[9] or nil, ci = v[10] or nil,
           pr = v[11] or nil, dy = v[12] or nil, fl = f, fi = d, dl = nil, fo = nil }
end

-- Completes e (from L.get_down) with what L.finish needs of a waiting member.
function L.get_down_end(c, e)
  local v = redis.call('HMGET', c.p .. 'x:' .. e.u, 'dl', 'fo')
  e.dl, e.fo = v[1] or nil, v[2] or nil
end

-- Reads every field of execution u (paths off the hot path).
function L.load(c, u)
  local r = redis.call('HGETALL', c.p .. 'x:' .. u)
  if #r == 0 then return nil end
  local e = {}
  for i = 1, #r, 2 do e[r[i]] = r[i + 1] end
  e.u = u
  return e
end

function L.status(e)
  return { e.st, tonumber(e.ep or 0), tonumber(e.at or 0), e.er or IMPLIED_ER[e.st] or '' }
end

-- ------------------------------------------------------------------ transitions, hints, lane index

-- A ready set just received a member: on its empty → non-empty transition, the lane gets a
-- wake-up and (at the flush) its lane-index entry.
function L.ready_added(c, lane, rk)
  if redis.call('ZCARD', rk) ~= 1 then return end
  redis.call('SADD', c.p .. 'lanes', lane)
  if not c.rt then c.rt = {} end
  c.rt[#c.rt + 1] = { lane, rk }
end

-- A delayed member of `lane` becomes claimable at `at`.
function L.delayed_added(c, lane, at)
  redis.call('SADD', c.p .. 'lanes', lane)
  if not c.dt then c.dt, c.dto = {}, {} end
  local cur = c.dt[lane]
  if cur == nil then
    c.dto[#c.dto + 1] = lane
    c.dt[lane] = at
  elseif at < cur then
    c.dt[lane] = at
  end
end

-- A claim left no ready work of `lane` that the worker could take here.
function L.missed(c, lane)
  if not c.miss then c.miss, c.misso = {}, {} end
  if not c.miss[lane] then
    c.miss[lane] = true
    c.misso[#c.misso + 1] = lane
  end
end

-- Queues a wake-up hint for the current partition's channel: 'w|<lane>' (work ready),
-- 'f|<flow>' (flow finished), 'c' (completion pending).
function L.note(c, msg)
  if not c.pub then c.pub, c.pubset = {}, {} end
  if not c.pubset[msg] then
    c.pubset[msg] = true
    c.pub[#c.pub + 1] = msg
  end
end

-- The lane has work on this partition claimable from `score` on (0 = now). Standalone: the
-- index is written here; cluster: reported to the client, which writes it (another slot).
function L.index_set(c, lane, score)
  if c.li then
    local key = c.li .. '{lane:' .. lane .. '}:parts'
    if score == 0 then
      redis.call('ZADD', key, 0, L.part(c))
    else
      redis.call('ZADD', key, 'LT', score, L.part(c))
    end
    return
  end
  if not c.idx then c.idx, c.idxo = {}, {} end
  local cur = c.idx[lane]
  if cur == nil then
    c.idxo[#c.idxo + 1] = lane
    c.idx[lane] = score
  elseif score < cur then
    c.idx[lane] = score
  end
end

-- Ready and earliest-delayed work of a lane on this partition (any capabilities).
function L.lane_status(c, lane)
  local ready = redis.call('ZCARD', c.p .. 'ready:' .. lane)
  for _, cid in ipairs(redis.call('HKEYS', c.p .. 'caps:' .. lane)) do
    ready = ready + redis.call('ZCARD', c.p .. 'ready:' .. lane .. '#' .. cid)
  end
  local d = redis.call('ZRANGE', c.p .. 'delayed:' .. lane, 0, 0, 'WITHSCORES')
  local nextd = -1
  if d[1] then nextd = tonumber(d[2]) end
  return { ready, nextd }
end

-- Sets this partition's lane-index entry from the lane's exact status (standalone), or
-- reports it (cluster; an empty lane is left to the client's own miss handling).
function L.index_exact(c, lane)
  local ls = L.lane_status(c, lane)
  if ls[1] > 0 then
    L.index_set(c, lane, 0)
  elseif ls[2] >= 0 then
    if c.li then
      redis.call('ZADD', c.li .. '{lane:' .. lane .. '}:parts', ls[2], L.part(c))
    else
      L.index_set(c, lane, ls[2])
    end
  elseif c.li then
    redis.call('ZREM', c.li .. '{lane:' .. lane .. '}:parts', L.part(c))
  end
  return ls
end

-- Applies this call's transitions on the current partition: lane-index entries, then hints
-- (a work-ready hint only if the work is still there: a chain's claim_next may have taken it
-- in the same call). Runs before a call switches partitions and before it replies.
function L.flush(c)
  if not (c.rt or c.dt or c.miss or c.pub) then return end
  if c.rt then
    for _, t in ipairs(c.rt) do
      if redis.call('ZCARD', t[2]) > 0 then
        L.index_set(c, t[1], 0)
        L.note(c, 'w|' .. t[1])
      end
    end
    c.rt = nil
  end
  if c.dt then
    for _, lane in ipairs(c.dto) do L.index_set(c, lane, c.dt[lane]) end
    c.dt, c.dto = nil, nil
  end
  if c.miss then
    if c.li then
      for _, lane in ipairs(c.misso) do L.index_exact(c, lane) end
    end
    c.miss, c.misso = nil, nil
  end
  if c.pub then
    local ch = c.p .. 'hints'
    local cmd = 'SPUBLISH'
    if c.li then cmd = 'PUBLISH' end
    for _, msg in ipairs(c.pub) do redis.call(cmd, ch, msg) end
    c.pub, c.pubset = nil, nil
  end
end

-- Flushes, and returns the lane-index updates for the client: lane, score, lane, score, ...
-- (empty on a standalone server, where the function wrote them itself).
function L.effects(c)
  L.flush(c)
  if not c.idx then return EMPTY end
  local out = {}
  do
    for _, lane in ipairs(c.idxo) do
      out[#out + 1] = lane
      out[#out + 1] = c.idx[lane]
    end
    c.idx, c.idxo = nil, nil
  end
  return out
end

-- ------------------------------------------------------------------ blobs

-- A blob value as hash fields: inline ('i<bytes>') when small, otherwise written to its own
-- key `x:<uuid><suffix>` and marked 'b'. Returns the field value to store.
function L.blob_field(c, u, suffix, value)
  if #value <= INLINE_BLOB then return 'i' .. value end
  redis.call('SET', c.p .. 'x:' .. u .. suffix, value)
  return 'b'
end

-- The payload: inline in field 'p', or (no field) in `x:<uuid>:p`.
function L.payload(c, u, v)
  if v then return string.sub(v, 2) end
  return redis.call('GET', c.p .. 'x:' .. u .. ':p') or ''
end

function L.get_blob(c, u, v, suffix)
  if v == nil or v == false then return nil end
  if string.byte(v, 1) == 105 then return string.sub(v, 2) end
  local b = redis.call('GET', c.p .. 'x:' .. u .. suffix)
  if not b then return '' end
  return b
end

-- ------------------------------------------------------------------ ready / delayed

function L.ready_score(pr, seq)
  return (MAX_PRIORITY - tonumber(pr or 0)) * SEQ_SPAN + seq
end

-- Makes u ready: one HSET (state plus `extra` fields), a fresh FIFO sequence, its ready set.
function L.make_ready(c, u, lane, cid, pr, extra)
  local seq = redis.call('INCR', c.p .. 'seq')
  if extra then
    redis.call('HSET', c.p .. 'x:' .. u, 'st', 'ready', unpack(extra))
  else
    redis.call('HSET', c.p .. 'x:' .. u, 'st', 'ready')
  end
  local rk = L.readyk(c, lane, cid)
  redis.call('ZADD', rk, L.ready_score(pr, seq), u)
  L.ready_added(c, lane, rk)
end

-- Makes u delayed until `at`: one HSET (state, available_at, `extra`), the delayed indexes.
function L.make_delayed(c, u, lane, at, extra)
  if extra then
    redis.call('HSET', c.p .. 'x:' .. u, 'st', 'delayed', 'aa', at, unpack(extra))
  else
    redis.call('HSET', c.p .. 'x:' .. u, 'st', 'delayed', 'aa', at)
  end
  redis.call('ZADD', c.p .. 'delayed', at, u)
  redis.call('ZADD', c.p .. 'delayed:' .. lane, at, u)
  L.delayed_added(c, lane, at)
end

-- Eligible now (ready) or after `delay` ms (delayed).
function L.make_eligible(c, u, lane, cid, pr, delay, extra)
  if delay > 0 then
    L.make_delayed(c, u, lane, c.now + delay, extra)
  else
    L.make_ready(c, u, lane, cid, pr, extra)
  end
end

function L.promote(c, u)
  local e = redis.call('HMGET', c.p .. 'x:' .. u, 'st', 'ln', 'ci', 'pr')
  redis.call('ZREM', c.p .. 'delayed', u)
  if e[2] then redis.call('ZREM', c.p .. 'delayed:' .. e[2], u) end
  if e[1] ~= 'delayed' then return false end
  L.make_ready(c, u, e[2], e[3], e[4], nil)
  return true
end

-- ------------------------------------------------------------------ retry backoff

-- max_attempts and stored backoff of execution e ('rp'; absent = one attempt, no backoff).
function L.retry_policy(e)
  if not e.rp then return 1, 'f:0:0' end
  local i = string.find(e.rp, ';', 1, true)
  return tonumber(string.sub(e.rp, 1, i - 1)), string.sub(e.rp, i + 1)
end

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
-- `extra` holds more hash fields to write. e needs: u, st, ln / ci (ready), to (running), dl,
-- ep (bump), fl / fi / fo (members); `e.popped` says a claim already took it off its ready set.
function L.finish(c, e, reason, outcome, bump, extra)
  local u = e.u
  local st = e.st
  if st == 'ready' then
    if not e.popped then redis.call('ZREM', L.readyk(c, e.ln, e.ci), u) end
  elseif st == 'delayed' then
    redis.call('ZREM', c.p .. 'delayed', u)
    redis.call('ZREM', c.p .. 'delayed:' .. e.ln, u)
  elseif st == 'running' then
    redis.call('ZREM', c.p .. 'leases', u)
    if e.to then redis.call('ZREM', c.p .. 'timeouts', u) end
  end
  if e.dl then redis.call('ZREM', c.p .. 'deadlines', u) end
  -- Written: the state and finish time; the end reason only where the state does not imply it
  -- (failed, cancelled); for a running execution the attempt's outcome unless it succeeded
  -- (the finish time is the attempt's end), and the epoch bump.
  local final = STATE_OF[reason]
  local h = { 'st', final, 'fa', c.now }
  if not IMPLIED_ER[final] then
    h[5] = 'er'
    h[6] = reason
  end
  if st == 'running' then
    if outcome ~= 'succeeded' then
      h[#h + 1] = 'ao'
      h[#h + 1] = outcome
    end
    if bump then
      local ep = tonumber(e.ep or 0)
      h[#h + 1] = 'ep'
      h[#h + 1] = ep + 1
      h[#h + 1] = 'ax'
      h[#h + 1] = ep
    end
  end
  if extra then
    for i = 1, #extra do h[#h + 1] = extra[i] end
  end
  redis.call('HSET', c.p .. 'x:' .. u, unpack(h))
  e.st = final
  e.er = reason
  if e.fl then
    L.member_ended(c, e, reason)
  else
    redis.call('ZADD', c.p .. 'terminal', c.now, 'x:' .. u)
  end
end

-- Whether e's flow has a cancel requested (checked where a cancelled flow changes the outcome
-- of a running member's failed attempt).
function L.flow_cancelled(c, e)
  if not e.fl then return false end
  return redis.call('HGET', L.fk(c, e.fl), 'cr') == '1'
end

-- Whether flow f has a cancel in progress whose members may still be waiting (ready, delayed
-- or blocked). cancel_flow cancels every waiting member at once unless it defers the rest to
-- the `cancels` backlog, so only then can one be found: the backlog is checked once per call.
function L.cancel_pending(c, f)
  if c.cancels == nil then c.cancels = redis.call('EXISTS', c.p .. 'cancels') == 1 end
  if not c.cancels then return false end
  return redis.call('HGET', L.fk(c, f), 'cr') == '1'
end

-- A failed attempt of running execution e (worker fail, lease expiry, timeout): retry with
-- backoff when attempts are left and the failure is retryable, otherwise fail it.
-- Returns the retry time, or false when the execution failed.
function L.fail_attempt(c, e, outcome, retryable, msg, rnd, bump)
  local u = e.u
  local at = tonumber(e.at or 0)
  local ma, bk = L.retry_policy(e)
  if retryable and at < ma and not L.flow_cancelled(c, e) then
    local delay = L.backoff_ms(bk, at, rnd)
    redis.call('ZREM', c.p .. 'leases', u)
    if e.to then redis.call('ZREM', c.p .. 'timeouts', u) end
    local h = { 'an', c.now, 'ao', outcome, 'dp', c.now + delay }
    if bump then
      local ep = tonumber(e.ep or 0)
      h[#h + 1] = 'ep'; h[#h + 1] = ep + 1
      h[#h + 1] = 'ax'; h[#h + 1] = ep
    end
    if msg then
      h[#h + 1] = 'fm'; h[#h + 1] = msg
      h[#h + 1] = 'fr'; h[#h + 1] = retryable and '1' or '0'
    end
    L.make_eligible(c, u, e.ln, e.ci, e.pr, delay, h)
    return c.now + delay
  end
  local extra = { 'dp', 'f' }
  if msg then
    extra[#extra + 1] = 'fm'; extra[#extra + 1] = msg
    extra[#extra + 1] = 'fr'; extra[#extra + 1] = retryable and '1' or '0'
  end
  local reason = retryable and 'attempts_exhausted' or 'non_retryable'
  if retryable and at < ma then
    -- Attempts were left, but the flow was cancelled: no retry.
    reason = 'cancelled_by_flow'
  end
  L.finish(c, e, reason, outcome, bump, extra)
  return false
end

-- ------------------------------------------------------------------ flows and the cascade

function L.member_ended(c, e, reason)
  local fk = L.fk(c, e.fl)
  local left = redis.call('HINCRBY', fk, 'lf', -1)
  if FAILS_FLOW[reason] then redis.call('HINCRBY', fk, 'fg', 1) end
  if left <= 0 then L.flow_finish(c, e.fl) end
  if not c.queue then c.queue = {} end
  c.queue[#c.queue + 1] = { u = e.u, fl = e.fl, fi = e.fi, st = e.st, fo = e.fo }
end

function L.flow_finish(c, f)
  local fk = L.fk(c, f)
  local v = redis.call('HMGET', fk, 'cr', 'fg', 'st')
  if v[3] ~= 'running' then return end
  local st = 'succeeded'
  if v[1] == '1' then st = 'cancelled' elseif tonumber(v[2] or '0') > 0 then st = 'failed' end
  redis.call('HSET', fk, 'st', st, 'fa', c.now)
  redis.call('ZADD', c.p .. 'terminal', c.now, 'f:' .. f)
  if v[1] == '1' then redis.call('ZREM', c.p .. 'cancels', f) end
  L.note(c, 'f|' .. f)
end

function L.evaluate(gp, gk, gi, gn, gu)
  local required = gi
  if gp == 'y' then required = 1 elseif gp == 'q' then required = gk end
  if gn >= required then return 's' end
  if gu > gi - required then return 'i' end
  return 'p'
end

-- Parses out-edge entries '<edge>:<member>:<kind>:<member uuid>,...' into a list of
-- {edge, member, kind, uuid}.
function L.parse_outs(list)
  local out = {}
  for _, o in ipairs(split(list, ',')) do
    local k, d, kind, du = string.match(o, '^(%d+):(%d+):(%a):([%x%-]+)$')
    out[#out + 1] = { k, d, kind, du }
  end
  return out
end

-- The out-edges of member `fi` of flow f (its `fo` field).
function L.outs(c, f, fi, fo)
  if fo == nil or fo == false or fo == '' then return EMPTY end
  if fo == '@' then fo = redis.call('HGET', L.ek(c, f), 'o' .. fi) or '' end
  return L.parse_outs(fo)
end

-- Appends out-edge entries `add` ('k:d:kind,...') to existing member `fi` (execution u).
function L.append_outs(c, f, fi, u, add)
  local xk = L.xk(c, u)
  local cur = redis.call('HGET', xk, 'fo')
  if cur == '@' then
    local ek = L.ek(c, f)
    local spilled = redis.call('HGET', ek, 'o' .. fi)
    if spilled and spilled ~= '' then add = spilled .. ',' .. add end
    redis.call('HSET', ek, 'o' .. fi, add)
    return
  end
  if cur and cur ~= '' then add = cur .. ',' .. add end
  if #add > FO_INLINE then
    redis.call('HSET', L.ek(c, f), 'o' .. fi, add)
    add = '@'
  end
  redis.call('HSET', xk, 'fo', add)
end

-- Applies one edge to downstream member index `d` (execution du) of flow f; `sat` says
-- whether the upstream outcome satisfies the edge.
function L.apply_edge(c, f, d, du, sat)
  local e = L.get_down(c, f, d, du)
  if e == nil then return end
  local dk = L.xk(c, du)
  local gn, gu = tonumber(e.gn or 0), tonumber(e.gu or 0)
  local field, value
  if sat then
    gn = gn + 1
    field, value = 'gn', gn
  else
    gu = gu + 1
    field, value = 'gu', gu
  end
  if e.gv ~= 'p' then
    redis.call('HSET', dk, field, value)
    return
  end
  local verdict = L.evaluate(e.gp, tonumber(e.gk or 0), tonumber(e.gi), gn, gu)
  if verdict == 'p' then
    redis.call('HSET', dk, field, value)
    return
  end
  local extra = { field, value, 'gv', verdict }
  local blocked = e.st == 'blocked'
  if blocked and L.cancel_pending(c, f) then
    -- A member of a cancelled flow never becomes eligible.
    L.get_down_end(c, e)
    L.finish(c, e, 'cancelled_by_flow', nil, false, extra)
    blocked = false
    extra = nil
  end
  if verdict == 's' then
    if blocked then
      L.make_eligible(c, du, e.ln, e.ci, e.pr, tonumber(e.dy or 0), extra)
      extra = nil
    end
    if extra then redis.call('HSET', dk, unpack(extra)) end
    if e.gs == 'c' then
      local ek = L.ek(c, f)
      local fk = L.fk(c, f)
      for _, k in ipairs(split(redis.call('HGET', ek, 'i' .. d), ',')) do
        local rec = split(redis.call('HGET', ek, 'e' .. k), '|')
        local uu = redis.call('HGET', fk, 'm' .. rec[1])
        local ue = L.load(c, uu)
        if ue and not TERMINAL[ue.st] then
          L.finish(c, ue, 'cancelled_by_group', 'cancelled', true, nil)
        end
      end
    end
  elseif blocked then
    L.get_down_end(c, e)
    L.finish(c, e, 'dependency_impossible', nil, false, extra)
  elseif extra then
    redis.call('HSET', dk, unpack(extra))
  end
end

-- Applies out-edges `outs` of a completed upstream in flow f whose final state is `st`, each at
-- most once (its applied mark is set with HSETNX): the paths where an edge may already have
-- been applied (cascade_completion after add_nodes applied a new edge). Returns the count.
function L.apply_marked(c, f, st, outs)
  local ek = L.ek(c, f)
  local success = BUCKET[st] == 'success'
  local applied = 0
  for _, o in ipairs(outs) do
    if redis.call('HSETNX', ek, 'a' .. o[1], '1') == 1 then
      applied = applied + 1
      L.apply_edge(c, f, o[2], o[4], success or o[3] == 'a')
    end
  end
  return applied
end

-- Cascades the completions queued by this call: inline when the out-degree is small and the
-- call's edge budget allows, otherwise recorded as pending for cascade_completion. Inline
-- edges get no applied mark: nothing can have applied them before (their upstream became
-- terminal in this call), and describe_flow derives their mark.
function L.drain(c)
  if not c.queue then return end
  local i = 1
  while i <= #c.queue do
    local item = c.queue[i]
    i = i + 1
    local outs = L.outs(c, item.fl, item.fi, item.fo)
    local n = #outs
    if n > 0 then
      if n <= INLINE_LIMIT and c.budget >= n then
        c.budget = c.budget - n
        local success = BUCKET[item.st] == 'success'
        for _, o in ipairs(outs) do
          L.apply_edge(c, item.fl, o[2], o[4], success or o[3] == 'a')
        end
      else
        redis.call('ZADD', c.p .. 'completions', c.now, item.u)
        L.note(c, 'c')
      end
    end
  end
  c.queue = nil
end

-- ------------------------------------------------------------------ creation

-- Reads one execution spec from ARGV starting at index i (10 values); returns spec, next i.
function L.read_spec(a, i)
  return {
    u = a[i], lane = a[i + 1], pr = a[i + 2], caps = a[i + 3], payload = a[i + 4],
    delay = tonumber(a[i + 5]), rp = a[i + 6], to = a[i + 7], dl = a[i + 8], key = a[i + 9],
  }, i + 10
end

-- Writes a new execution with one HSET. `blocked` members wait for their group; others are
-- eligible now.
function L.new_exec(c, s, member)
  if not member and s.pr == '0' and s.rp == '' and s.caps == '' and s.to == '' and s.dl == ''
      and s.delay == 0 then
    -- The common case: every optional field at its default, ready at once.
    local seq = redis.call('INCR', c.p .. 'seq')
    if #s.payload <= INLINE_BLOB then
      redis.call('HSET', c.p .. 'x:' .. s.u, 'st', 'ready', 'ln', s.lane, 'ca', c.now, 'p', 'i' .. s.payload)
    else
      redis.call('SET', c.p .. 'x:' .. s.u .. ':p', s.payload)
      redis.call('HSET', c.p .. 'x:' .. s.u, 'st', 'ready', 'ln', s.lane, 'ca', c.now)
    end
    local rk = c.p .. 'ready:' .. s.lane
    redis.call('ZADD', rk, MAX_PRIORITY * SEQ_SPAN + seq, s.u)
    L.ready_added(c, s.lane, rk)
    return
  end
  local h = { 'ln', s.lane, 'ca', c.now }
  if s.pr ~= '0' then h[#h + 1] = 'pr'; h[#h + 1] = s.pr end
  if s.rp ~= '' then h[#h + 1] = 'rp'; h[#h + 1] = s.rp end
  local cid = ''
  if s.caps ~= '' then
    cid = string.sub(redis.sha1hex(s.caps), 1, 16)
    h[#h + 1] = 'cp'; h[#h + 1] = s.caps
    h[#h + 1] = 'ci'; h[#h + 1] = cid
    redis.call('HSET', c.p .. 'caps:' .. s.lane, cid, s.caps)
  end
  if s.to ~= '' then h[#h + 1] = 'to'; h[#h + 1] = s.to end
  if s.dl ~= '' then
    local dl = c.now + tonumber(s.dl)
    h[#h + 1] = 'dl'; h[#h + 1] = dl
    redis.call('ZADD', c.p .. 'deadlines', dl, s.u)
  end
  if member then
    h[#h + 1] = 'fl'; h[#h + 1] = member.fl
    h[#h + 1] = 'fi'; h[#h + 1] = member.fi
    h[#h + 1] = 'nk'; h[#h + 1] = s.key
    if s.delay > 0 then h[#h + 1] = 'dy'; h[#h + 1] = s.delay end
    if member.fo then h[#h + 1] = 'fo'; h[#h + 1] = member.fo end
    if member.gi > 0 then
      for _, v in ipairs({ 'gp', member.gp, 'gk', member.gk, 'gs', member.gs, 'gi', member.gi,
                           'gv', 'p' }) do
        h[#h + 1] = v
      end
      if member.pi then h[#h + 1] = 'pi'; h[#h + 1] = '1' end
    end
  end
  if #s.payload <= INLINE_BLOB then
    h[#h + 1] = 'p'; h[#h + 1] = 'i' .. s.payload
  else
    redis.call('SET', L.xk(c, s.u) .. ':p', s.payload)
  end
  if member and member.gi > 0 then
    h[#h + 1] = 'st'; h[#h + 1] = 'blocked'
    redis.call('HSET', L.xk(c, s.u), unpack(h))
  elseif s.delay > 0 then
    L.make_delayed(c, s.u, s.lane, c.now + s.delay, h)
  else
    L.make_ready(c, s.u, s.lane, cid, s.pr, h)
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
          out[#out + 1] = { v[2], uu, 0, '' }
        else
          out[#out + 1] = { v[2], uu, 1, r }
        end
      end
    end
  end
  return out
end

-- Leases ready execution e (read by L.get_claim) to `worker`.
function L.claim_one(c, e, worker, ttl, lease)
  local u = e.u
  local xk = L.xk(c, u)
  local at0 = tonumber(e.at or 0)
  local ep0 = tonumber(e.ep or 0)
  local at, ep = at0 + 1, ep0 + 1
  if at0 > 0 then
    -- A retry: archive the previous attempt and clear its fields.
    local v = redis.call('HMGET', xk, 'wk', 'li', 'ax', 'as', 'an', 'ao', 'fm', 'fr', 'g')
    redis.call('RPUSH', xk .. ':att', cjson.encode({
      n = at0, w = v[1] or '', l = v[2] or '', e = tonumber(v[3] or ep0), s = tonumber(v[4] or '0'),
      t = tonumber(v[5] or '-1'), o = v[6] or '', m = v[7] or false, r = v[8] or false,
    }))
    redis.call('HDEL', xk, 'an', 'ao', 'fm', 'fr', 'dp', 'ax', 'g')
    if v[9] == 'b' then redis.call('DEL', xk .. ':g') end
  end
  local le = c.now + ttl
  local ad = -1
  if e.to then
    ad = c.now + tonumber(e.to)
    redis.call('HSET', xk, 'st', 'running', 'at', at, 'ep', ep, 'li', lease, 'wk', worker, 'le', le,
      'as', c.now, 'ad', ad)
    redis.call('ZADD', c.p .. 'timeouts', ad, u)
  else
    redis.call('HSET', xk, 'st', 'running', 'at', at, 'ep', ep, 'li', lease, 'wk', worker, 'le', le,
      'as', c.now)
  end
  redis.call('ZADD', c.p .. 'leases', le, u)
  local inputs = EMPTY
  if e.pi == '1' then inputs = L.inputs(c, e) end
  return { u, ep, lease, at, e.ln, tonumber(e.pr or 0), L.payload(c, u, e.p), inputs,
           e.fl or '', e.nk or '', le, ad, tonumber(e.dl or -1) }
end

-- A member just taken off ready set `cid` of `lane`: claim it into `out`, or end it if its
-- deadline passed or its flow is being cancelled; a stale entry is dropped.
function L.claim_popped(c, u, lane, cid, worker, ttl, base, out)
  local e = L.get_claim(c, u)
  if e == nil or e.st ~= 'ready' then return end
  e.ln, e.ci, e.popped = lane, cid, true
  if e.dl and tonumber(e.dl) <= c.now then
    L.finish(c, e, 'deadline_exceeded', nil, false, nil)
  elseif e.fl and L.cancel_pending(c, e.fl) then
    L.finish(c, e, 'cancelled_by_flow', nil, false, nil)
  else
    out[#out + 1] = L.claim_one(c, e, worker, ttl, L.lease_id(base, c.lease_n))
    c.lease_n = c.lease_n + 1
  end
end

-- Claims up to `max` ready executions of `lane` on the current partition whose capabilities
-- the worker offers. Returns the claimed list and how many the worker could still take here
-- (-1: some, not counted).
function L.claim(c, lane, worker, max, ttl, wcaps, base)
  -- Promote this lane's due delayed executions first.
  local due = redis.call('ZRANGEBYSCORE', c.p .. 'delayed:' .. lane, '-inf', c.now, 'LIMIT', 0, max + 16)
  for _, u in ipairs(due) do L.promote(c, u) end
  local out = {}
  local left = 0
  local guard = 0
  if wcaps == '' then
    -- One ready set: pop the best members directly. When a pop comes back short the set is
    -- empty; when every pop was full, a standalone server does not count what is left (the
    -- next claim that finds the set empty fixes the lane index), a cluster does (its client
    -- maintains the index from the count).
    local rk = c.p .. 'ready:' .. lane
    local empty = false
    while #out < max and guard < max + 64 do
      local want = max - #out
      local r = redis.call('ZPOPMIN', rk, want)
      if #r < 2 * want then empty = true end
      for i = 1, #r, 2 do
        guard = guard + 1
        L.claim_popped(c, r[i], lane, '', worker, ttl, base, out)
      end
      if empty then break end
    end
    if empty then
      left = 0
    elseif c.li then
      left = -1
    else
      left = redis.call('ZCARD', rk)
    end
  else
    -- The plain set and every capability set the worker covers: take the best head each time.
    local offered = {}
    for _, cap in ipairs(split(wcaps, ',')) do offered[cap] = true end
    local zs = { { c.p .. 'ready:' .. lane, '' } }
    local sets = redis.call('HGETALL', c.p .. 'caps:' .. lane)
    for i = 1, #sets, 2 do
      local ok = true
      for _, cap in ipairs(split(sets[i + 1], ',')) do
        if not offered[cap] then ok = false break end
      end
      if ok then zs[#zs + 1] = { L.readyk(c, lane, sets[i]), sets[i] } end
    end
    while #out < max and guard < max + 64 do
      guard = guard + 1
      local best, bestscore, bestz = nil, nil, nil
      for _, z in ipairs(zs) do
        local h = redis.call('ZRANGE', z[1], 0, 0, 'WITHSCORES')
        if h[1] and (best == nil or tonumber(h[2]) < bestscore) then
          best, bestscore, bestz = h[1], tonumber(h[2]), z
        end
      end
      if best == nil then break end
      redis.call('ZREM', bestz[1], best)
      L.claim_popped(c, best, lane, bestz[2], worker, ttl, base, out)
    end
    for _, z in ipairs(zs) do left = left + redis.call('ZCARD', z[1]) end
  end
  if left == 0 then L.missed(c, lane) end
  return out, left
end

-- Claims for a worker, starting on partition `first` (the current one, or '' for none), then
-- -- on a standalone server only -- on the lane's due partitions from its index, at most
-- `visits` partitions in all. Each partition's effects are flushed before the next.
-- Returns { groups {partition, claimed}, ready_left, next_delayed, stay }: on a cluster
-- ready_left / next_delayed describe the one partition visited (any capabilities); on a
-- standalone server `stay` is the partition to start from next time ('' for the index).
function L.claim_for(c, lane, worker, max, ttl, wcaps, base, first, rnd, visits)
  local groups = {}
  local got, stay = 0, ''
  local ready_left, next_delayed = -1, -1
  local order = {}
  if first ~= '' then order[1] = first end
  local pos, visited, indexed = 1, 0, false
  while got < max and visited < visits do
    local part = order[pos]
    if part == nil then
      if indexed or not c.li then break end
      indexed = true
      local due = redis.call('ZRANGEBYSCORE', c.li .. '{lane:' .. lane .. '}:parts', '-inf', c.now, 'LIMIT', 0, 256)
      local start = math.floor(rnd * #due)
      for i = 1, #due do
        local p = due[((start + i - 1) % #due) + 1]
        if p ~= first then order[#order + 1] = p end
      end
      part = order[pos]
      if part == nil then break end
    end
    pos = pos + 1
    visited = visited + 1
    if c.li and part ~= L.part(c) then
      c.p = c.li .. '{fp:' .. part .. '}:'
      c.part = part
      c.cancels = nil
    end
    local claimed, left = L.claim(c, lane, worker, max - got, ttl, wcaps, base)
    if not c.li then
      if left ~= 0 then
        ready_left = left
      else
        local ls = L.lane_status(c, lane)
        ready_left, next_delayed = ls[1], ls[2]
      end
    end
    L.drain(c)
    L.flush(c)
    if #claimed > 0 then
      groups[#groups + 1] = { part, claimed }
      got = got + #claimed
    end
    if left ~= 0 then stay = part end
  end
  return { groups, ready_left, next_delayed, stay }
end

-- The claim_next of complete / fail. ARGV from i: has_claim, lane, worker, max, ttl, caps,
-- lease_base, random, most partitions to visit.
function L.claim_next(c, a, i)
  if a[i] ~= '1' then return NO_NEXT end
  return L.claim_for(c, a[i + 1], a[i + 2], tonumber(a[i + 3]), tonumber(a[i + 4]), a[i + 5], a[i + 6],
    L.part(c), tonumber(a[i + 7]), tonumber(a[i + 8]))
end

-- ------------------------------------------------------------------ fencing

-- Checks a worker's fence. Returns nil when the execution is running under this live lease,
-- 'repeat' when the lease matches but the execution is no longer running, or an error reply.
function L.fence(c, e, epoch, lease)
  if tonumber(e.ep or 0) ~= tonumber(epoch) then
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
    return { 'ok', 0, L.effects(c) }
  end
  L.new_exec(c, s, nil)
  return { 'ok', 1, L.effects(c) }
end

-- Reads the node and edge lists of create_flow / add_nodes.
-- Node: spec (10) + gp, gk, gs, gi, pi. Edge: from, to, kind, pass (from is 'n<i>' for a node of
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
    out[#out + 1] = redis.call('HGET', L.xk(c, u), 'nk')
    out[#out + 1] = u
  end
  return out
end

-- Writes nodes (indices base..base+#nodes-1) and edges of a new flow or a patch.
-- `resolve(from)` maps an edge's 'from' to a flow member index. Returns the out-edge entries of
-- existing upstream members by member index.
local function write_graph(c, f, nodes, edges, base, resolve)
  local fk, ek = L.fk(c, f), L.ek(c, f)
  local ne0 = tonumber(redis.call('HGET', fk, 'ne') or '0')
  -- Edge records and lists first (they must exist before any node can be claimed or cascaded).
  local outs, ins = {}, {}
  local h = {}
  for n, ed in ipairs(edges) do
    local k = ne0 + n - 1
    local from = resolve(ed.from)
    local to = base + ed.to
    h[#h + 1] = 'e' .. k
    h[#h + 1] = from .. '|' .. to .. '|' .. ed.kind .. '|' .. ed.pass
    outs[from] = outs[from] or {}
    table.insert(outs[from], k .. ':' .. to .. ':' .. ed.kind .. ':' .. nodes[ed.to + 1].u)
    ins[to] = ins[to] or {}
    table.insert(ins[to], k)
  end
  for to, ks in pairs(ins) do
    h[#h + 1] = 'i' .. to
    h[#h + 1] = table.concat(ks, ',')
  end
  local existing = {}
  local fo = {}
  for from, list in pairs(outs) do
    local joined = table.concat(list, ',')
    if from >= base then
      if #joined > FO_INLINE then
        h[#h + 1] = 'o' .. from
        h[#h + 1] = joined
        joined = '@'
      end
      fo[from] = joined
    else
      existing[from] = joined
    end
  end
  if #h > 0 then redis.call('HSET', ek, unpack(h)) end
  local fh = { 'ne', ne0 + #edges }
  for n, s in ipairs(nodes) do
    local idx = base + n - 1
    fh[#fh + 1] = 'm' .. idx
    fh[#fh + 1] = s.u
    fh[#fh + 1] = 'n:' .. s.key
    fh[#fh + 1] = idx
  end
  redis.call('HSET', fk, unpack(fh))
  for from, add in pairs(existing) do
    L.append_outs(c, f, from, redis.call('HGET', fk, 'm' .. from), add)
  end
  for n, s in ipairs(nodes) do
    local idx = base + n - 1
    L.new_exec(c, s, { fl = f, fi = idx, gp = s.gp, gk = s.gk, gs = s.gs, gi = s.gi, pi = s.pi,
                       fo = fo[idx] })
  end
  return existing
end

local function create_flow(keys, a)
  local c = L.ctx(keys[1], a[1])
  local f = a[2]
  local nn, ne = tonumber(a[3]), tonumber(a[4])
  local fk = L.fk(c, f)
  if redis.call('EXISTS', fk) == 1 then
    return { 'ok', 0, flow_nodes_reply(c, f), L.effects(c) }
  end
  local nodes, edges = read_graph(a, 5, nn, ne)
  redis.call('HSET', fk, 'st', 'running', 'cr', '0', 'tt', nn, 'lf', nn, 'fg', 0, 'ca', c.now, 'nn', nn)
  redis.call('ZADD', c.p .. 'flows', c.now, f)
  write_graph(c, f, nodes, edges, 0, function(from) return tonumber(string.sub(from, 2)) end)
  return { 'ok', 1, {}, L.effects(c) }
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
      ids[#ids + 1] = s.key
      ids[#ids + 1] = redis.call('HGET', fk, 'm' .. idx)
    end
  end
  if existing == #nodes then return { 'ok', 0, ids, L.effects(c) } end
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
  redis.call('HINCRBY', fk, 'lf', #nodes)
  redis.call('HSET', fk, 'nn', base + #nodes)
  local outs = write_graph(c, f, nodes, edges, base, function(from)
    if string.sub(from, 1, 1) == 'k' then return ext[string.sub(from, 2)] end
    return base + tonumber(string.sub(from, 2))
  end)
  -- Edges from existing upstreams that already finished apply now (with applied marks: the
  -- upstream's own completion may still be pending and will skip them).
  for _, idx in pairs(ext) do
    local uu = redis.call('HGET', fk, 'm' .. idx)
    local st = redis.call('HGET', L.xk(c, uu), 'st')
    if TERMINAL[st] and outs[idx] then
      L.apply_marked(c, f, st, L.parse_outs(outs[idx]))
    end
  end
  L.drain(c)
  return { 'ok', 1, {}, L.effects(c) }
end

-- Cluster: one partition. ARGV: clock, lane, worker, max, ttl, caps, lease_base.
local function claim(keys, a)
  local c = L.ctx(keys[1], a[1])
  local r = L.claim_for(c, a[2], a[3], tonumber(a[4]), tonumber(a[5]), a[6], a[7], L.part(c), 0, 1)
  local claimed = {}
  if r[1][1] then claimed = r[1][1][2] end
  return { 'ok', claimed, r[2], r[3], L.effects(c) }
end

local function renew(keys, a)
  local c = L.ctx(keys[1], a[1])
  local u, lease, epoch, ttl = a[2], a[3], a[4], tonumber(a[5])
  local e = L.get_lease(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  local f = L.fence(c, e, epoch, lease)
  if f == 'repeat' then return { 'notactive', L.status(e) } end
  if f then return f end
  local le = c.now + ttl
  redis.call('HSET', L.xk(c, u), 'le', le)
  redis.call('ZADD', c.p .. 'leases', le, u)
  return { 'ok', le }
end

local function progress(keys, a)
  local c = L.ctx(keys[1], a[1])
  local u, lease, epoch = a[2], a[3], a[4]
  local e = L.get_lease(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  local f = L.fence(c, e, epoch, lease)
  if f == 'repeat' then return { 'notactive', L.status(e) } end
  if f then return f end
  local v = L.blob_field(c, u, ':g', a[5])
  if e.g == 'b' and v ~= 'b' then redis.call('DEL', L.xk(c, u) .. ':g') end
  redis.call('HSET', L.xk(c, u), 'g', v)
  return { 'ok' }
end

-- ARGV: clock, u, lease, epoch, has_result, result, claim_next (9 values, see L.claim_next).
local function complete(keys, a)
  local c = L.ctx(keys[1], a[1])
  local u, lease, epoch = a[2], a[3], a[4]
  local e = L.get_complete(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  local f = L.fence(c, e, epoch, lease)
  if f == 'repeat' then
    if e.st ~= 'succeeded' then return { 'notactive', L.status(e) } end
  elseif f then
    return f
  else
    local extra = nil
    if a[5] == '1' then extra = { 'r', L.blob_field(c, u, ':r', a[6]) } end
    L.finish(c, e, 'completed', 'succeeded', false, extra)
    L.drain(c)
  end
  local next = L.claim_next(c, a, 7)
  return { 'ok', next, L.effects(c) }
end

-- ARGV: clock, u, lease, epoch, message, retryable, random, claim_next (9 values).
local function fail(keys, a)
  local c = L.ctx(keys[1], a[1])
  local u, lease, epoch, msg, retryable, rnd = a[2], a[3], a[4], a[5], a[6] == '1', tonumber(a[7])
  local e = L.get_fence(c, u)
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
  local next = L.claim_next(c, a, 8)
  return { 'ok', disposition, next, L.effects(c) }
end

local function cancel(keys, a)
  local c = L.ctx(keys[1], a[1])
  local u = a[2]
  local e = L.load(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  if TERMINAL[e.st] then return { 'ok', 0, L.status(e), L.effects(c) } end
  local previous = e.st
  L.finish(c, e, 'cancelled_by_user', 'cancelled', true, nil)
  L.drain(c)
  return { 'ok', 1, previous, L.effects(c) }
end

-- Cancels up to `budget` unfinished members of flow f (by its stored cancel mode) from its
-- cancel cursor on. Returns cancelled count, whether members remain, and how many.
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
  redis.call('HSET', fk, 'cc', i)
  return cancelled, i < nn, nn - i
end

local function flow_done(c, f)
  local v = redis.call('HMGET', L.fk(c, f), 'lf')
  return tonumber(v[1] or '0') <= 0
end

local function cancel_flow(keys, a)
  local c = L.ctx(keys[1], a[1])
  local f, mode = a[2], a[3]
  local fk = L.fk(c, f)
  local v = redis.call('HMGET', fk, 'st', 'cr', 'cm')
  if not v[1] then return { 'notfound', 'flow', f } end
  if v[1] ~= 'running' then return { 'ok', 0, 0, v[1], L.effects(c) } end
  -- A repeat keeps the first mode unless this one cancels more.
  if v[2] ~= '1' or (mode == 'all' and v[3] ~= 'all') then
    redis.call('HSET', fk, 'cr', '1', 'cm', mode, 'cc', '0')
  end
  local cancelled, more, left = cancel_members(c, f, CANCEL_CHUNK)
  L.drain(c)
  local deferred = 0
  if more then
    redis.call('ZADD', c.p .. 'cancels', c.now, f)
    deferred = left
  end
  -- With nothing left unfinished, the flow finishes now (also when no member needed a cancel).
  if flow_done(c, f) then L.flow_finish(c, f) end
  return { 'ok', cancelled, deferred, redis.call('HGET', fk, 'st'), L.effects(c) }
end

local function change_priority(keys, a)
  local c = L.ctx(keys[1], a[1])
  local u, pr = a[2], a[3]
  local e = L.get_fence(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  if TERMINAL[e.st] then return { 'notactive', L.status(e) } end
  local score = nil
  local rk = nil
  if e.st == 'ready' then
    rk = L.readyk(c, e.ln, e.ci)
    score = redis.call('ZSCORE', rk, u)
  end
  redis.call('HSET', L.xk(c, u), 'pr', pr)
  if score then
    -- The FIFO sequence is the score's low part; it stays.
    local seq = tonumber(score) - (MAX_PRIORITY - tonumber(e.pr or 0)) * SEQ_SPAN
    redis.call('ZADD', rk, L.ready_score(pr, seq), u)
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
      out[#out + 1] = { r[i], v[1], v[2], tonumber(r[i + 1]) }
    end
  end
  return { 'ok', out }
end

local function cascade(keys, a)
  local c = L.ctx(keys[1], a[1])
  local u = a[2]
  if not redis.call('ZSCORE', c.p .. 'completions', u) then
    return { 'ok', 0, 1, L.effects(c) }
  end
  local v = redis.call('HMGET', L.xk(c, u), 'fl', 'fi', 'st', 'fo')
  if not v[1] then
    redis.call('ZREM', c.p .. 'completions', u)
    return { 'ok', 0, 1, L.effects(c) }
  end
  local f, fi, st = v[1], v[2], v[3]
  local ek = L.ek(c, f)
  local outs = L.outs(c, f, fi, v[4])
  local i = tonumber(redis.call('HGET', ek, 'c' .. fi) or '0') + 1
  local chunk = {}
  while i <= #outs and #chunk < CASCADE_CHUNK do
    chunk[#chunk + 1] = outs[i]
    i = i + 1
  end
  local applied = L.apply_marked(c, f, st, chunk)
  local finished = 0
  if i > #outs then
    redis.call('ZREM', c.p .. 'completions', u)
    redis.call('HDEL', ek, 'c' .. fi)
    finished = 1
  else
    redis.call('HSET', ek, 'c' .. fi, i - 1)
  end
  L.drain(c)
  return { 'ok', applied, finished, L.effects(c) }
end

-- ------------------------------------------------------------------ scanners

-- Due items of zset `key` (score <= maxscore) after the cursor, skipping `skip`, at most
-- `limit`. Returns items {member, score} and whether more due items follow.
local function due_items(key, maxscore, as, am, limit, skip)
  local items = {}
  local offset = 0
  local page = limit + 32
  local start = '-inf'
  if as then start = as end
  while true do
    local r = redis.call('ZRANGEBYSCORE', key, start, maxscore, 'WITHSCORES', 'LIMIT', offset, page)
    if #r == 0 then return items, false end
    for i = 1, #r, 2 do
      local m, s = r[i], tonumber(r[i + 1])
      local after = (as == nil) or (s > as) or (m > am)
      if after and not skip[m] then
        if #items >= limit then return items, true end
        items[#items + 1] = { m, s }
      end
    end
    if #r < page * 2 then return items, false end
    offset = offset + page
  end
end

-- Deletes execution u's keys.
local function delete_execution(c, u)
  local xk = L.xk(c, u)
  redis.call('DEL', xk, xk .. ':att', xk .. ':p', xk .. ':r', xk .. ':g')
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
          if flow_done(c, m) then L.flow_finish(c, m) end
        end
      end
      processed = processed + 1
    elseif kind == 'retention' then
      local what, id = string.sub(m, 1, 1), string.sub(m, 3)
      if what == 'x' then
        delete_execution(c, id)
      else
        local fk = L.fk(c, id)
        local nn = tonumber(redis.call('HGET', fk, 'nn') or '0')
        for i = 0, nn - 1 do
          local u = redis.call('HGET', fk, 'm' .. i)
          if u then
            delete_execution(c, u)
            redis.call('ZREM', c.p .. 'completions', u)
          end
        end
        redis.call('DEL', fk, L.ek(c, id))
        redis.call('ZREM', c.p .. 'cancels', id)
        redis.call('ZREM', c.p .. 'flows', id)
      end
      redis.call('ZREM', key, m)
      processed = processed + 1
    else
      local e = L.load(c, m)
      if e == nil then
        failures[#failures + 1] = { m, 'the index names an execution that does not exist' }
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
  -- The delayed-promotion scanner also repairs the lane indexes: it sets (or reports) the
  -- entry of every lane with work here, and forgets lanes without any.
  if kind == 'delayed_promotion' then
    for _, lane in ipairs(redis.call('SMEMBERS', c.p .. 'lanes')) do
      local ls = L.index_exact(c, lane)
      if ls[1] == 0 and ls[2] < 0 then redis.call('SREM', c.p .. 'lanes', lane) end
    end
  end
  local next = {}
  if more and last then next = { n2s(last[2]), last[1] } end
  local backlog = redis.call('ZCOUNT', key, '-inf', maxscore)
  return { 'ok', processed, failures, next, backlog, L.effects(c) }
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
  local blobs = { { 1, L.payload(c, u, e.p) } }
  for _, b in ipairs({ { 'r', ':r' }, { 'g', ':g' } }) do
    local v = L.get_blob(c, u, e[b[1]], b[2])
    if v == nil then blobs[#blobs + 1] = { 0, '' } else blobs[#blobs + 1] = { 1, v } end
  end
  return { 'ok', h, blobs, redis.call('LRANGE', xk .. ':att', 0, -1) }
end

local function describe_flow(keys, a)
  local c = { p = keys[1] }
  local f = a[1]
  local fk = L.fk(c, f)
  local fv = redis.call('HMGET', fk, 'st', 'cr', 'tt', 'lf', 'fg', 'ca', 'fa', 'nn', 'ne')
  if not fv[1] then return { 'notfound', 'flow', f } end
  -- Terminal members: total minus those left.
  fv[4] = tostring(tonumber(fv[3]) - tonumber(fv[4] or '0'))
  local members = {}
  local uuids, states = {}, {}
  for i = 0, tonumber(fv[8]) - 1 do
    local u = redis.call('HGET', fk, 'm' .. i)
    local v = redis.call('HMGET', L.xk(c, u), 'nk', 'st', 'er', 'gp', 'gk', 'gs', 'gi', 'gn', 'gu', 'gv')
    uuids[i], states[i] = u, v[2]
    if v[4] and not v[8] then v[8] = '0' end
    if v[4] and not v[9] then v[9] = '0' end
    members[#members + 1] = { u, v[1], v[2], v[3] or IMPLIED_ER[v[2]] or '', v[4] or '', v[5] or '', v[6] or '', v[7] or '',
                              v[8] or '', v[9] or '', v[10] or '' }
  end
  local ek = L.ek(c, f)
  local edges = {}
  local settled = {}
  for k = 0, tonumber(fv[9] or '0') - 1 do
    local v = redis.call('HMGET', ek, 'e' .. k, 'a' .. k)
    local applied = v[2] or '0'
    if applied ~= '1' then
      -- No mark: applied inline when its upstream is terminal and its completion is not
      -- pending (a pending completion marks each edge it applies).
      local from = tonumber(string.match(v[1], '^(%d+)|'))
      if settled[from] == nil then
        settled[from] = TERMINAL[states[from]] ~= nil
          and not redis.call('ZSCORE', c.p .. 'completions', uuids[from])
      end
      if settled[from] then applied = '1' end
    end
    edges[#edges + 1] = { v[1], applied }
  end
  for i = 1, 9 do if not fv[i] then fv[i] = '' end end
  return { 'ok', fv, members, edges }
end

-- Listing: the executions of one partition in one state, through that state's indexes (there
-- is no index of every execution). Sources, in name order: ready sets (`ready:<lane>` and
-- `ready:<lane>#<capset>`), `delayed` (or `delayed:<lane>`), `leases` (running), `terminal`
-- (finished standalone executions) and `flows` (every flow, expanded into its members: blocked
-- members and finished members live in no per-execution index). A position is
-- '<source>|<score>|<member>|<member index>'; a page continues after it.
local function list(keys, a)
  local c = { p = keys[1] }
  local state, lane, after, limit = a[1], a[2], a[3], tonumber(a[4])
  local sources = {}
  if state == 'ready' then
    local lanes
    if lane ~= '' then lanes = { lane } else lanes = redis.call('SMEMBERS', c.p .. 'lanes') end
    for _, ln in ipairs(lanes) do
      sources[#sources + 1] = { 'ready:' .. ln, 'z' }
      for _, cid in ipairs(redis.call('HKEYS', c.p .. 'caps:' .. ln)) do
        sources[#sources + 1] = { 'ready:' .. ln .. '#' .. cid, 'z' }
      end
    end
  elseif state == 'delayed' then
    if lane ~= '' then sources = { { 'delayed:' .. lane, 'z' } } else sources = { { 'delayed', 'z' } } end
  elseif state == 'running' then
    sources = { { 'leases', 'z' } }
  elseif state == 'blocked' then
    sources = { { 'flows', 'f' } }
  else
    sources = { { 'flows', 'f' }, { 'terminal', 't' } }
  end
  table.sort(sources, function(x, y) return x[1] < y[1] end)
  local cs, cscore, cmember, csub = nil, nil, nil, -1
  if after ~= '' then
    local p = split(after, '|')
    if #p ~= 4 or not tonumber(p[2]) or not tonumber(p[4]) then
      return { 'validation', 'after', 'not a list cursor: ' .. after }
    end
    cs, cscore, cmember, csub = p[1], tonumber(p[2]), p[3], tonumber(p[4])
  end
  local out = {}
  local scanned, scanned_max = 0, math.max(limit * 10, 2000)
  local cursor = ''
  -- Looks at execution u at position (name, score, member, sub): 'full' when the page is full
  -- and u matches (another page follows), 'stop' when the scan bound is reached.
  local function visit(u, name, score, member, sub)
    scanned = scanned + 1
    local v = redis.call('HMGET', L.xk(c, u), 'st', 'ln', 'pr', 'fl', 'ca')
    if v[1] == state and (lane == '' or v[2] == lane) then
      if #out >= limit then return 'full' end
      out[#out + 1] = { u, v[1], v[2], tonumber(v[3] or '0'), v[4] or '', tonumber(v[5]) }
    end
    cursor = name .. '|' .. n2s(score) .. '|' .. member .. '|' .. sub
    if scanned >= scanned_max then return 'stop' end
    return nil
  end
  for _, src in ipairs(sources) do
    local name, kind = src[1], src[2]
    if cs == nil or name >= cs then
      local resume = (cs ~= nil and name == cs)
      local start = '-inf'
      if resume then start = cscore end
      local offset = 0
      while true do
        local r = redis.call('ZRANGEBYSCORE', c.p .. name, start, '+inf', 'WITHSCORES', 'LIMIT', offset, 200)
        if #r == 0 then break end
        for i = 1, #r, 2 do
          local m, score = r[i], tonumber(r[i + 1])
          local from = -1
          local skip = false
          if resume and score == cscore then
            if m < cmember then skip = true elseif m == cmember then from = csub end
          end
          if not skip then
            if kind == 'z' then
              if from < 0 then
                local res = visit(m, name, score, m, 0)
                if res == 'full' then return { 'ok', out, cursor } end
                if res == 'stop' then return { 'ok', out, cursor } end
              end
            elseif kind == 't' then
              if from < 0 and string.sub(m, 1, 2) == 'x:' then
                local res = visit(string.sub(m, 3), name, score, m, 0)
                if res then return { 'ok', out, cursor } end
              end
            else
              local fk = L.fk(c, m)
              local fv = redis.call('HMGET', fk, 'st', 'nn')
              if fv[1] and not (state == 'blocked' and fv[1] ~= 'running') then
                for j = from + 1, tonumber(fv[2] or '0') - 1 do
                  local u = redis.call('HGET', fk, 'm' .. j)
                  if u then
                    local res = visit(u, name, score, m, j)
                    if res then return { 'ok', out, cursor } end
                  end
                end
              end
            end
          end
        end
        if #r < 400 then break end
        offset = offset + 200
      end
    end
  end
  return { 'ok', out, '' }
end

-- ------------------------------------------------------------------ lane index (own tag)

-- Standalone only (it touches several partitions): claims up to `max` from the worker's
-- preferred partition, then from those the lane index lists as due, in one call.
-- KEYS[1] = the lane index; ARGV: clock|root, lane, worker, max, ttl, caps, lease_base,
-- preferred partition or '', random in [0, 1), most partitions to visit.
local function claim_any(keys, a)
  local c = L.ctx('', a[1])
  if not c.li then return { 'validation', 'clock', 'claim_any needs the key root' } end
  c.part = ''
  local r = L.claim_for(c, a[2], a[3], tonumber(a[4]), tonumber(a[5]), a[6], a[7], a[8], tonumber(a[9]),
    tonumber(a[10]))
  return { 'ok', r[1], r[4] }
end

local function lane_due(keys, a)
  local c = L.ctx('', a[1])
  return { 'ok', redis.call('ZRANGEBYSCORE', keys[1], '-inf', c.now, 'LIMIT', 0, tonumber(a[2])) }
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
  redis.call('ZREMRANGEBYSCORE', ik, '-inf', c.now)
  redis.call('ZADD', ik, c.now + ttl, inst)
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
      out[#out + 1] = { a[i], 1, '', c.now + ttl }
    else
      out[#out + 1] = { a[i], 0, who, exp }
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
    if who and exp > c.now then out[#out + 1] = { h[i], who, exp } end
  end
  return { 'ok', out }
end

local RO = { 'no-writes' }
-- due_summary: the earliest score of each time index of the partition (-1 when empty), in
-- the order leases, delayed, timeouts, deadlines, cancels, terminal, completions. Read-only.
local DUE_INDEXES = { 'leases', 'delayed', 'timeouts', 'deadlines', 'cancels', 'terminal', 'completions' }
local function due(keys, a)
  local out = {}
  for i, name in ipairs(DUE_INDEXES) do
    local head = redis.call('ZRANGE', keys[1] .. name, 0, 0, 'WITHSCORES')
    if head[2] then out[i] = tonumber(head[2]) else out[i] = -1 end
  end
  return out
end

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
redis.register_function{ function_name = 'ff_due', callback = due, flags = RO }
redis.register_function('ff_claim_any', claim_any)
redis.register_function('ff_heartbeat', heartbeat)
redis.register_function('ff_remove_instance', remove_instance)
redis.register_function('ff_acquire', acquire)
redis.register_function('ff_release', release)
redis.register_function{ function_name = 'ff_owners', callback = owners, flags = RO }
