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

-- `redis.call` and the standard functions the library uses, as locals: a global or field lookup
-- per use costs more than many of the operations themselves. None of them exists while the
-- library loads, so `register` binds them when a function first runs (`call` on every call).
local call
local sub, find, byte, format, match, floor, concat, tinsert, tsort
local tonumber, tostring, ipairs, pairs, unpack

local function bind()
  sub, find, byte, format, match = string.sub, string.find, string.byte, string.format, string.match
  floor, concat, tinsert, tsort = math.floor, table.concat, table.insert, table.sort
  tonumber, tostring, ipairs, pairs, unpack = _G.tonumber, _G.tostring, _G.ipairs, _G.pairs, _G.unpack
end

-- Helpers, declared up front so that any of them can call any other.
local append_outs, apply_edge, apply_marked, backoff_ms, blob_field, cancel_pending, check_fence,
  claim_for, claim_lane, claim_next, claim_one, claim_popped, ctx, delayed_added, drain, effects,
  ekey, evaluate, fail_attempt, finish, fkey, flow_cancelled, flow_finish, flush, get_blob,
  get_claim, get_complete, get_down, get_down_end, get_fence, get_lease, hint, index_exact,
  member_place, new_reply, sample_due, claim_entry, complete_entry, down_entry, release_handoff,
  claim_handoff,
  index_set, lane_state, lease_id, load_exec, make_delayed, make_eligible, make_ready,
  member_ended, missed, new_exec, out_edges, parse_outs, part_of, payload_of, promote, read_inputs,
  read_spec, ready_added, ready_score, ready_taken, readyk, retry_policy, status_of, xkey

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
-- Payloads are kept in the execution hash as they are (field 'P') up to INLINE_BLOB bytes and
-- above BIG_BLOB: a larger value makes the hash a hashtable instead of a listpack, which costs
-- little next to such a payload and saves a key (a command on create and on every claim).
-- Those in between get their own key `x:<uuid>:p` (a finished execution stays small), except
-- for flow members, which keep any payload in 'P': their hashes have twice the fields of a
-- standalone execution, and reading a listpack hash scans it field by field (an absent field,
-- the common case of an option at its default, all of it), so for them the hashtable is the
-- cheaper form.
local BIG_BLOB = 1024
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

local function n2s(x)
  return format('%.0f', x)
end

local function split(s, sep)
  local out = {}
  if s == nil or s == false or s == '' then return out end
  local start = 1
  while true do
    local i = find(s, sep, start, true)
    if not i then
      out[#out + 1] = sub(s, start)
      return out
    end
    out[#out + 1] = sub(s, start, i - 1)
    start = i + #sep
  end
end

-- ------------------------------------------------------------------ context and keys

-- `clock` is the client's clock offset in ms, or '@<ms>' for a frozen test clock, followed on
-- a standalone server by '|<root>': the key root of the deployment, whose lane indexes
-- (`<root>{lane:<lane>}:parts`) the function then keeps in step itself.
function ctx(prefix, clock)
  local li = nil
  local bar = find(clock, '|', 1, true)
  if bar then
    li = sub(clock, bar + 1)
    clock = sub(clock, 1, bar - 1)
  end
  local now
  if byte(clock, 1) == 64 then
    now = sub(clock, 2) + 0
  else
    -- Arithmetic converts the strings (one strtod each; tonumber would take two).
    local t = call('TIME')
    local us = t[2] + 0
    now = t[1] * 1000 + (us - us % 1000) / 1000 + clock
  end
  -- Set when needed: queue (completions to cascade), rt / rtk (ready transitions, in order and by
  -- key: see ready_added), dt / dto (delayed lanes), miss / misso (lanes a claim found empty),
  -- pub / pubset (hints), idx / idxo (lane-index updates for the client), cancels (whether the
  -- partition has a deferred flow cancel), part (the partition number). Those a call usually
  -- sets are named here (nil), so that the table is allocated at its size once.
  return { p = prefix, now = now, li = li, budget = EDGE_BUDGET, lease_n = 0, part = nil, queue = nil,
           rt = nil, rtk = nil, cancels = nil, handoff = nil, handoff_lane = nil }
end

-- The partition number of the current prefix ('ff:<ns>:{fp:N}:'; a namespace has no '{').
function part_of(c)
  if not c.part then
    local p = c.p
    c.part = sub(p, find(p, '{fp:', 1, true) + 4, #p - 2)
  end
  return c.part
end

function xkey(c, u) return c.p .. 'x:' .. u end
function fkey(c, f) return c.p .. 'f:' .. f end
function ekey(c, f) return c.p .. 'f:' .. f .. ':edges' end
function readyk(c, lane, cid)
  if cid == nil or cid == false or cid == '' then return c.p .. 'ready:' .. lane end
  return c.p .. 'ready:' .. lane .. '#' .. cid
end

-- Typed readers of an execution's fields (one HMGET; the table is built by one constructor so
-- it is allocated once). nil when the execution does not exist; absent fields are nil.

-- What claiming a ready execution needs, as claim_popped reads it: HMGET of these fields (for a
-- flow member also its node key and whether it takes inputs; its place in the flow only when
-- needed, see member_place) ...
function get_claim(c, xk)
  return call('HMGET', xk, 'st', 'ep', 'at', 'pr', 'dl', 'to', 'P', 'fl', 'nk', 'pi')
end

-- ... and as a table (execution u).
function claim_entry(u, v)
  return { u = u, st = v[1], ep = v[2] or nil, at = v[3] or nil, pr = v[4] or nil, dl = v[5] or nil,
           to = v[6] or nil, P = v[7] or nil, fl = v[8] or nil, nk = v[9] or nil, pi = v[10] or nil,
           fi = nil, fo = nil }
end

-- Completes flow member e (from get_claim) with its member index and out-edges.
function member_place(c, e)
  local v = call('HMGET', c.p .. 'x:' .. e.u, 'fi', 'fo')
  e.fi, e.fo = v[1] or nil, v[2] or nil
end

-- What renew / progress need (the fence).
function get_lease(c, u)
  local v = call('HMGET', c.p .. 'x:' .. u, 'st', 'ep', 'at', 'er', 'li', 'le', 'g')
  if not v[1] then return nil end
  return { u = u, st = v[1], ep = v[2] or nil, at = v[3] or nil, er = v[4] or nil, li = v[5] or nil,
           le = v[6] or nil, g = v[7] or nil }
end

-- What complete needs: the fence, and ending the attempt, as HMGET of execution hash xk ...
function get_complete(c, xk)
  return call('HMGET', xk, 'st', 'ep', 'li', 'le', 'dl', 'to', 'fl', 'fi', 'fo')
end

-- ... and as a table (execution u; nil when it does not exist). The attempt count and end
-- reason only matter for an error reply: status_of reads them then (`partial`).
function complete_entry(u, xk, v)
  if not v[1] then return nil end
  return { u = u, st = v[1], ep = v[2] or nil, li = v[3] or nil, le = v[4] or nil, dl = v[5] or nil,
           to = v[6] or nil, fl = v[7] or nil, fi = v[8] or nil, fo = v[9] or nil, at = nil, er = nil,
           partial = xk }
end

-- What fail needs: the fence, and ending or retrying the attempt.
function get_fence(c, u)
  local v = call('HMGET', c.p .. 'x:' .. u, 'st', 'ep', 'at', 'er', 'li', 'le', 'ao', 'dp', 'dl', 'to',
    'ln', 'ci', 'pr', 'rp', 'fl', 'fi', 'fo')
  if not v[1] then return nil end
  return { u = u, st = v[1], ep = v[2] or nil, at = v[3] or nil, er = v[4] or nil, li = v[5] or nil,
           le = v[6] or nil, ao = v[7] or nil, dp = v[8] or nil, dl = v[9] or nil, to = v[10] or nil,
           ln = v[11] or nil, ci = v[12] or nil, pr = v[13] or nil, rp = v[14] or nil, fl = v[15] or nil,
           fi = v[16] or nil, fo = v[17] or nil }
end

-- What applying an edge to a downstream member (execution hash xk) needs: its group and what
-- making it eligible takes, as HMGET of these fields. Ending it (skip, cancel) takes more: see
-- get_down_end ...
function get_down(c, xk)
  if c.handoff_lane then
    -- A claim_next follows: also what claiming the member takes (13 to 19, see handoff).
    return call('HMGET', xk, 'st', 'gv', 'gp', 'gk', 'gi', 'gn', 'gu', 'gs', 'ln', 'ci', 'pr', 'dy',
      'ep', 'at', 'dl', 'to', 'P', 'nk', 'pi')
  end
  return call('HMGET', xk, 'st', 'gv', 'gp', 'gk', 'gi', 'gn', 'gu', 'gs', 'ln', 'ci', 'pr', 'dy')
end

-- ... as a table (member index d, execution u of flow f).
function down_entry(f, d, u, v)
  return { u = u, st = v[1], gv = v[2] or nil, gp = v[3] or nil, gk = v[4] or nil, gi = v[5] or nil,
           gn = v[6] or nil, gu = v[7] or nil, gs = v[8] or nil, ln = v[9] or nil, ci = v[10] or nil,
           pr = v[11] or nil, dy = v[12] or nil, fl = f, fi = d, dl = nil, fo = nil }
end

-- Completes e (from get_down) with what finish needs of a waiting member.
function get_down_end(c, e)
  local v = call('HMGET', c.p .. 'x:' .. e.u, 'dl', 'fo')
  e.dl, e.fo = v[1] or nil, v[2] or nil
end

-- Reads every field of execution u (paths off the hot path; a pending handoff of u is released
-- first, so that what it reads is current).
function load_exec(c, u)
  local h = c.handoff
  if h and h[1] == u then release_handoff(c) end
  local r = call('HGETALL', c.p .. 'x:' .. u)
  if #r == 0 then return nil end
  local e = {}
  for i = 1, #r, 2 do e[r[i]] = r[i + 1] end
  e.u = u
  return e
end

-- {state, epoch, attempt, end reason} of e (read by get_complete: its attempt and end reason
-- are read now).
function status_of(e)
  if e.partial then
    local v = call('HMGET', e.partial, 'at', 'er')
    e.at, e.er, e.partial = v[1] or nil, v[2] or nil, nil
  end
  return { e.st, (e.ep or 0) + 0, (e.at or 0) + 0, e.er or IMPLIED_ER[e.st] or '' }
end

-- ------------------------------------------------------------------ transitions, hints, lane index

-- A ready set just received a member (`before`: how many it held before, when the caller
-- knows): on its empty → non-empty transition the set is counted
-- for the rest of the call, and if it still holds work at the flush (a chain's claim_next may
-- have taken it at once), the lane gets its place in `lanes`, its lane-index entry and a
-- wake-up.
function ready_added(c, lane, rk, before)
  local rtk = c.rtk
  local t = rtk and rtk[rk]
  if t then
    t[3] = t[3] + 1
    return
  end
  if before then
    if before ~= 0 then return end
  elseif call('ZCARD', rk) ~= 1 then
    return
  end
  -- Counted from here on (ready_taken), so the flush knows whether it is still non-empty.
  t = { lane, rk, 1 }
  if not rtk then
    rtk = {}
    c.rt, c.rtk = {}, rtk
  end
  c.rt[#c.rt + 1] = t
  rtk[rk] = t
end

-- `n` members were just taken off ready set `rk` (nil: all of them, it is empty).
function ready_taken(c, rk, n)
  local t = c.rtk and c.rtk[rk]
  if not t then return end
  if n == nil or n >= t[3] then t[3] = 0 else t[3] = t[3] - n end
end

-- A delayed member of `lane` becomes claimable at `at`.
function delayed_added(c, lane, at)
  call('SADD', c.p .. 'lanes', lane)
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
function missed(c, lane)
  if not c.miss then c.miss, c.misso = {}, {} end
  if not c.miss[lane] then
    c.miss[lane] = true
    c.misso[#c.misso + 1] = lane
  end
end

-- Queues a wake-up hint for the current partition's channel: 'w|<lane>' (work ready),
-- 'f|<flow>' (flow finished), 'c' (completion pending).
function hint(c, msg)
  if not c.pub then c.pub, c.pubset = {}, {} end
  if not c.pubset[msg] then
    c.pubset[msg] = true
    c.pub[#c.pub + 1] = msg
  end
end

-- The lane has work on this partition claimable from `score` on (0 = now). Standalone: the
-- index is written here; cluster: reported to the client, which writes it (another slot).
function index_set(c, lane, score)
  if c.li then
    local key = c.li .. '{lane:' .. lane .. '}:parts'
    if score == 0 then
      call('ZADD', key, 0, part_of(c))
    else
      call('ZADD', key, 'LT', score, part_of(c))
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
function lane_state(c, lane)
  local ready = call('ZCARD', c.p .. 'ready:' .. lane)
  for _, cid in ipairs(call('HKEYS', c.p .. 'caps:' .. lane)) do
    ready = ready + call('ZCARD', c.p .. 'ready:' .. lane .. '#' .. cid)
  end
  local d = call('ZRANGE', c.p .. 'delayed:' .. lane, 0, 0, 'WITHSCORES')
  local nextd = -1
  if d[1] then nextd = tonumber(d[2]) end
  return { ready, nextd }
end

-- Sets this partition's lane-index entry from the lane's exact status (standalone), or
-- reports it (cluster; an empty lane is left to the client's own miss handling).
function index_exact(c, lane)
  local ls = lane_state(c, lane)
  if ls[1] > 0 then
    index_set(c, lane, 0)
  elseif ls[2] >= 0 then
    if c.li then
      call('ZADD', c.li .. '{lane:' .. lane .. '}:parts', ls[2], part_of(c))
    else
      index_set(c, lane, ls[2])
    end
  elseif c.li then
    call('ZREM', c.li .. '{lane:' .. lane .. '}:parts', part_of(c))
  end
  return ls
end

-- Applies this call's transitions on the current partition: lane-index entries, then hints
-- (a work-ready hint only if the work is still there: a chain's claim_next may have taken it
-- in the same call). Runs before a call switches partitions and before it replies.
function flush(c)
  -- A handoff no claim took (none should be left) becomes an ordinary ready member.
  if c.handoff then release_handoff(c) end
  if not (c.rt or c.dt or c.miss or c.pub) then return end
  if c.rt then
    for _, t in ipairs(c.rt) do
      if t[3] > 0 then
        call('SADD', c.p .. 'lanes', t[1])
        index_set(c, t[1], 0)
        hint(c, 'w|' .. t[1])
      end
    end
    c.rt, c.rtk = nil, nil
  end
  if c.dt then
    for _, lane in ipairs(c.dto) do index_set(c, lane, c.dt[lane]) end
    c.dt, c.dto = nil, nil
  end
  if c.miss then
    if c.li then
      for _, lane in ipairs(c.misso) do index_exact(c, lane) end
    end
    c.miss, c.misso = nil, nil
  end
  if c.pub then
    local ch = c.p .. 'hints'
    local cmd = 'SPUBLISH'
    if c.li then cmd = 'PUBLISH' end
    for _, msg in ipairs(c.pub) do call(cmd, ch, msg) end
    c.pub, c.pubset = nil, nil
  end
end

-- A reply starting with `a` and `b` (b may be nil), its array allocated for a claim block of
-- one execution: appending to a table beyond its array part rehashes it, each time it grows.
function new_reply(a, b)
  return { a, b, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
           nil, nil, nil, nil }
end

-- Flushes, and appends the lane-index updates for the client to reply R (its tail: lane,
-- score, lane, score, ...; nothing on a standalone server, where the function wrote them
-- itself). Returns R.
function effects(c, R)
  flush(c)
  if c.idx then
    local idx = c.idx
    for _, lane in ipairs(c.idxo) do
      R[#R + 1] = lane
      R[#R + 1] = idx[lane]
    end
    c.idx, c.idxo = nil, nil
  end
  return R
end

-- ------------------------------------------------------------------ blobs

-- A blob value as hash fields: inline ('i<bytes>') when small, otherwise written to its own
-- key `x:<uuid><suffix>` and marked 'b'. Returns the field value to store.
function blob_field(c, u, suffix, value)
  if #value <= INLINE_BLOB then return 'i' .. value end
  call('SET', c.p .. 'x:' .. u .. suffix, value)
  return 'b'
end

-- The payload of execution u whose field 'P' is `P`: that field, or (absent) `x:<uuid>:p`.
function payload_of(c, u, P)
  if P then return P end
  return call('GET', c.p .. 'x:' .. u .. ':p') or ''
end

function get_blob(c, u, v, suffix)
  if v == nil or v == false then return nil end
  if byte(v, 1) == 105 then return sub(v, 2) end
  local b = call('GET', c.p .. 'x:' .. u .. suffix)
  if not b then return '' end
  return b
end

-- ------------------------------------------------------------------ ready / delayed

function ready_score(pr, seq)
  return (MAX_PRIORITY - (pr or 0)) * SEQ_SPAN + seq
end

-- Makes u ready: one HSET (state plus `extra` fields), a fresh FIFO sequence, its ready set.
function make_ready(c, u, lane, cid, pr, extra)
  local h = c.handoff
  if h and h[4] == lane then release_handoff(c) end
  local seq = call('INCR', c.p .. 'seq')
  if extra then
    call('HSET', c.p .. 'x:' .. u, 'st', 'ready', unpack(extra))
  else
    call('HSET', c.p .. 'x:' .. u, 'st', 'ready')
  end
  local rk = readyk(c, lane, cid)
  call('ZADD', rk, ready_score(pr, seq), u)
  ready_added(c, lane, rk)
end

-- Makes u delayed until `at`: one HSET (state, available_at, `extra`), the delayed indexes.
function make_delayed(c, u, lane, at, extra)
  if extra then
    call('HSET', c.p .. 'x:' .. u, 'st', 'delayed', 'aa', at, unpack(extra))
  else
    call('HSET', c.p .. 'x:' .. u, 'st', 'delayed', 'aa', at)
  end
  call('ZADD', c.p .. 'delayed', at, u)
  call('ZADD', c.p .. 'delayed:' .. lane, at, u)
  delayed_added(c, lane, at)
end

-- Eligible now (ready) or after `delay` ms (delayed).
function make_eligible(c, u, lane, cid, pr, delay, extra)
  if delay > 0 then
    make_delayed(c, u, lane, c.now + delay, extra)
  else
    make_ready(c, u, lane, cid, pr, extra)
  end
end

function promote(c, u)
  local e = call('HMGET', c.p .. 'x:' .. u, 'st', 'ln', 'ci', 'pr')
  call('ZREM', c.p .. 'delayed', u)
  if e[2] then call('ZREM', c.p .. 'delayed:' .. e[2], u) end
  if e[1] ~= 'delayed' then return false end
  make_ready(c, u, e[2], e[3], e[4], nil)
  return true
end

-- ------------------------------------------------------------------ retry backoff

-- max_attempts and stored backoff of execution e ('rp'; absent = one attempt, no backoff).
function retry_policy(e)
  if not e.rp then return 1, 'f:0:0' end
  local i = find(e.rp, ';', 1, true)
  return tonumber(sub(e.rp, 1, i - 1)), sub(e.rp, i + 1)
end

-- The same formula as RetryPolicy::delay_after (square-and-multiply power, as powi), in ms
-- rounded up. bk is 'f:<secs>:<nanos>' or 'e:<isecs>:<inanos>:<factor>:<msecs>:<mnanos>:<jitter>'.
function backoff_ms(bk, attempt, rnd)
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
    b = floor(b / 2)
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
  local whole = floor(secs)
  local nanos = floor((secs - whole) * 1e9 + 0.5)
  return whole * 1000 + math.ceil(nanos / 1000000)
end

-- ------------------------------------------------------------------ terminal transitions

-- Moves execution e to the terminal state of `reason`, out of every index. For a running
-- execution the attempt ends with `outcome`; `bump` moves the epoch (fencing the worker out).
-- `extra` holds more hash fields to write. e needs: u, st, ln / ci (ready), to (running), dl,
-- ep (bump), fl / fi / fo (members); `e.popped` says a claim already took it off its ready set.
function finish(c, e, reason, outcome, bump, extra)
  local u = e.u
  local st = e.st
  if st == 'ready' then
    if not e.popped then
      local rk = readyk(c, e.ln, e.ci)
      ready_taken(c, rk, call('ZREM', rk, u))
    end
  elseif st == 'delayed' then
    call('ZREM', c.p .. 'delayed', u)
    call('ZREM', c.p .. 'delayed:' .. e.ln, u)
  elseif st == 'running' then
    call('ZREM', c.p .. 'leases', u)
    if e.to then call('ZREM', c.p .. 'timeouts', u) end
  end
  if e.dl then call('ZREM', c.p .. 'deadlines', u) end
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
  call('HSET', c.p .. 'x:' .. u, unpack(h))
  e.st = final
  e.er = reason
  if e.fl then
    member_ended(c, e, reason)
  else
    call('ZADD', c.p .. 'terminal', c.now, 'x:' .. u)
  end
end

-- Whether e's flow has a cancel requested (checked where a cancelled flow changes the outcome
-- of a running member's failed attempt).
function flow_cancelled(c, e)
  if not e.fl then return false end
  return call('HGET', fkey(c, e.fl), 'cr') == '1'
end

-- Whether flow f has a cancel in progress whose members may still be waiting (ready, delayed
-- or blocked). cancel_flow cancels every waiting member at once unless it defers the rest to
-- the `cancels` backlog, so only then can one be found: the backlog is checked once per call.
function cancel_pending(c, f)
  if c.cancels == nil then c.cancels = call('EXISTS', c.p .. 'cancels') == 1 end
  if not c.cancels then return false end
  return call('HGET', fkey(c, f), 'cr') == '1'
end

-- A failed attempt of running execution e (worker fail, lease expiry, timeout): retry with
-- backoff when attempts are left and the failure is retryable, otherwise fail it.
-- Returns the retry time, or false when the execution failed.
function fail_attempt(c, e, outcome, retryable, msg, rnd, bump)
  local u = e.u
  local at = tonumber(e.at or 0)
  local ma, bk = retry_policy(e)
  if retryable and at < ma and not flow_cancelled(c, e) then
    local delay = backoff_ms(bk, at, rnd)
    call('ZREM', c.p .. 'leases', u)
    if e.to then call('ZREM', c.p .. 'timeouts', u) end
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
    make_eligible(c, u, e.ln, e.ci, e.pr, delay, h)
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
  finish(c, e, reason, outcome, bump, extra)
  return false
end

-- ------------------------------------------------------------------ flows and the cascade

function member_ended(c, e, reason)
  local fk = fkey(c, e.fl)
  local left = call('HINCRBY', fk, 'lf', -1)
  if FAILS_FLOW[reason] then call('HINCRBY', fk, 'fg', 1) end
  if left <= 0 then flow_finish(c, e.fl) end
  if not c.queue then c.queue = {} end
  c.queue[#c.queue + 1] = { u = e.u, fl = e.fl, fi = e.fi, st = e.st, fo = e.fo }
end

function flow_finish(c, f)
  local fk = fkey(c, f)
  local v = call('HMGET', fk, 'cr', 'fg', 'st')
  if v[3] ~= 'running' then return end
  local st = 'succeeded'
  if v[1] == '1' then st = 'cancelled' elseif tonumber(v[2] or '0') > 0 then st = 'failed' end
  call('HSET', fk, 'st', st, 'fa', c.now)
  call('ZADD', c.p .. 'terminal', c.now, 'f:' .. f)
  if v[1] == '1' then call('ZREM', c.p .. 'cancels', f) end
  hint(c, 'f|' .. f)
end

function evaluate(gp, gk, gi, gn, gu)
  local required = gi
  if gp == 'y' then required = 1 elseif gp == 'q' then required = gk end
  if gn >= required then return 's' end
  if gu > gi - required then return 'i' end
  return 'p'
end

-- Parses out-edge entries '<edge>:<member>:<kind>:<member uuid>,...' into a list of
-- {edge, member, kind, uuid}.
function parse_outs(list)
  local out = {}
  local pos, n = 1, #list
  while pos <= n do
    -- '<edge>:<member>:' then a one-letter kind, ':' and the uuid up to ',' or the end.
    local a = find(list, ':', pos, true)
    local b = find(list, ':', a + 1, true)
    local comma = find(list, ',', b + 3, true) or n + 1
    out[#out + 1] = { sub(list, pos, a - 1), sub(list, a + 1, b - 1), sub(list, b + 1, b + 1),
                      sub(list, b + 3, comma - 1) }
    pos = comma + 1
  end
  return out
end

-- The out-edges of member `fi` of flow f (its `fo` field).
function out_edges(c, f, fi, fo)
  if fo == nil or fo == false or fo == '' then return EMPTY end
  if fo == '@' then fo = call('HGET', ekey(c, f), 'o' .. fi) or '' end
  return parse_outs(fo)
end

-- Appends out-edge entries `add` ('k:d:kind,...') to existing member `fi` (execution u).
function append_outs(c, f, fi, u, add)
  local xk = xkey(c, u)
  local cur = call('HGET', xk, 'fo')
  if cur == '@' then
    local ek = ekey(c, f)
    local spilled = call('HGET', ek, 'o' .. fi)
    if spilled and spilled ~= '' then add = spilled .. ',' .. add end
    call('HSET', ek, 'o' .. fi, add)
    return
  end
  if cur and cur ~= '' then add = cur .. ',' .. add end
  if #add > FO_INLINE then
    call('HSET', ekey(c, f), 'o' .. fi, add)
    add = '@'
  end
  call('HSET', xk, 'fo', add)
end

-- Applies one edge to downstream member index `d` (execution du) of flow f; `sat` says
-- whether the upstream outcome satisfies the edge.
function apply_edge(c, f, d, du, sat)
  local h = c.handoff
  if h and h[1] == du then release_handoff(c) end
  local dk = c.p .. 'x:' .. du
  local v = get_down(c, dk)
  if not v[1] then return end
  local gn, gu = (v[6] or 0) + 0, (v[7] or 0) + 0
  local field, value
  if sat then
    gn = gn + 1
    field, value = 'gn', gn
  else
    gu = gu + 1
    field, value = 'gu', gu
  end
  if v[2] ~= 'p' then
    call('HSET', dk, field, value)
    return
  end
  local verdict = evaluate(v[3], (v[4] or 0) + 0, v[5] + 0, gn, gu)
  if verdict == 'p' then
    call('HSET', dk, field, value)
    return
  end
  if verdict == 's' and v[1] == 'blocked' and not v[12] and v[8] ~= 'c' and not cancel_pending(c, f) then
    -- The common case, straight: a blocked member without a delay becomes ready (what the rest
    -- does through make_eligible) -- or, when this call's claim_next is about to claim from
    -- its ready set and the set is empty, goes to the claim directly (see handoff).
    local lane = v[9]
    local rk = readyk(c, lane, v[10])
    h = c.handoff
    if h and h[4] == lane then release_handoff(c) end
    local before = call('ZCARD', rk)
    if before == 0 and c.handoff_lane == lane and not v[10] and not c.handoff then
      c.handoff = { du, field, value, lane, v[11], v, f }
      return
    end
    local seq = call('INCR', c.p .. 'seq')
    call('HSET', dk, 'st', 'ready', field, value, 'gv', 's')
    call('ZADD', rk, ready_score(v[11], seq), du)
    ready_added(c, lane, rk, before)
    return
  end
  local e = down_entry(f, d, du, v)
  local extra = { field, value, 'gv', verdict }
  local blocked = e.st == 'blocked'
  if blocked and cancel_pending(c, f) then
    -- A member of a cancelled flow never becomes eligible.
    get_down_end(c, e)
    finish(c, e, 'cancelled_by_flow', nil, false, extra)
    blocked = false
    extra = nil
  end
  if verdict == 's' then
    if blocked then
      make_eligible(c, du, e.ln, e.ci, e.pr, tonumber(e.dy or 0), extra)
      extra = nil
    end
    if extra then call('HSET', dk, unpack(extra)) end
    if e.gs == 'c' then
      local ek = ekey(c, f)
      local fk = fkey(c, f)
      for _, k in ipairs(split(call('HGET', ek, 'i' .. d), ',')) do
        local rec = split(call('HGET', ek, 'e' .. k), '|')
        local uu = call('HGET', fk, 'm' .. rec[1])
        local ue = load_exec(c, uu)
        if ue and not TERMINAL[ue.st] then
          finish(c, ue, 'cancelled_by_group', 'cancelled', true, nil)
        end
      end
    end
  elseif blocked then
    get_down_end(c, e)
    finish(c, e, 'dependency_impossible', nil, false, extra)
  elseif extra then
    call('HSET', dk, unpack(extra))
  end
end

-- Applies out-edges `outs` of a completed upstream in flow f whose final state is `st`, each at
-- most once (its applied mark is set with HSETNX): the paths where an edge may already have
-- been applied (cascade_completion after add_nodes applied a new edge). Returns the count.
function apply_marked(c, f, st, outs)
  local ek = ekey(c, f)
  local success = BUCKET[st] == 'success'
  local applied = 0
  for _, o in ipairs(outs) do
    if call('HSETNX', ek, 'a' .. o[1], '1') == 1 then
      applied = applied + 1
      apply_edge(c, f, o[2], o[4], success or o[3] == 'a')
    end
  end
  return applied
end

-- Cascades the completions queued by this call: inline when the out-degree is small and the
-- call's edge budget allows, otherwise recorded as pending for cascade_completion. Inline
-- edges get no applied mark: nothing can have applied them before (their upstream became
-- terminal in this call), and describe_flow derives their mark.
function drain(c)
  if not c.queue then return end
  local i = 1
  while i <= #c.queue do
    local item = c.queue[i]
    i = i + 1
    local outs = out_edges(c, item.fl, item.fi, item.fo)
    local n = #outs
    if n > 0 then
      if n <= INLINE_LIMIT and c.budget >= n then
        c.budget = c.budget - n
        local success = BUCKET[item.st] == 'success'
        for _, o in ipairs(outs) do
          apply_edge(c, item.fl, o[2], o[4], success or o[3] == 'a')
        end
      else
        call('ZADD', c.p .. 'completions', c.now, item.u)
        hint(c, 'c')
      end
    end
  end
  c.queue = nil
end

-- ------------------------------------------------------------------ creation

-- Reads one execution spec from ARGV starting at index i (10 values); returns spec, next i.
function read_spec(a, i)
  return {
    u = a[i], lane = a[i + 1], pr = a[i + 2], caps = a[i + 3], payload = a[i + 4],
    delay = a[i + 5] + 0, rp = a[i + 6], to = a[i + 7], dl = a[i + 8], key = a[i + 9],
  }, i + 10
end

-- Writes a new execution with one HSET. `blocked` members wait for their group; others are
-- eligible now. (`create` writes a standalone execution with every option at its default
-- itself.)
function new_exec(c, s, member)
  local h = { 'ln', s.lane, 'ca', c.now }
  if s.pr ~= '0' then h[#h + 1] = 'pr'; h[#h + 1] = s.pr end
  if s.rp ~= '' then h[#h + 1] = 'rp'; h[#h + 1] = s.rp end
  local cid = ''
  if s.caps ~= '' then
    cid = sub(redis.sha1hex(s.caps), 1, 16)
    h[#h + 1] = 'cp'; h[#h + 1] = s.caps
    h[#h + 1] = 'ci'; h[#h + 1] = cid
    call('HSET', c.p .. 'caps:' .. s.lane, cid, s.caps)
  end
  if s.to ~= '' then h[#h + 1] = 'to'; h[#h + 1] = s.to end
  if s.dl ~= '' then
    local dl = c.now + s.dl
    h[#h + 1] = 'dl'; h[#h + 1] = dl
    call('ZADD', c.p .. 'deadlines', dl, s.u)
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
  local size = #s.payload
  if size <= INLINE_BLOB or size > BIG_BLOB or member then
    h[#h + 1] = 'P'; h[#h + 1] = s.payload
  else
    call('SET', xkey(c, s.u) .. ':p', s.payload)
  end
  if member and member.gi > 0 then
    h[#h + 1] = 'st'; h[#h + 1] = 'blocked'
    call('HSET', xkey(c, s.u), unpack(h))
  elseif s.delay > 0 then
    make_delayed(c, s.u, s.lane, c.now + s.delay, h)
  else
    make_ready(c, s.u, s.lane, cid, s.pr, h)
  end
end

-- ------------------------------------------------------------------ claiming

-- The lease id of the i-th execution (from 0) one call claims: `base` with i added to its last
-- 32 bits. The client derives the same ids from the base it sent, so replies leave them out.
function lease_id(base, i)
  if i == 0 then return base end
  local head = sub(base, 1, 28)
  local tail = tonumber(sub(base, 29, 36), 16)
  return head .. format('%08x', (tail + i) % 4294967296)
end

-- Appends the inputs of claimed flow member e to reply R: their count, then per pass-result
-- edge whose upstream succeeded its node key, execution, 1 and the result (0 and '' without).
function read_inputs(c, e, R)
  local at = #R + 1
  R[at] = 0
  local n = 0
  local ek = ekey(c, e.fl)
  local fk = fkey(c, e.fl)
  if not e.fi then member_place(c, e) end
  for _, k in ipairs(split(call('HGET', ek, 'i' .. e.fi), ',')) do
    local rec = split(call('HGET', ek, 'e' .. k), '|')
    if rec[4] == '1' then
      local uu = call('HGET', fk, 'm' .. rec[1])
      local v = call('HMGET', xkey(c, uu), 'st', 'nk', 'r')
      if v[1] == 'succeeded' then
        local r = get_blob(c, uu, v[3], ':r')
        local m = #R
        R[m + 1], R[m + 2] = v[2], uu
        if r == nil then
          R[m + 3], R[m + 4] = 0, ''
        else
          R[m + 3], R[m + 4] = 1, r
        end
        n = n + 1
      end
    end
  end
  R[at] = n
end

-- Leases ready execution e (read by get_claim) on partition `part` to `worker` until `le`, and
-- appends its record to reply R: partition, uuid, epoch, attempt, payload, flags, then by the
-- flags what the execution has beyond the defaults, in this order: priority (16), attempt
-- deadline (1), deadline (2), flow and node key (4: a flow member), inputs (8: as read_inputs
-- writes them).
function claim_one(c, R, e, worker, le, lease, part)
  local u = e.u
  local xk = c.p .. 'x:' .. u
  local at0 = (e.at or 0) + 0
  local ep0 = (e.ep or 0) + 0
  local at, ep = at0 + 1, ep0 + 1
  if at0 > 0 then
    -- A retry: archive the previous attempt and clear its fields.
    local v = call('HMGET', xk, 'wk', 'li', 'ax', 'as', 'an', 'ao', 'fm', 'fr', 'g')
    call('RPUSH', xk .. ':att', cjson.encode({
      n = at0, w = v[1] or '', l = v[2] or '', e = tonumber(v[3] or ep0), s = tonumber(v[4] or '0'),
      t = tonumber(v[5] or '-1'), o = v[6] or '', m = v[7] or false, r = v[8] or false,
    }))
    call('HDEL', xk, 'an', 'ao', 'fm', 'fr', 'dp', 'ax', 'g')
    if v[9] == 'b' then call('DEL', xk .. ':g') end
  end
  local flags = 0
  local ad
  if e.to then
    ad = c.now + e.to
    flags = 1
    call('HSET', xk, 'st', 'running', 'at', at, 'ep', ep, 'li', lease, 'wk', worker, 'le', le,
      'as', c.now, 'ad', ad)
    call('ZADD', c.p .. 'timeouts', ad, u)
  else
    call('HSET', xk, 'st', 'running', 'at', at, 'ep', ep, 'li', lease, 'wk', worker, 'le', le,
      'as', c.now)
  end
  call('ZADD', c.p .. 'leases', le, u)
  if e.dl then flags = flags + 2 end
  if e.fl then flags = flags + 4 end
  if e.pi == '1' then flags = flags + 8 end
  if e.pr then flags = flags + 16 end
  local n = #R
  R[n + 1], R[n + 2], R[n + 3], R[n + 4], R[n + 5], R[n + 6] = part, u, ep, at, payload_of(c, u, e.P), flags
  if flags > 0 then
    n = n + 6
    if e.pr then n = n + 1; R[n] = e.pr end
    if ad then n = n + 1; R[n] = ad end
    if e.dl then n = n + 1; R[n] = e.dl end
    if e.fl then R[n + 1], R[n + 2] = e.fl, e.nk or ''; n = n + 2 end
    if e.pi == '1' then read_inputs(c, e, R) end
  end
end

-- A member just taken off ready set `cid` of `lane` on partition `part`: claim it into reply R,
-- or end it if its deadline passed or its flow is being cancelled; a stale entry is dropped.
-- Returns whether it was claimed.
function claim_popped(c, R, u, lane, cid, worker, le, base, part)
  local xk = c.p .. 'x:' .. u
  local v = get_claim(c, xk)
  if v[1] ~= 'ready' then return false end
  local fl = v[8]
  if not (v[3] or v[5] or v[6] or v[10]) and not (fl and cancel_pending(c, fl)) then
    -- The common case, straight: the first attempt of an execution without deadlines or inputs
    -- (what claim_one does, without its generality).
    local lease = lease_id(base, c.lease_n)
    c.lease_n = c.lease_n + 1
    local ep = (v[2] or 0) + 1
    call('HSET', xk, 'st', 'running', 'at', 1, 'ep', ep, 'li', lease, 'wk', worker, 'le', le,
      'as', c.now)
    call('ZADD', c.p .. 'leases', le, u)
    local pr, n = v[4], #R
    local flags = 0
    if pr then flags = 16 end
    if fl then flags = flags + 4 end
    R[n + 1], R[n + 2], R[n + 3], R[n + 4], R[n + 5], R[n + 6] = part, u, ep, 1, payload_of(c, u, v[7]), flags
    n = n + 6
    if pr then n = n + 1; R[n] = pr end
    if fl then R[n + 1], R[n + 2] = fl, v[9] or '' end
    return true
  end
  local e = claim_entry(u, v)
  local reason = nil
  if e.dl and e.dl + 0 <= c.now then
    reason = 'deadline_exceeded'
  elseif e.fl and cancel_pending(c, e.fl) then
    reason = 'cancelled_by_flow'
  end
  if reason then
    e.ln, e.ci, e.popped = lane, cid, true
    if e.fl then member_place(c, e) end
    finish(c, e, reason, nil, false, nil)
    return false
  end
  claim_one(c, R, e, worker, le, lease_id(base, c.lease_n), part)
  c.lease_n = c.lease_n + 1
  return true
end

-- The handoff: a complete with claim_next whose cascade makes a member of the claimed lane
-- eligible (without capabilities or delay) while the lane's ready set on the partition is
-- empty would add it to the set, and the claim would pop it right after as the set's only
-- member. Instead the cascade leaves it to the claim (`c.handoff`: uuid, group field and value,
-- lane, priority, its fields as get_down read them, flow), which writes it running in one
-- HSET: no sequence, no ready-set add and pop, no second HMGET and HSET. Anything else that
-- makes a member of that lane ready first releases the handoff (the member becomes ready the
-- ordinary way, ahead of the other), so the order is what the ready set would have given; so
-- does anything that reads or ends the member itself.

-- Makes the pending handoff an ordinary ready member.
function release_handoff(c)
  local h = c.handoff
  c.handoff = nil
  make_ready(c, h[1], h[4], nil, h[5], { h[2], h[3], 'gv', 's' })
end

-- Claims the pending handoff (member h of `lane`, its fields as get_down read them) into reply
-- R, as claim_popped claims a popped member. When it is not a plain first attempt (deadlines,
-- inputs), it becomes an ordinary ready member instead, which the caller's pop then takes the
-- ordinary way. Returns whether it claimed it. (The fields are still current: anything in the
-- call that reads or ends the member first releases the handoff, see apply_edge and
-- load_exec.)
function claim_handoff(c, R, h, worker, le, base, part)
  local u, v = h[1], h[6]
  if v[14] or v[15] or v[16] or v[19] then
    c.handoff = h
    release_handoff(c)
    return false
  end
  local xk = c.p .. 'x:' .. u
  local lease = lease_id(base, c.lease_n)
  c.lease_n = c.lease_n + 1
  local ep = (v[13] or 0) + 1
  call('HSET', xk, 'st', 'running', 'at', 1, 'ep', ep, 'li', lease, 'wk', worker, 'le', le,
    'as', c.now, h[2], h[3], 'gv', 's')
  call('ZADD', c.p .. 'leases', le, u)
  local pr, n = v[11], #R
  local flags = 4
  if pr then flags = 20 end
  R[n + 1], R[n + 2], R[n + 3], R[n + 4], R[n + 5], R[n + 6] = part, u, ep, 1, payload_of(c, u, v[17]), flags
  n = n + 6
  if pr then n = n + 1; R[n] = pr end
  R[n + 1], R[n + 2] = h[7], v[18] or ''
  return true
end

-- Claims up to `max` ready executions of `lane` on the current partition (`part`) whose
-- capabilities the worker offers, into reply R. Returns how many it claimed and how many the
-- worker could still take here (-1: some, not counted).
function claim_lane(c, R, lane, worker, max, le, wcaps, base, part)
  local got = 0
  local left = 0
  local guard = 0
  if wcaps == '' then
    -- One ready set: pop the best members directly. When a pop comes back short the set is
    -- empty: the lane's due delayed executions are promoted then, once (a busy lane leaves
    -- them to the delayed-promotion scanner, which saves a command on every claim). When
    -- every pop was full, a standalone server does not count what is left (the next claim that
    -- finds the set empty fixes the lane index), a cluster does (its client maintains the
    -- index from the count).
    local rk = c.p .. 'ready:' .. lane
    local empty, promoted = false, false
    local h = c.handoff
    if h then
      c.handoff = nil
      if claim_handoff(c, R, h, worker, le, base, part) then got = 1 end
    end
    while got < max and guard < max + 64 do
      local want = max - got
      local r = call('ZPOPMIN', rk, want)
      if #r < 2 * want then
        empty = true
        ready_taken(c, rk, nil)
      else
        ready_taken(c, rk, want)
      end
      for i = 1, #r, 2 do
        guard = guard + 1
        if claim_popped(c, R, r[i], lane, '', worker, le, base, part) then got = got + 1 end
      end
      if empty then
        if promoted or got >= max then break end
        promoted = true
        local due = call('ZRANGEBYSCORE', c.p .. 'delayed:' .. lane, '-inf', c.now, 'LIMIT', 0,
          max - got + 16)
        local n = 0
        for i = 1, #due do
          if promote(c, due[i]) then n = n + 1 end
        end
        if n == 0 then break end
        empty = false
      end
    end
    if empty then
      left = 0
    elseif c.li then
      left = -1
    else
      left = call('ZCARD', rk)
    end
  else
    if c.handoff then release_handoff(c) end
    -- Promote this lane's due delayed executions first.
    local due = call('ZRANGEBYSCORE', c.p .. 'delayed:' .. lane, '-inf', c.now, 'LIMIT', 0, max + 16)
    for i = 1, #due do promote(c, due[i]) end
    -- The plain set and every capability set the worker covers: take the best head each time.
    local offered = {}
    for _, cap in ipairs(split(wcaps, ',')) do offered[cap] = true end
    local zs = { { c.p .. 'ready:' .. lane, '' } }
    local sets = call('HGETALL', c.p .. 'caps:' .. lane)
    for i = 1, #sets, 2 do
      local ok = true
      for _, cap in ipairs(split(sets[i + 1], ',')) do
        if not offered[cap] then ok = false break end
      end
      if ok then zs[#zs + 1] = { readyk(c, lane, sets[i]), sets[i] } end
    end
    while got < max and guard < max + 64 do
      guard = guard + 1
      local best, bestscore, bestz = nil, nil, nil
      for _, z in ipairs(zs) do
        local h = call('ZRANGE', z[1], 0, 0, 'WITHSCORES')
        if h[1] and (best == nil or tonumber(h[2]) < bestscore) then
          best, bestscore, bestz = h[1], tonumber(h[2]), z
        end
      end
      if best == nil then break end
      ready_taken(c, bestz[1], call('ZREM', bestz[1], best))
      if claim_popped(c, R, best, lane, bestz[2], worker, le, base, part) then got = got + 1 end
    end
    for _, z in ipairs(zs) do left = left + call('ZCARD', z[1]) end
  end
  if left == 0 then missed(c, lane) end
  return got, left
end

-- Appends to `order` (marking them in `seen`) up to `want` partitions that lane index `key`
-- lists as due by `now` and `seen` does not hold (`nseen` of them), in random order: from a
-- random sample of the index, or -- when the sample holds none that is due and unseen (the
-- index also lists partitions whose only work is delayed) -- its first due ones. Returns how
-- many it added: 0 only when every due partition is in `seen`. A sample, not the whole index:
-- reading and converting every entry would cost more than claiming.
function sample_due(key, now, want, seen, nseen, order)
  local added = 0
  local r = call('ZRANDMEMBER', key, want + nseen, 'WITHSCORES')
  for i = 1, #r, 2 do
    local p, score = r[i], r[i + 1]
    if added < want and not seen[p] and (score == '0' or score + 0 <= now) then
      order[#order + 1] = p
      seen[p] = true
      added = added + 1
    end
  end
  if added > 0 or #r == 0 then return added end
  r = call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, want + nseen)
  for i = 1, #r do
    local p = r[i]
    if added < want and not seen[p] then
      order[#order + 1] = p
      seen[p] = true
      added = added + 1
    end
  end
  return added
end

-- Claims for a worker into reply R, starting on partition `first` (the current one, or '' for
-- none), then -- on a standalone server only -- on due partitions of the lane index, at most
-- `visits` partitions in all. Each partition's effects are flushed before the next. Appends
-- the claim block: on a standalone server `stay` (the partition to start from next time, ''
-- for the index), on a cluster ready_left and next_delayed (of the one partition visited, any
-- capabilities); then the count, the lease expiry and the records (see claim_one).
function claim_for(c, R, lane, worker, max, ttl, wcaps, base, first, visits)
  local h = #R
  local le = c.now + ttl
  if c.li then
    R[h + 1], R[h + 2], R[h + 3] = '', 0, le
  else
    R[h + 1], R[h + 2], R[h + 3], R[h + 4] = -1, -1, 0, le
  end
  local got, stay = 0, ''
  local ready_left, next_delayed = -1, -1
  local visited = 0
  local part = first
  if part == '' then part = nil end
  -- Partitions to visit after `first` (sampled from the index when needed), and those seen.
  local order, seen, nseen, pos = nil, nil, 0, 1
  while got < max and visited < visits do
    if part == nil and order and order[pos] then
      part = order[pos]
      pos = pos + 1
    end
    if part == nil then
      -- The visited partitions are dry: sample the index again, until it has no due partition
      -- left that this call has not seen (a stale entry is fixed by the visit that finds it
      -- empty).
      if not c.li then break end
      if not order then
        order, seen = {}, {}
        if first ~= '' then seen[first], nseen = true, 1 end
      end
      local want = max - got
      if want > visits - visited then want = visits - visited end
      nseen = nseen + sample_due(c.li .. '{lane:' .. lane .. '}:parts', c.now, want, seen, nseen, order)
      part = order[pos]
      if part == nil then break end
      pos = pos + 1
    end
    visited = visited + 1
    if c.li and part ~= part_of(c) then
      c.p = c.li .. '{fp:' .. part .. '}:'
      c.part = part
      c.cancels = nil
    end
    local claimed, left = claim_lane(c, R, lane, worker, max - got, le, wcaps, base, part)
    if not c.li then
      if left ~= 0 then
        ready_left = left
      else
        local ls = lane_state(c, lane)
        ready_left, next_delayed = ls[1], ls[2]
      end
    end
    drain(c)
    flush(c)
    got = got + claimed
    if left ~= 0 then stay = part end
    part = nil
  end
  if c.li then
    R[h + 1], R[h + 2] = stay, got
  else
    R[h + 1], R[h + 2], R[h + 3] = ready_left, next_delayed, got
  end
end

-- The claim_next of complete / fail. ARGV from i: has_claim, lane, worker, max, ttl, caps,
-- lease_base, this partition's number, most partitions to visit. Appends the claim block (see
-- claim_for) to R when the caller asked for one.
function claim_next(c, R, a, i)
  if a[i] ~= '1' then return end
  c.part = a[i + 7]
  claim_for(c, R, a[i + 1], a[i + 2], a[i + 3] + 0, a[i + 4] + 0, a[i + 5], a[i + 6], a[i + 7],
    a[i + 8] + 0)
end

-- ------------------------------------------------------------------ fencing

-- Checks a worker's fence. Returns nil when the execution is running under this live lease,
-- 'repeat' when the lease matches but the execution is no longer running, or an error reply.
function check_fence(c, e, epoch, lease)
  -- Both are integers in their canonical decimal form (the client's, and the server's printing
  -- of the Lua number the library stored).
  if (e.ep or '0') ~= epoch then
    return { 'fenced', 'stale_epoch', status_of(e) }
  end
  if e.li ~= lease then
    return { 'fenced', 'lease_mismatch', status_of(e) }
  end
  if e.st == 'running' then
    if c.now >= e.le + 0 then
      return { 'fenced', 'lease_expired', status_of(e) }
    end
    return nil
  end
  return 'repeat'
end

-- ------------------------------------------------------------------ registered functions

local function version()
  return VERSION
end

-- ARGV: clock, then one execution spec (see read_spec).
local function create(keys, a)
  local c = ctx(keys[1], a[1])
  local u = a[2]
  local xk = c.p .. 'x:' .. u
  if call('EXISTS', xk) == 1 then return effects(c, { 'ok', 0 }) end
  if a[4] == '0' and a[5] == '' and a[7] == '0' and a[8] == '' and a[9] == '' and a[10] == '' then
    -- The common case, straight: every option at its default, ready at once.
    local lane, payload = a[3], a[6]
    local seq = call('INCR', c.p .. 'seq')
    local size = #payload
    if size <= INLINE_BLOB or size > BIG_BLOB then
      call('HSET', xk, 'st', 'ready', 'ln', lane, 'ca', c.now, 'P', payload)
    else
      call('SET', xk .. ':p', payload)
      call('HSET', xk, 'st', 'ready', 'ln', lane, 'ca', c.now)
    end
    local rk = c.p .. 'ready:' .. lane
    call('ZADD', rk, MAX_PRIORITY * SEQ_SPAN + seq, u)
    ready_added(c, lane, rk)
  else
    new_exec(c, read_spec(a, 2), nil)
  end
  return effects(c, { 'ok', 1 })
end

-- Reads the node and edge lists of create_flow / add_nodes.
-- Node: spec (10) + gp, gk, gs, gi, pi. Edge: from, to, kind, pass (from is 'n<i>' for a node of
-- the call or 'k<key>' for an existing node).
local function read_graph(a, i, nn, ne)
  local nodes, edges = {}, {}
  for n = 1, nn do
    local s
    s, i = read_spec(a, i)
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
  local fk = fkey(c, f)
  local nn = tonumber(call('HGET', fk, 'nn'))
  local out = {}
  for i = 0, nn - 1 do
    local u = call('HGET', fk, 'm' .. i)
    out[#out + 1] = call('HGET', xkey(c, u), 'nk')
    out[#out + 1] = u
  end
  return out
end

-- Writes nodes (indices base..base+#nodes-1) and edges of a new flow or a patch.
-- `resolve(from)` maps an edge's 'from' to a flow member index. Returns the out-edge entries of
-- existing upstream members by member index.
local function write_graph(c, f, nodes, edges, base, resolve)
  local fk, ek = fkey(c, f), ekey(c, f)
  local ne0 = tonumber(call('HGET', fk, 'ne') or '0')
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
    tinsert(outs[from], k .. ':' .. to .. ':' .. ed.kind .. ':' .. nodes[ed.to + 1].u)
    ins[to] = ins[to] or {}
    tinsert(ins[to], k)
  end
  for to, ks in pairs(ins) do
    h[#h + 1] = 'i' .. to
    h[#h + 1] = concat(ks, ',')
  end
  local existing = {}
  local fo = {}
  for from, list in pairs(outs) do
    local joined = concat(list, ',')
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
  if #h > 0 then call('HSET', ek, unpack(h)) end
  local fh = { 'ne', ne0 + #edges }
  for n, s in ipairs(nodes) do
    local idx = base + n - 1
    fh[#fh + 1] = 'm' .. idx
    fh[#fh + 1] = s.u
    fh[#fh + 1] = 'n:' .. s.key
    fh[#fh + 1] = idx
  end
  call('HSET', fk, unpack(fh))
  for from, add in pairs(existing) do
    append_outs(c, f, from, call('HGET', fk, 'm' .. from), add)
  end
  for n, s in ipairs(nodes) do
    local idx = base + n - 1
    new_exec(c, s, { fl = f, fi = idx, gp = s.gp, gk = s.gk, gs = s.gs, gi = s.gi, pi = s.pi,
                       fo = fo[idx] })
  end
  return existing
end

local function create_flow(keys, a)
  local c = ctx(keys[1], a[1])
  local f = a[2]
  local nn, ne = tonumber(a[3]), tonumber(a[4])
  local fk = fkey(c, f)
  if call('EXISTS', fk) == 1 then
    return effects(c, { 'ok', 0, flow_nodes_reply(c, f) })
  end
  local nodes, edges = read_graph(a, 5, nn, ne)
  call('HSET', fk, 'st', 'running', 'cr', '0', 'tt', nn, 'lf', nn, 'fg', 0, 'ca', c.now, 'nn', nn)
  call('ZADD', c.p .. 'flows', c.now, f)
  write_graph(c, f, nodes, edges, 0, function(from) return tonumber(sub(from, 2)) end)
  return effects(c, { 'ok', 1, {} })
end

local function add_nodes(keys, a)
  local c = ctx(keys[1], a[1])
  local f = a[2]
  local nn, ne = tonumber(a[3]), tonumber(a[4])
  local fk = fkey(c, f)
  if call('EXISTS', fk) == 0 then return { 'notfound', 'flow', f } end
  local nodes, edges = read_graph(a, 5, nn, ne)
  -- Existing keys: all → repeat; some → conflict.
  local existing = 0
  local first_dup = nil
  local ids = {}
  for _, s in ipairs(nodes) do
    local idx = call('HGET', fk, 'n:' .. s.key)
    if idx then
      existing = existing + 1
      first_dup = first_dup or s.key
      ids[#ids + 1] = s.key
      ids[#ids + 1] = call('HGET', fk, 'm' .. idx)
    end
  end
  if existing == #nodes then return effects(c, { 'ok', 0, ids }) end
  local fv = call('HMGET', fk, 'st', 'cr', 'nn')
  if fv[1] ~= 'running' or fv[2] == '1' then
    return { 'conflict', 'flow_not_open', fv[1], fv[2] }
  end
  if existing > 0 then return { 'conflict', 'duplicate_node', first_dup } end
  -- External upstreams must exist.
  local ext = {}
  for _, ed in ipairs(edges) do
    if sub(ed.from, 1, 1) == 'k' then
      local key = sub(ed.from, 2)
      if ext[key] == nil then
        local idx = call('HGET', fk, 'n:' .. key)
        if not idx then return { 'notfound', 'node', key } end
        ext[key] = tonumber(idx)
      end
    end
  end
  local base = tonumber(fv[3])
  call('HINCRBY', fk, 'tt', #nodes)
  call('HINCRBY', fk, 'lf', #nodes)
  call('HSET', fk, 'nn', base + #nodes)
  local outs = write_graph(c, f, nodes, edges, base, function(from)
    if sub(from, 1, 1) == 'k' then return ext[sub(from, 2)] end
    return base + tonumber(sub(from, 2))
  end)
  -- Edges from existing upstreams that already finished apply now (with applied marks: the
  -- upstream's own completion may still be pending and will skip them).
  for _, idx in pairs(ext) do
    local uu = call('HGET', fk, 'm' .. idx)
    local st = call('HGET', xkey(c, uu), 'st')
    if TERMINAL[st] and outs[idx] then
      apply_marked(c, f, st, parse_outs(outs[idx]))
    end
  end
  drain(c)
  return effects(c, { 'ok', 1, {} })
end

-- Cluster: one partition. ARGV: clock, lane, worker, max, ttl, caps, lease_base. Reply: 'ok', the
-- claim block (see claim_for), the effects.
local function claim(keys, a)
  local c = ctx(keys[1], a[1])
  local R = new_reply('ok')
  claim_for(c, R, a[2], a[3], a[4] + 0, a[5] + 0, a[6], a[7], part_of(c), 1)
  return effects(c, R)
end

local function renew(keys, a)
  local c = ctx(keys[1], a[1])
  local u, lease, epoch, ttl = a[2], a[3], a[4], tonumber(a[5])
  local e = get_lease(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  local f = check_fence(c, e, epoch, lease)
  if f == 'repeat' then return { 'notactive', status_of(e) } end
  if f then return f end
  local le = c.now + ttl
  call('HSET', xkey(c, u), 'le', le)
  call('ZADD', c.p .. 'leases', le, u)
  return { 'ok', le }
end

local function progress(keys, a)
  local c = ctx(keys[1], a[1])
  local u, lease, epoch = a[2], a[3], a[4]
  local e = get_lease(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  local f = check_fence(c, e, epoch, lease)
  if f == 'repeat' then return { 'notactive', status_of(e) } end
  if f then return f end
  local v = blob_field(c, u, ':g', a[5])
  if e.g == 'b' and v ~= 'b' then call('DEL', xkey(c, u) .. ':g') end
  call('HSET', xkey(c, u), 'g', v)
  return { 'ok' }
end

-- ARGV: clock, u, lease, epoch, has_result, result, claim_next (9 values, see claim_next).
-- Reply: 'ok', the claim block when asked for one (see claim_for), the effects.
local function complete(keys, a)
  local c = ctx(keys[1], a[1])
  local u, lease, epoch = a[2], a[3], a[4]
  local xk = c.p .. 'x:' .. u
  local v = get_complete(c, xk)
  if v[1] == 'running' and (v[2] or '0') == epoch and v[3] == lease and v[4] and c.now < v[4] + 0
      and not (v[5] or v[6]) then
    -- The common case, straight: an execution without deadlines whose lease is live succeeds
    -- (what finish does, without its generality).
    call('ZREM', c.p .. 'leases', u)
    if a[5] == '1' then
      call('HSET', xk, 'st', 'succeeded', 'fa', c.now, 'r', blob_field(c, u, ':r', a[6]))
    else
      call('HSET', xk, 'st', 'succeeded', 'fa', c.now)
    end
    local fl = v[7]
    if fl then
      -- A flow member: member_ended and the cascade (with a claim_next without capabilities,
      -- a member it makes ready in the claimed lane may go to the claim directly: handoff).
      if call('HINCRBY', c.p .. 'f:' .. fl, 'lf', -1) <= 0 then flow_finish(c, fl) end
      c.queue = { { u = u, fl = fl, fi = v[8] or nil, st = 'succeeded', fo = v[9] or nil } }
      if a[7] == '1' and a[12] == '' then c.handoff_lane = a[8] end
      drain(c)
    else
      call('ZADD', c.p .. 'terminal', c.now, 'x:' .. u)
    end
    local R = new_reply('ok')
    claim_next(c, R, a, 7)
    return effects(c, R)
  end
  local e = complete_entry(u, xk, v)
  if e == nil then return { 'notfound', 'execution', u } end
  local f = check_fence(c, e, epoch, lease)
  if f == 'repeat' then
    if e.st ~= 'succeeded' then return { 'notactive', status_of(e) } end
  elseif f then
    return f
  else
    local extra = nil
    if a[5] == '1' then extra = { 'r', blob_field(c, u, ':r', a[6]) } end
    finish(c, e, 'completed', 'succeeded', false, extra)
    drain(c)
  end
  local R = new_reply('ok')
  claim_next(c, R, a, 7)
  return effects(c, R)
end

-- ARGV: clock, u, lease, epoch, message, retryable, random, claim_next (9 values). Reply: 'ok',
-- the retry time (-1: failed), the claim block when asked for one, the effects.
local function fail(keys, a)
  local c = ctx(keys[1], a[1])
  local u, lease, epoch, msg, retryable, rnd = a[2], a[3], a[4], a[5], a[6] == '1', tonumber(a[7])
  local e = get_fence(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  local f = check_fence(c, e, epoch, lease)
  local disposition
  if f == 'repeat' then
    if e.ao ~= 'failed' or not e.dp then return { 'notactive', status_of(e) } end
    if e.dp == 'f' then disposition = -1 else disposition = tonumber(e.dp) end
  elseif f then
    return f
  else
    local r = fail_attempt(c, e, 'failed', retryable, msg, rnd, false)
    if r then disposition = r else disposition = -1 end
    drain(c)
  end
  local R = new_reply('ok', disposition)
  claim_next(c, R, a, 8)
  return effects(c, R)
end

local function cancel(keys, a)
  local c = ctx(keys[1], a[1])
  local u = a[2]
  local e = load_exec(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  if TERMINAL[e.st] then return effects(c, { 'ok', 0, status_of(e) }) end
  local previous = e.st
  finish(c, e, 'cancelled_by_user', 'cancelled', true, nil)
  drain(c)
  return effects(c, { 'ok', 1, previous })
end

-- Cancels up to `budget` unfinished members of flow f (by its stored cancel mode) from its
-- cancel cursor on. Returns cancelled count, whether members remain, and how many.
local function cancel_members(c, f, budget)
  local fk = fkey(c, f)
  local v = call('HMGET', fk, 'nn', 'cm', 'cc')
  local nn, mode, i = tonumber(v[1]), v[2], tonumber(v[3] or '0')
  local cancelled = 0
  while i < nn and cancelled < budget do
    local u = call('HGET', fk, 'm' .. i)
    local e = load_exec(c, u)
    if e and not TERMINAL[e.st] and (mode == 'all' or e.st ~= 'running') then
      finish(c, e, 'cancelled_by_flow', 'cancelled', true, nil)
      cancelled = cancelled + 1
    end
    i = i + 1
  end
  call('HSET', fk, 'cc', i)
  return cancelled, i < nn, nn - i
end

local function flow_done(c, f)
  local v = call('HMGET', fkey(c, f), 'lf')
  return tonumber(v[1] or '0') <= 0
end

local function cancel_flow(keys, a)
  local c = ctx(keys[1], a[1])
  local f, mode = a[2], a[3]
  local fk = fkey(c, f)
  local v = call('HMGET', fk, 'st', 'cr', 'cm')
  if not v[1] then return { 'notfound', 'flow', f } end
  if v[1] ~= 'running' then return effects(c, { 'ok', 0, 0, v[1] }) end
  -- A repeat keeps the first mode unless this one cancels more.
  if v[2] ~= '1' or (mode == 'all' and v[3] ~= 'all') then
    call('HSET', fk, 'cr', '1', 'cm', mode, 'cc', '0')
  end
  local cancelled, more, left = cancel_members(c, f, CANCEL_CHUNK)
  drain(c)
  local deferred = 0
  if more then
    call('ZADD', c.p .. 'cancels', c.now, f)
    deferred = left
  end
  -- With nothing left unfinished, the flow finishes now (also when no member needed a cancel).
  if flow_done(c, f) then flow_finish(c, f) end
  return effects(c, { 'ok', cancelled, deferred, call('HGET', fk, 'st') })
end

local function change_priority(keys, a)
  local c = ctx(keys[1], a[1])
  local u, pr = a[2], a[3]
  local e = get_fence(c, u)
  if e == nil then return { 'notfound', 'execution', u } end
  if TERMINAL[e.st] then return { 'notactive', status_of(e) } end
  local score = nil
  local rk = nil
  if e.st == 'ready' then
    rk = readyk(c, e.ln, e.ci)
    score = call('ZSCORE', rk, u)
  end
  call('HSET', xkey(c, u), 'pr', pr)
  if score then
    -- The FIFO sequence is the score's low part; it stays.
    local seq = tonumber(score) - (MAX_PRIORITY - tonumber(e.pr or 0)) * SEQ_SPAN
    call('ZADD', rk, ready_score(pr, seq), u)
  end
  return { 'ok' }
end

local function pending(keys, a)
  local c = { p = keys[1] }
  local r = call('ZRANGE', c.p .. 'completions', 0, tonumber(a[1]) - 1, 'WITHSCORES')
  local out = {}
  for i = 1, #r, 2 do
    local v = call('HMGET', xkey(c, r[i]), 'fl', 'st')
    if v[1] then
      out[#out + 1] = { r[i], v[1], v[2], tonumber(r[i + 1]) }
    end
  end
  return { 'ok', out }
end

local function cascade(keys, a)
  local c = ctx(keys[1], a[1])
  local u = a[2]
  if not call('ZSCORE', c.p .. 'completions', u) then
    return effects(c, { 'ok', 0, 1 })
  end
  local v = call('HMGET', xkey(c, u), 'fl', 'fi', 'st', 'fo')
  if not v[1] then
    call('ZREM', c.p .. 'completions', u)
    return effects(c, { 'ok', 0, 1 })
  end
  local f, fi, st = v[1], v[2], v[3]
  local ek = ekey(c, f)
  local outs = out_edges(c, f, fi, v[4])
  local i = tonumber(call('HGET', ek, 'c' .. fi) or '0') + 1
  local chunk = {}
  while i <= #outs and #chunk < CASCADE_CHUNK do
    chunk[#chunk + 1] = outs[i]
    i = i + 1
  end
  local applied = apply_marked(c, f, st, chunk)
  local finished = 0
  if i > #outs then
    call('ZREM', c.p .. 'completions', u)
    call('HDEL', ek, 'c' .. fi)
    finished = 1
  else
    call('HSET', ek, 'c' .. fi, i - 1)
  end
  drain(c)
  return effects(c, { 'ok', applied, finished })
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
    local r = call('ZRANGEBYSCORE', key, start, maxscore, 'WITHSCORES', 'LIMIT', offset, page)
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
  local xk = xkey(c, u)
  call('DEL', xk, xk .. ':att', xk .. ':p', xk .. ':r', xk .. ':g')
end

local function scan(keys, a)
  local c = ctx(keys[1], a[1])
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
    r = r - floor(r)
    if kind == 'cancel_backlog' then
      local v = call('HMGET', fkey(c, m), 'st', 'cr')
      if v[1] ~= 'running' or v[2] ~= '1' then
        call('ZREM', key, m)
      else
        local cancelled, left = cancel_members(c, m, budget)
        budget = budget - cancelled
        if not left then
          call('ZREM', key, m)
          if flow_done(c, m) then flow_finish(c, m) end
        end
      end
      processed = processed + 1
    elseif kind == 'retention' then
      local what, id = sub(m, 1, 1), sub(m, 3)
      if what == 'x' then
        delete_execution(c, id)
      else
        local fk = fkey(c, id)
        local nn = tonumber(call('HGET', fk, 'nn') or '0')
        for i = 0, nn - 1 do
          local u = call('HGET', fk, 'm' .. i)
          if u then
            delete_execution(c, u)
            call('ZREM', c.p .. 'completions', u)
          end
        end
        call('DEL', fk, ekey(c, id))
        call('ZREM', c.p .. 'cancels', id)
        call('ZREM', c.p .. 'flows', id)
      end
      call('ZREM', key, m)
      processed = processed + 1
    else
      local e = load_exec(c, m)
      if e == nil then
        failures[#failures + 1] = { m, 'the index names an execution that does not exist' }
      elseif kind == 'delayed_promotion' then
        promote(c, m)
        processed = processed + 1
      elseif kind == 'execution_deadline' then
        if TERMINAL[e.st] then
          call('ZREM', key, m)
        else
          finish(c, e, 'deadline_exceeded', 'expired', true, nil)
        end
        processed = processed + 1
      else
        -- lease expiry / attempt timeout of a running execution
        if e.st ~= 'running' then
          call('ZREM', key, m)
        elseif kind == 'lease_expiry' and tonumber(e.le) > c.now then
          call('ZADD', key, e.le, m)
        elseif kind == 'attempt_timeout' and (not e.ad or tonumber(e.ad) > c.now) then
          if not e.ad then call('ZREM', key, m) else call('ZADD', key, e.ad, m) end
        else
          local outcome = 'lease_expired'
          if kind == 'attempt_timeout' then outcome = 'attempt_timeout' end
          fail_attempt(c, e, outcome, true, nil, r, true)
        end
        processed = processed + 1
      end
    end
  end
  -- Every due item ends first, then the cascades run (as in the reference backend: an item's
  -- own outcome is never pre-empted by a cascade from another item of the same call).
  drain(c)
  -- The delayed-promotion scanner also repairs the lane indexes: it sets (or reports) the
  -- entry of every lane with work here, and forgets lanes without any.
  if kind == 'delayed_promotion' then
    for _, lane in ipairs(call('SMEMBERS', c.p .. 'lanes')) do
      local ls = index_exact(c, lane)
      if ls[1] == 0 and ls[2] < 0 then call('SREM', c.p .. 'lanes', lane) end
    end
  end
  local next = {}
  if more and last then next = { n2s(last[2]), last[1] } end
  local backlog = call('ZCOUNT', key, '-inf', maxscore)
  return effects(c, { 'ok', processed, failures, next, backlog })
end

local function lane_status(keys, a)
  local c = { p = keys[1] }
  local ls = lane_state(c, a[1])
  return { 'ok', ls[1], ls[2] }
end

-- ------------------------------------------------------------------ reads

local function describe(keys, a)
  local c = { p = keys[1] }
  local u = a[1]
  local xk = xkey(c, u)
  local h = call('HGETALL', xk)
  if #h == 0 then return { 'notfound', 'execution', u } end
  local e = {}
  for i = 1, #h, 2 do e[h[i]] = h[i + 1] end
  local blobs = { { 1, payload_of(c, u, e.P) } }
  for _, b in ipairs({ { 'r', ':r' }, { 'g', ':g' } }) do
    local v = get_blob(c, u, e[b[1]], b[2])
    if v == nil then blobs[#blobs + 1] = { 0, '' } else blobs[#blobs + 1] = { 1, v } end
  end
  return { 'ok', h, blobs, call('LRANGE', xk .. ':att', 0, -1) }
end

local function describe_flow(keys, a)
  local c = { p = keys[1] }
  local f = a[1]
  local fk = fkey(c, f)
  local fv = call('HMGET', fk, 'st', 'cr', 'tt', 'lf', 'fg', 'ca', 'fa', 'nn', 'ne')
  if not fv[1] then return { 'notfound', 'flow', f } end
  -- Terminal members: total minus those left.
  fv[4] = tostring(tonumber(fv[3]) - tonumber(fv[4] or '0'))
  local members = {}
  local uuids, states = {}, {}
  for i = 0, tonumber(fv[8]) - 1 do
    local u = call('HGET', fk, 'm' .. i)
    local v = call('HMGET', xkey(c, u), 'nk', 'st', 'er', 'gp', 'gk', 'gs', 'gi', 'gn', 'gu', 'gv')
    uuids[i], states[i] = u, v[2]
    if v[4] and not v[8] then v[8] = '0' end
    if v[4] and not v[9] then v[9] = '0' end
    members[#members + 1] = { u, v[1], v[2], v[3] or IMPLIED_ER[v[2]] or '', v[4] or '', v[5] or '', v[6] or '', v[7] or '',
                              v[8] or '', v[9] or '', v[10] or '' }
  end
  local ek = ekey(c, f)
  local edges = {}
  local settled = {}
  for k = 0, tonumber(fv[9] or '0') - 1 do
    local v = call('HMGET', ek, 'e' .. k, 'a' .. k)
    local applied = v[2] or '0'
    if applied ~= '1' then
      -- No mark: applied inline when its upstream is terminal and its completion is not
      -- pending (a pending completion marks each edge it applies).
      local from = tonumber(match(v[1], '^(%d+)|'))
      if settled[from] == nil then
        settled[from] = TERMINAL[states[from]] ~= nil
          and not call('ZSCORE', c.p .. 'completions', uuids[from])
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
    if lane ~= '' then lanes = { lane } else lanes = call('SMEMBERS', c.p .. 'lanes') end
    for _, ln in ipairs(lanes) do
      sources[#sources + 1] = { 'ready:' .. ln, 'z' }
      for _, cid in ipairs(call('HKEYS', c.p .. 'caps:' .. ln)) do
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
  tsort(sources, function(x, y) return x[1] < y[1] end)
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
    local v = call('HMGET', xkey(c, u), 'st', 'ln', 'pr', 'fl', 'ca')
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
        local r = call('ZRANGEBYSCORE', c.p .. name, start, '+inf', 'WITHSCORES', 'LIMIT', offset, 200)
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
              if from < 0 and sub(m, 1, 2) == 'x:' then
                local res = visit(sub(m, 3), name, score, m, 0)
                if res then return { 'ok', out, cursor } end
              end
            else
              local fk = fkey(c, m)
              local fv = call('HMGET', fk, 'st', 'nn')
              if fv[1] and not (state == 'blocked' and fv[1] ~= 'running') then
                for j = from + 1, tonumber(fv[2] or '0') - 1 do
                  local u = call('HGET', fk, 'm' .. j)
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
-- preferred partition or '', most partitions to visit. Reply: 'ok', the claim block (see
-- claim_for).
local function claim_any(keys, a)
  local c = ctx('', a[1])
  if not c.li then return { 'validation', 'clock', 'claim_any needs the key root' } end
  c.part = ''
  local R = new_reply('ok')
  claim_for(c, R, a[2], a[3], a[4] + 0, a[5] + 0, a[6], a[7], a[8], a[9] + 0)
  return R
end

-- Cluster: up to ARGV[2] partitions lane index KEYS[1] lists as due, in random order (see
-- sample_due).
local function lane_due(keys, a)
  local c = ctx('', a[1])
  local order = { 'ok' }
  sample_due(keys[1], c.now, a[2] + 0, {}, 0, order)
  return order
end

-- ------------------------------------------------------------------ coordination ({coord} tag)

local function owner_of(v)
  if not v then return nil, nil end
  local who, exp = match(v, '^(.*)|(%d+)$')
  return who, tonumber(exp)
end

local function heartbeat(keys, a)
  local c = ctx(keys[1], a[1])
  local inst, ttl = a[2], tonumber(a[3])
  local ik = c.p .. 'instances'
  call('ZREMRANGEBYSCORE', ik, '-inf', c.now)
  call('ZADD', ik, c.now + ttl, inst)
  return { 'ok', call('ZRANGE', ik, 0, -1, 'WITHSCORES') }
end

local function remove_instance(keys, a)
  local c = ctx(keys[1], a[1])
  local inst = a[2]
  call('ZREM', c.p .. 'instances', inst)
  local ok = c.p .. 'owners'
  local h = call('HGETALL', ok)
  for i = 1, #h, 2 do
    local who = owner_of(h[i + 1])
    if who == inst then call('HDEL', ok, h[i]) end
  end
  return { 'ok' }
end

local function acquire(keys, a)
  local c = ctx(keys[1], a[1])
  local inst, ttl = a[2], tonumber(a[3])
  local ok = c.p .. 'owners'
  local out = {}
  for i = 4, #a do
    local who, exp = owner_of(call('HGET', ok, a[i]))
    if who == nil or exp <= c.now or who == inst then
      call('HSET', ok, a[i], inst .. '|' .. n2s(c.now + ttl))
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
    local who = owner_of(call('HGET', ok, a[i]))
    if who == inst then call('HDEL', ok, a[i]) end
  end
  return { 'ok' }
end

local function owners(keys, a)
  local c = ctx(keys[1], a[1])
  local h = call('HGETALL', c.p .. 'owners')
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
    local head = call('ZRANGE', keys[1] .. name, 0, 0, 'WITHSCORES')
    if head[2] then out[i] = tonumber(head[2]) else out[i] = -1 end
  end
  return out
end

-- Registers `fn` as function `name`: it binds `call` first.
local function register(name, fn, flags)
  local function bound(keys, args)
    if not sub then bind() end
    call = redis.call
    return fn(keys, args)
  end
  if flags then
    redis.register_function{ function_name = name, callback = bound, flags = flags }
  else
    redis.register_function(name, bound)
  end
end

register('ff_version', version, RO)
register('ff_create', create)
register('ff_create_flow', create_flow)
register('ff_add_nodes', add_nodes)
register('ff_claim', claim)
register('ff_renew', renew)
register('ff_progress', progress)
register('ff_complete', complete)
register('ff_fail', fail)
register('ff_cancel', cancel)
register('ff_cancel_flow', cancel_flow)
register('ff_priority', change_priority)
register('ff_pending', pending, RO)
register('ff_cascade', cascade)
register('ff_scan', scan)
register('ff_lane_status', lane_status, RO)
register('ff_describe', describe, RO)
register('ff_describe_flow', describe_flow, RO)
register('ff_list', list, RO)
register('ff_lane_due', lane_due, RO)
register('ff_due', due, RO)
register('ff_claim_any', claim_any)
register('ff_heartbeat', heartbeat)
register('ff_remove_instance', remove_instance)
register('ff_acquire', acquire)
register('ff_release', release)
register('ff_owners', owners, RO)
