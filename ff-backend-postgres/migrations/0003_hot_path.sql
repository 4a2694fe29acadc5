-- FlowFabric schema, version 3: a leaner hot path, and cheaper wake-up hints.
--
-- What a transition costs the server, and what this migration changes:
--
-- - CHECK constraints. PostgreSQL rebuilds a table's CHECK expressions from their stored form
--   for every INSERT or UPDATE statement it executes (about 6 µs each here), and every
--   transition is at least one such statement. The value checks move to domains, whose
--   constraints are cached per session and checked only when a value is assigned; the
--   cross-column checks go (the server-side functions are the only writers and keep them).
-- - Index entries. A transition changes `state`, which every partial index's predicate reads,
--   so it is never a HOT update: the new row version gets an entry in each index whose
--   predicate it matches. The listing index no longer covers running executions (a claim
--   then writes two index entries, not three); listing them reads the lease-expiry index.
-- - Flow membership (node key → execution) moves to its own table, written once per member:
--   as an index on ff_execution it took a new entry at every transition of every member.
-- - The wake-up trigger goes: its WHEN clause was rebuilt on every UPDATE of `state` even with
--   hints off. The functions that make work ready send the hint themselves, and only when the
--   lane had no ready work before (`ff_work_hint`), so under load nothing NOTIFYs.
-- - `complete` of a flow member is two statements fewer: its flow lock, the fence check and
--   the transition are one UPDATE, and a cascade edge whose effect stays within its
--   downstream row (the common case) is one UPDATE with no nested call.
-- - `complete` with `claim_next` of a member with one downstream leases that downstream in the
--   edge's UPDATE when the claim would take it (blocked → running), instead of readying it and
--   claiming it in a second UPDATE: one row version fewer per chain node (measured with
--   `cargo xtask bench`: 1.93 KB of WAL per chain node instead of 2.41 KB; server CPU per node
--   unchanged within the noise — executor start-up per statement dominates it).
-- - `complete` sends no FlowFinished NOTIFY inside its transaction: it reports the finished
--   flow, and the client NOTIFYs after the commit, many flows per statement.
-- - Inline cascades write no `applied` mark on their edges: they run in the transaction of the
--   upstream's terminal transition, so no other cascade can ever see those edges half
--   applied. `describe_flow` derives the mark: an edge is applied when it is marked, or when
--   its upstream ended and has no pending completion.
-- - A successful attempt is not appended to `history`: it is the row's current attempt
--   (`describe_execution` reads it from the row), which nothing overwrites once the execution
--   succeeded.

-- ---------------------------------------------------------------------------- schema

DROP TRIGGER ff_execution_ready_hint ON ff_execution;
DROP FUNCTION ff_ready_hint();

CREATE DOMAIN ff_state AS text
    CHECK (VALUE IN ('blocked', 'delayed', 'ready', 'running', 'succeeded', 'failed',
                     'cancelled', 'expired', 'skipped'));
CREATE DOMAIN ff_end_reason AS text
    CHECK (VALUE IN ('completed', 'attempts_exhausted', 'non_retryable', 'cancelled_by_user',
                     'cancelled_by_flow', 'cancelled_by_group', 'deadline_exceeded',
                     'dependency_impossible'));
CREATE DOMAIN ff_group_policy AS text CHECK (VALUE IN ('all_of', 'any_of', 'quorum'));
CREATE DOMAIN ff_group_verdict AS text CHECK (VALUE IN ('pending', 'satisfied', 'impossible'));
CREATE DOMAIN ff_flow_state AS text
    CHECK (VALUE IN ('running', 'succeeded', 'failed', 'cancelled'));

ALTER TABLE ff_execution
    DROP CONSTRAINT ff_execution_state_check,
    DROP CONSTRAINT ff_execution_end_reason_check,
    DROP CONSTRAINT ff_execution_grp_policy_check,
    DROP CONSTRAINT ff_execution_grp_verdict_check,
    DROP CONSTRAINT ff_execution_check,
    DROP CONSTRAINT ff_execution_check1,
    DROP CONSTRAINT ff_execution_check2,
    ALTER COLUMN state TYPE ff_state,
    ALTER COLUMN end_reason TYPE ff_end_reason,
    ALTER COLUMN grp_policy TYPE ff_group_policy,
    ALTER COLUMN grp_verdict TYPE ff_group_verdict;

-- The retry policy is NULL for the default (one attempt, no retries): most executions have
-- it, and every row version otherwise carried its 60-byte JSON.
ALTER TABLE ff_execution ALTER COLUMN retry DROP NOT NULL;

ALTER TABLE ff_flow
    DROP CONSTRAINT ff_flow_state_check,
    DROP CONSTRAINT ff_flow_total_check,
    DROP CONSTRAINT ff_flow_check,
    DROP CONSTRAINT ff_flow_check1,
    ALTER COLUMN state TYPE ff_flow_state;
-- Room on each page for the counter updates of a flow's members to stay HOT (no index
-- column changes until the flow finishes).
ALTER TABLE ff_flow SET (fillfactor = 50);

-- Flow membership: the execution of each node key of a flow, and its creation order. Rows
-- are written when members are created and removed with their flow, never updated.
CREATE TABLE ff_member (
    flow_id   uuid NOT NULL,
    node_key  text NOT NULL,
    member_no integer NOT NULL,
    id        uuid NOT NULL,
    PRIMARY KEY (flow_id, node_key)
);
INSERT INTO ff_member (flow_id, node_key, member_no, id)
SELECT flow_id, node_key, member_no, id FROM ff_execution WHERE flow_id IS NOT NULL;
DROP INDEX ff_exec_member;

-- Listing by partition and state, running executions excepted (they are listed from
-- ff_exec_lease_expiry, which holds every one of them).
DROP INDEX ff_exec_list;
CREATE INDEX ff_exec_list ON ff_execution (part, state, id) WHERE state <> 'running';

-- ---------------------------------------------------------------------------- functions

-- The backend clock in milliseconds (see version 2), in double precision arithmetic
-- (`extract` answers numeric, several times slower).
CREATE OR REPLACE FUNCTION ff_now(p_offset bigint) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN p_offset < 0 THEN -p_offset
                ELSE floor(date_part('epoch', clock_timestamp()) * 1000)::bigint + p_offset END
$$;

-- STABLE, as the jsonb builders it calls: declared IMMUTABLE it could not be inlined into the
-- statements that call it, and ran as a separate SQL function (parsed and planned) per call.
CREATE OR REPLACE FUNCTION ff_attempt_ended(p_history jsonb, p_attempt integer, p_worker text,
                                            p_lease uuid, p_epoch bigint, p_started bigint,
                                            p_ended bigint, p_outcome text, p_message text,
                                            p_retryable boolean)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(p_history, '[]'::jsonb) || jsonb_build_array(jsonb_strip_nulls(
        jsonb_build_object('n', p_attempt, 'w', p_worker, 'l', p_lease, 'e', p_epoch,
                           's', p_started, 't', p_ended, 'o', p_outcome, 'm', p_message,
                           'r', p_retryable)))
$$;

-- Whether this session sends hints (the connection option `flowfabric.hints`).
CREATE FUNCTION ff_hints_on() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('flowfabric.hints', true), 'off') = 'on'
$$;

-- A WorkReady hint for `p_lane`, sent only when the lane has no ready work besides `p_new`
-- (what the calling transaction just made ready). A lane that already had ready work has
-- workers claiming from it, which find the new work without being woken (busy workers claim
-- their next executions with `complete`); only an idle lane's workers need the wake-up. So
-- under load nothing NOTIFYs — a NOTIFY takes a database-wide lock until its transaction
-- commits, serializing every notifying commit — while an idle lane still wakes at once.
-- Best effort, like every hint: work made ready while another claim of the lane's last ready
-- execution is still in flight is found by the workers' next poll. Returns whether it
-- notified. Callers check `ff_hints_on()` first.
CREATE FUNCTION ff_work_hint(p_part smallint, p_lane text, p_new uuid[]) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ff_execution
               WHERE state = 'ready' AND lane = p_lane AND id <> ALL (p_new)) THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('flowfabric_' || current_schema(), 'w:' || p_part || ':' || p_lane);
    RETURN true;
END $$;

-- The inline cascade (see version 2), without `applied` marks: every member in the queue
-- ended in this transaction, so none of its edges has been applied by anyone, and none can be
-- seen half applied.
CREATE OR REPLACE FUNCTION ff_cascade_inline(p_queue uuid[], p_now bigint, p_inline integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_queue uuid[] := p_queue;
    v_i integer := 1;
    v record;
    v_edge record;
BEGIN
    WHILE v_i <= coalesce(cardinality(v_queue), 0) LOOP
        SELECT state, part, flow_id INTO v FROM ff_execution WHERE id = v_queue[v_i];
        IF v_i > 2000 THEN
            INSERT INTO ff_completion (exec_id, part, flow_id, outcome, recorded_at)
            VALUES (v_queue[v_i], v.part, v.flow_id, v.state, p_now)
            ON CONFLICT (exec_id) DO NOTHING;
            PERFORM ff_hint('c:' || v.part);
        ELSE
            FOR v_edge IN
                SELECT to_id, kind FROM ff_edge
                WHERE from_id = v_queue[v_i] AND NOT applied ORDER BY edge_no
            LOOP
                v_queue := v_queue || ff_apply_edge(v_edge.to_id,
                    v_edge.kind = 'always' OR v.state = 'succeeded',
                    v.flow_id, v.part, p_now, p_inline);
            END LOOP;
        END IF;
        v_i := v_i + 1;
    END LOOP;
END $$;

-- One applied edge (see version 2). The outcomes that change nothing beyond the downstream's
-- own row — counting the edge, the group staying pending or having been decided before, or
-- becoming satisfied without CancelRemaining in a flow whose cancel was not requested — are
-- one UPDATE; the rest (impossible, cancel-remaining, cancel-requested) take the general path.
-- `ff_complete` inlines the fast UPDATE; a unit test keeps the copies identical.
CREATE OR REPLACE FUNCTION ff_apply_edge(p_to uuid, p_sat boolean, p_flow uuid, p_part smallint,
                                         p_now bigint, p_inline integer)
RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_sat integer := p_sat::integer;
    v_unsat integer := (NOT p_sat)::integer;
    v_verdict text;
    v_up record;
    v_cancel record;
    v_ended uuid[] := '{}';
    v_cancel_requested boolean;
    v_hints boolean := ff_hints_on();
BEGIN
    -- Fast path. A plain read is enough: the caller holds the flow lock, and every
    -- transition of a blocked member takes it too. The cancel flag is read only when the
    -- group is about to be satisfied.
    UPDATE ff_execution
    SET grp_sat = grp_sat + v_sat, grp_unsat = grp_unsat + v_unsat,
        grp_verdict = CASE WHEN grp_verdict = 'pending' AND grp_sat + v_sat >= grp_need
                           THEN 'satisfied' ELSE grp_verdict END,
        state = CASE WHEN grp_verdict = 'pending' AND grp_sat + v_sat >= grp_need
                          AND state = 'blocked'
                     THEN CASE WHEN delay_ms > 0 THEN 'delayed' ELSE 'ready' END
                     ELSE state END,
        ready_seq = CASE WHEN grp_verdict = 'pending' AND grp_sat + v_sat >= grp_need
                              AND state = 'blocked' AND delay_ms = 0
                         THEN nextval('ff_ready_seq') ELSE ready_seq END,
        available_at = CASE WHEN grp_verdict = 'pending' AND grp_sat + v_sat >= grp_need
                                 AND state = 'blocked' AND delay_ms > 0
                            THEN p_now + delay_ms ELSE available_at END
    WHERE id = p_to
      AND NOT (grp_verdict = 'pending' AND grp_sat + v_sat < grp_need
               AND grp_unsat + v_unsat > grp_incoming - grp_need)
      AND (grp_verdict <> 'pending' OR grp_sat + v_sat < grp_need
           OR NOT (grp_cancel_remaining
                   OR (SELECT f.cancel_requested FROM ff_flow f WHERE f.id = p_flow)))
    -- `idle_lane`: with hints on, whether the downstream became ready in a lane with no
    -- other ready work (`ff_work_hint`'s test, read here in the same statement: its snapshot
    -- does not see the new row version).
    RETURNING lane, v_sat = 1 AND grp_sat = grp_need AND state = 'ready' AS readied,
        CASE WHEN v_hints AND v_sat = 1 AND grp_sat = grp_need AND state = 'ready' THEN
            NOT EXISTS (SELECT 1 FROM ff_execution o
                        WHERE o.state = 'ready' AND o.lane = ff_execution.lane) END
            AS idle_lane
    INTO v;
    IF FOUND THEN
        IF v.idle_lane THEN
            PERFORM pg_notify('flowfabric_' || current_schema(), 'w:' || p_part || ':' || v.lane);
        END IF;
        RETURN v_ended;
    END IF;

    -- General path.
    SELECT state, grp_verdict, grp_sat, grp_unsat, grp_incoming, grp_need,
           grp_cancel_remaining, delay_ms, out_degree, lane
    INTO v FROM ff_execution WHERE id = p_to;
    v_verdict := v.grp_verdict;
    IF v_verdict = 'pending' THEN
        IF v.grp_sat + v_sat >= v.grp_need THEN
            v_verdict := 'satisfied';
        ELSIF v.grp_unsat + v_unsat > v.grp_incoming - v.grp_need THEN
            v_verdict := 'impossible';
        END IF;
    END IF;
    IF v_verdict = 'satisfied' AND v.grp_verdict = 'pending' AND v.state = 'blocked' THEN
        v_cancel_requested := (SELECT cancel_requested FROM ff_flow WHERE id = p_flow);
    END IF;
    IF v_verdict = 'satisfied' AND v.grp_verdict = 'pending' AND v.state = 'blocked'
       AND NOT v_cancel_requested THEN
        -- Satisfied now: counters, verdict and the transition in one row version.
        UPDATE ff_execution
        SET grp_sat = grp_sat + v_sat, grp_unsat = grp_unsat + v_unsat,
            grp_verdict = v_verdict,
            state = CASE WHEN delay_ms > 0 THEN 'delayed' ELSE 'ready' END,
            ready_seq = CASE WHEN delay_ms > 0 THEN NULL ELSE nextval('ff_ready_seq') END,
            available_at = CASE WHEN delay_ms > 0 THEN p_now + delay_ms END
        WHERE id = p_to;
        IF v.delay_ms = 0 AND v_hints THEN
            PERFORM ff_work_hint(p_part, v.lane, ARRAY[p_to]);
        END IF;
    ELSIF v_verdict = 'impossible' AND v.grp_verdict = 'pending' AND v.state = 'blocked' THEN
        UPDATE ff_execution
        SET grp_sat = grp_sat + v_sat, grp_unsat = grp_unsat + v_unsat,
            grp_verdict = v_verdict,
            state = 'skipped', end_reason = 'dependency_impossible', finished_at = p_now,
            available_at = NULL
        WHERE id = p_to;
        IF ff_member_ended(p_to, p_part, p_flow, v.out_degree, 'skipped',
                           'dependency_impossible', p_now, p_inline) THEN
            v_ended := v_ended || p_to;
        END IF;
        RETURN v_ended;
    ELSE
        UPDATE ff_execution
        SET grp_sat = grp_sat + v_sat, grp_unsat = grp_unsat + v_unsat,
            grp_verdict = v_verdict
        WHERE id = p_to;
        IF v_verdict = 'satisfied' AND v.grp_verdict = 'pending' AND v.state = 'blocked' THEN
            -- Satisfied in a flow whose cancel was requested: cancelled instead.
            SELECT * INTO v_cancel FROM ff_cancel_one(p_to, 'cancelled_by_flow', p_now, p_inline);
            IF v_cancel.inline THEN
                v_ended := v_ended || p_to;
            END IF;
        END IF;
    END IF;
    IF v_verdict = 'satisfied' AND v.grp_verdict = 'pending' AND v.grp_cancel_remaining THEN
        FOR v_up IN
            SELECT e.from_id FROM ff_edge e JOIN ff_execution u ON u.id = e.from_id
            WHERE e.to_id = p_to AND u.state IN ('blocked', 'delayed', 'ready', 'running')
            ORDER BY e.edge_no
        LOOP
            SELECT * INTO v_cancel
            FROM ff_cancel_one(v_up.from_id, 'cancelled_by_group', p_now, p_inline);
            IF v_cancel.inline THEN
                v_ended := v_ended || v_up.from_id;
            END IF;
        END LOOP;
    END IF;
    RETURN v_ended;
END $$;

-- A failed attempt with attempts left (see version 2); a retry that is ready at once hints.
CREATE OR REPLACE FUNCTION ff_retry_or_cancel(p_id uuid, p_part smallint, p_flow uuid,
                                              p_out_degree integer, p_delay_ms bigint,
                                              p_now bigint, p_inline integer)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_lane text;
BEGIN
    IF p_flow IS NOT NULL AND (SELECT cancel_requested FROM ff_flow WHERE id = p_flow) THEN
        UPDATE ff_execution
        SET state = 'cancelled', end_reason = 'cancelled_by_flow', finished_at = p_now,
            available_at = NULL, attempt_deadline_at = NULL
        WHERE id = p_id;
        IF ff_member_ended(p_id, p_part, p_flow, p_out_degree, 'cancelled', 'cancelled_by_flow',
                           p_now, p_inline) THEN
            RETURN 'cascade';
        END IF;
        RETURN 'cancelled';
    END IF;
    UPDATE ff_execution
    SET state = CASE WHEN p_delay_ms > 0 THEN 'delayed' ELSE 'ready' END,
        available_at = p_now + p_delay_ms, attempt_deadline_at = NULL,
        ready_seq = CASE WHEN p_delay_ms > 0 THEN NULL ELSE nextval('ff_ready_seq') END
    WHERE id = p_id
    RETURNING lane INTO v_lane;
    IF p_delay_ms = 0 AND ff_hints_on() THEN
        PERFORM ff_work_hint(p_part, v_lane, ARRAY[p_id]);
    END IF;
    RETURN 'retry';
END $$;

-- `complete` (see version 2): one transaction, one round trip. The first row is the status
-- ('ok', 'repeat' or an error code); 'claimed' rows follow.
--
-- One UPDATE takes the transition for standalone executions and flow members alike: for a
-- member, the qual's subquery locks its flow row before the UPDATE locks the member's (lock
-- order: flow first), and hands back the flow's cancel flag; a standalone execution never
-- evaluates it. A member's inline cascade applies each edge with the fast UPDATE of
-- `ff_apply_edge`, inlined, falling back to the function for the other outcomes.
CREATE OR REPLACE FUNCTION ff_complete(p_id uuid, p_part smallint, p_lease uuid, p_epoch bigint,
                                       p_result bytea, p_offset bigint, p_inline integer,
                                       p_lane text, p_caps text[], p_max integer, p_ttl bigint,
                                       p_worker text)
RETURNS SETOF ff_reply LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := ff_now(p_offset);
    v record;
    v_fence text;
    v_flow_state text;
    v_running CONSTANT text := 'running';
    v_ready CONSTANT text := 'ready';
    v_hints boolean := ff_hints_on();
    v_to uuid;
    v_readied uuid[] := '{}';
    v_finished uuid;
    v_affine integer := 0;
    v_taken integer;
    v_direct boolean;
    v_claim ff_reply;
    v_down record;
    v_queue uuid[] := '{}';
    v_sat integer := 1;
    v_unsat integer := 0;
BEGIN
    WITH flow AS (
        SELECT f.id, f.cancel_requested FROM ff_flow f
        WHERE f.id = (SELECT m.flow_id FROM ff_execution m WHERE m.id = p_id AND m.part = p_part)
        FOR UPDATE OF f
    )
    UPDATE ff_execution x
    SET state = 'succeeded', end_reason = 'completed', result = p_result,
        finished_at = v_now, attempt_deadline_at = NULL
    -- `state = v_running` (a variable, not the literal): the generic plan then cannot use the
    -- partial lease-expiry index, whose range scan over every running execution it would
    -- otherwise prefer to the primary key's probe.
    WHERE x.id = p_id AND x.part = p_part AND x.epoch = p_epoch
      AND x.lease_id = p_lease AND x.state = v_running AND x.lease_expires_at > v_now
      AND (x.flow_id IS NULL OR x.flow_id = (SELECT flow.id FROM flow))
    RETURNING x.epoch, x.attempt, x.flow_id, x.out_degree,
        CASE WHEN x.flow_id IS NOT NULL THEN (SELECT flow.cancel_requested FROM flow) END
            AS cancel_requested,
        -- The downstreams of an inline cascade, in edge order (no separate statement).
        CASE WHEN x.out_degree BETWEEN 1 AND p_inline THEN
            ARRAY(SELECT e.to_id FROM ff_edge e WHERE e.from_id = p_id ORDER BY e.edge_no) END
            AS downstream
    INTO v;
    IF FOUND THEN
        IF v.flow_id IS NOT NULL THEN
            -- ff_member_ended, inlined: a success never fails the flow.
            UPDATE ff_flow
            SET terminal = terminal + 1,
                state = CASE WHEN terminal + 1 < total THEN state
                             WHEN cancel_requested THEN 'cancelled'
                             WHEN failing > 0 THEN 'failed'
                             ELSE 'succeeded' END,
                finished_at = CASE WHEN terminal + 1 < total THEN finished_at ELSE v_now END
            WHERE id = v.flow_id
            RETURNING state INTO v_flow_state;
            IF v_flow_state <> 'running' THEN
                -- No NOTIFY here: the status row names the flow, and the client sends the
                -- FlowFinished hint after the commit, batched with others (a NOTIFY holds a
                -- server-wide lock until its transaction commits, serializing such commits;
                -- with small flows, one in every few completions would take it).
                v_finished := v.flow_id;
            END IF;
            IF v.out_degree > p_inline THEN
                INSERT INTO ff_completion (exec_id, part, flow_id, outcome, recorded_at)
                VALUES (p_id, p_part, v.flow_id, 'succeeded', v_now)
                ON CONFLICT (exec_id) DO NOTHING;
                PERFORM ff_hint('c:' || p_part);
            ELSIF v.out_degree > 0 THEN
                -- Every edge is satisfied by a success, whatever its kind.
                -- One downstream and a claim_next: it is leased by the edge's own UPDATE when
                -- it becomes ready and the claim would take it (below), one row version and
                -- one statement fewer than readying it and then claiming it.
                v_direct := cardinality(v.downstream) = 1 AND p_max > 0;
                FOREACH v_to IN ARRAY v.downstream LOOP
                  IF NOT v_direct THEN
                    UPDATE ff_execution
                    SET grp_sat = grp_sat + v_sat, grp_unsat = grp_unsat + v_unsat,
                        grp_verdict = CASE WHEN grp_verdict = 'pending' AND grp_sat + v_sat >= grp_need
                                           THEN 'satisfied' ELSE grp_verdict END,
                        state = CASE WHEN grp_verdict = 'pending' AND grp_sat + v_sat >= grp_need
                                          AND state = 'blocked'
                                     THEN CASE WHEN delay_ms > 0 THEN 'delayed' ELSE 'ready' END
                                     ELSE state END,
                        ready_seq = CASE WHEN grp_verdict = 'pending' AND grp_sat + v_sat >= grp_need
                                              AND state = 'blocked' AND delay_ms = 0
                                         THEN nextval('ff_ready_seq') ELSE ready_seq END,
                        available_at = CASE WHEN grp_verdict = 'pending' AND grp_sat + v_sat >= grp_need
                                                 AND state = 'blocked' AND delay_ms > 0
                                            THEN v_now + delay_ms ELSE available_at END
                    WHERE id = v_to
                      AND NOT (grp_verdict = 'pending' AND grp_sat + v_sat < grp_need
                               AND grp_unsat + v_unsat > grp_incoming - grp_need)
                      AND (grp_verdict <> 'pending' OR grp_sat + v_sat < grp_need
                           OR NOT (grp_cancel_remaining
                                   OR (SELECT f.cancel_requested FROM ff_flow f WHERE f.id = v.flow_id)))
                    RETURNING lane, v_sat = 1 AND grp_sat = grp_need AND state = 'ready' AS readied,
                        CASE WHEN v_hints AND v_sat = 1 AND grp_sat = grp_need AND state = 'ready' THEN
                            NOT EXISTS (SELECT 1 FROM ff_execution o
                                        WHERE o.state = 'ready' AND o.lane = ff_execution.lane) END
                            AS idle_lane,
                        false AS taken, NULL::ff_reply AS claim
                    INTO v_down;
                  ELSE
                    -- The same edge UPDATE, which also takes the lease when `d.take`: the
                    -- downstream becomes ready now (not delayed) and the claim-next affinity
                    -- below would lease it — the worker's lane, within its capabilities, not
                    -- past its deadline, no ready work of the lane with a higher priority.
                    -- A plain read decides it: the flow lock held here serializes every
                    -- transition of a blocked member. The lease fields are ff_claim's.
                    UPDATE ff_execution x
                    SET grp_sat = x.grp_sat + v_sat, grp_unsat = x.grp_unsat + v_unsat,
                        grp_verdict = CASE WHEN x.grp_verdict = 'pending' AND x.grp_sat + v_sat >= x.grp_need
                                           THEN 'satisfied' ELSE x.grp_verdict END,
                        state = CASE WHEN d.take THEN 'running'
                                     WHEN x.grp_verdict = 'pending' AND x.grp_sat + v_sat >= x.grp_need
                                          AND x.state = 'blocked'
                                     THEN CASE WHEN x.delay_ms > 0 THEN 'delayed' ELSE 'ready' END
                                     ELSE x.state END,
                        ready_seq = CASE WHEN NOT d.take AND x.grp_verdict = 'pending'
                                              AND x.grp_sat + v_sat >= x.grp_need
                                              AND x.state = 'blocked' AND x.delay_ms = 0
                                         THEN nextval('ff_ready_seq') ELSE x.ready_seq END,
                        available_at = CASE WHEN x.grp_verdict = 'pending' AND x.grp_sat + v_sat >= x.grp_need
                                                 AND x.state = 'blocked' AND x.delay_ms > 0
                                            THEN v_now + x.delay_ms ELSE x.available_at END,
                        epoch = CASE WHEN d.take THEN x.epoch + 1 ELSE x.epoch END,
                        attempt = CASE WHEN d.take THEN x.attempt + 1 ELSE x.attempt END,
                        lease_id = CASE WHEN d.take THEN gen_random_uuid() ELSE x.lease_id END,
                        worker = CASE WHEN d.take THEN p_worker ELSE x.worker END,
                        lease_expires_at = CASE WHEN d.take THEN v_now + p_ttl
                                                ELSE x.lease_expires_at END,
                        attempt_started_at = CASE WHEN d.take THEN v_now
                                                  ELSE x.attempt_started_at END,
                        attempt_deadline_at = CASE WHEN d.take THEN v_now + x.attempt_timeout_ms
                                                   ELSE x.attempt_deadline_at END,
                        progress = CASE WHEN d.take THEN NULL ELSE x.progress END,
                        fail_disposition = CASE WHEN d.take THEN NULL ELSE x.fail_disposition END
                    FROM (SELECT COALESCE(c.grp_verdict = 'pending' AND c.grp_sat + v_sat >= c.grp_need
                                          AND c.state = 'blocked' AND c.delay_ms = 0
                                          AND c.lane = p_lane AND c.caps <@ p_caps
                                          AND (c.deadline_at IS NULL OR c.deadline_at > v_now)
                                          AND NOT EXISTS (
                                              SELECT 1 FROM ff_execution h
                                              WHERE h.state = 'ready' AND h.lane = p_lane
                                                AND h.priority > c.priority), false) AS take
                          FROM ff_execution c WHERE c.id = v_to) d
                    WHERE x.id = v_to
                      AND NOT (x.grp_verdict = 'pending' AND x.grp_sat + v_sat < x.grp_need
                               AND x.grp_unsat + v_unsat > x.grp_incoming - x.grp_need)
                      AND (x.grp_verdict <> 'pending' OR x.grp_sat + v_sat < x.grp_need
                           OR NOT (x.grp_cancel_remaining
                                   OR (SELECT f.cancel_requested FROM ff_flow f WHERE f.id = v.flow_id)))
                    RETURNING x.lane, v_sat = 1 AND x.grp_sat = x.grp_need AND x.state = 'ready' AS readied,
                        CASE WHEN v_hints AND v_sat = 1 AND x.grp_sat = x.grp_need AND x.state = 'ready' THEN
                            NOT EXISTS (SELECT 1 FROM ff_execution o
                                        WHERE o.state = 'ready' AND o.lane = x.lane) END
                            AS idle_lane,
                        CASE WHEN d.take THEN
                            ROW('claimed', x.id, x.state::text, x.epoch, x.attempt, NULL, x.lease_id,
                                x.lane, x.priority, x.payload, x.flow_id, x.node_key,
                                x.lease_expires_at, x.attempt_deadline_at, x.deadline_at,
                                CASE WHEN x.has_inputs THEN ff_input_keys(x.id) END,
                                CASE WHEN x.has_inputs THEN ff_input_ids(x.id) END,
                                CASE WHEN x.has_inputs THEN ff_input_results(x.id) END,
                                x.max_attempts, CASE WHEN x.max_attempts > 1 THEN x.retry END,
                                x.available_at, x.part)::ff_reply END AS claim,
                        d.take AS taken
                    INTO v_down;
                  END IF;
                    IF NOT FOUND THEN
                        v_queue := v_queue || ff_apply_edge(v_to, true, v.flow_id, p_part,
                                                            v_now, p_inline);
                    ELSE
                        IF v_down.taken THEN
                            v_claim := v_down.claim;
                            v_affine := 1;
                        ELSIF v_down.readied AND NOT v_direct THEN
                            -- (Not taken directly: the affinity claim would not take it either.)
                            v_readied := v_readied || v_to;
                        END IF;
                        IF v_down.idle_lane THEN
                            PERFORM pg_notify('flowfabric_' || current_schema(),
                                              'w:' || p_part || ':' || v_down.lane);
                        END IF;
                    END IF;
                END LOOP;
                IF cardinality(v_queue) > 0 THEN
                    PERFORM ff_cascade_inline(v_queue, v_now, p_inline);
                END IF;
            END IF;
        END IF;
        -- 'ok', with `flow_id` set to the flow this completion finished, if any.
        RETURN NEXT ROW('ok', p_id, 'succeeded', v.epoch, v.attempt, 'completed', NULL, NULL,
                        NULL, NULL, v_finished, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                        NULL, NULL, NULL)::ff_reply;
    ELSE
        SELECT state, epoch, lease_id, lease_expires_at, attempt, end_reason
        INTO v FROM ff_execution WHERE id = p_id AND part = p_part;
        IF NOT FOUND THEN
            RETURN NEXT ff_status('not_found', p_id, NULL, NULL, NULL, NULL, NULL);
            RETURN;
        END IF;
        v_fence := ff_fence(v.state, v.epoch, v.lease_id, v.lease_expires_at, p_epoch,
                            p_lease, v_now);
        IF v_fence = 'inactive' AND v.end_reason = 'completed' THEN
            RETURN NEXT ff_status('repeat', p_id, v.state, v.epoch, v.attempt, v.end_reason,
                                  NULL);
        ELSIF v_fence = 'ok' THEN
            -- Changed under us between the update and the read (a concurrent renew): the
            -- caller retries.
            RAISE EXCEPTION 'execution changed during complete' USING ERRCODE = '40001';
        ELSE
            RETURN NEXT ff_status(v_fence, p_id, v.state, v.epoch, v.attempt, v.end_reason,
                                  NULL);
            RETURN;
        END IF;
    END IF;
    IF v_affine > 0 THEN
        RETURN NEXT v_claim;
    END IF;
    IF p_max > v_affine AND cardinality(v_readied) > 0 THEN
        -- Claim-next affinity: the work this call made ready comes first (edge order), when it
        -- is in the worker's lane, within its capabilities, and of the lane's highest ready
        -- priority (the head of the claim index, these rows included). No other transaction
        -- can see these rows yet, so they are claimed without scanning — and contending for —
        -- the head of the lane's queue, and a chain runs on with its worker. FIFO order among
        -- equal priorities is relaxed for them, as the trait allows claim-next to look only
        -- where it is cheap. (Rows made ready in a flow whose cancel was requested never get
        -- here: the fast path leaves those to ff_apply_edge.)
        -- (`state = v_ready`, a variable: the plan probes the primary key for these ids,
        -- never the lane's range of the claim index.)
        RETURN QUERY
        WITH pick AS (
            SELECT c.id FROM ff_execution c
            WHERE c.id = ANY (v_readied) AND c.state = v_ready AND c.lane = p_lane
              AND c.caps <@ p_caps AND (c.deadline_at IS NULL OR c.deadline_at > v_now)
              AND c.priority >= (SELECT h.priority FROM ff_execution h
                                 WHERE h.state = 'ready' AND h.lane = p_lane
                                 ORDER BY h.priority DESC, h.ready_seq LIMIT 1)
            ORDER BY array_position(v_readied, c.id)
            LIMIT p_max - v_affine
            FOR UPDATE OF c
        )
        UPDATE ff_execution x
        SET state = 'running', epoch = x.epoch + 1, attempt = x.attempt + 1,
            lease_id = gen_random_uuid(), worker = p_worker, lease_expires_at = v_now + p_ttl,
            attempt_started_at = v_now, attempt_deadline_at = v_now + x.attempt_timeout_ms,
            ready_seq = NULL, progress = NULL, fail_disposition = NULL
        FROM pick
        WHERE x.id = pick.id
        RETURNING 'claimed'::text, x.id, x.state::text, x.epoch, x.attempt, NULL::text, x.lease_id,
            x.lane, x.priority, x.payload, x.flow_id, x.node_key, x.lease_expires_at,
            x.attempt_deadline_at, x.deadline_at,
            CASE WHEN x.has_inputs THEN ff_input_keys(x.id) END,
            CASE WHEN x.has_inputs THEN ff_input_ids(x.id) END,
            CASE WHEN x.has_inputs THEN ff_input_results(x.id) END,
            x.max_attempts, CASE WHEN x.max_attempts > 1 THEN x.retry END, x.available_at,
            x.part;
        GET DIAGNOSTICS v_taken = ROW_COUNT;
        v_affine := v_affine + v_taken;
    END IF;
    IF p_max > v_affine THEN
        -- The claim statement of ff_claim, inlined (no nested call, one materialisation);
        -- a unit test keeps the copies identical.
        RETURN QUERY
        WITH pick AS (
            SELECT c.id FROM ff_execution c
            WHERE c.state = 'ready' AND c.lane = p_lane AND c.caps <@ p_caps
              AND (c.deadline_at IS NULL OR c.deadline_at > v_now)
              -- A standalone execution (flow_id NULL) never matches: an anti-join probe of an
              -- almost always empty index, no per-row function call.
              AND NOT EXISTS (SELECT 1 FROM ff_cancel_backlog b WHERE b.flow_id = c.flow_id)
            ORDER BY c.priority DESC, c.ready_seq
            LIMIT p_max - v_affine
            FOR UPDATE OF c SKIP LOCKED
        )
        UPDATE ff_execution x
        SET state = 'running', epoch = x.epoch + 1, attempt = x.attempt + 1,
            lease_id = gen_random_uuid(), worker = p_worker, lease_expires_at = v_now + p_ttl,
            attempt_started_at = v_now, attempt_deadline_at = v_now + x.attempt_timeout_ms,
            ready_seq = NULL, progress = NULL, fail_disposition = NULL
        FROM pick
        WHERE x.id = pick.id
        RETURNING 'claimed'::text, x.id, x.state::text, x.epoch, x.attempt, NULL::text, x.lease_id,
            x.lane, x.priority, x.payload, x.flow_id, x.node_key, x.lease_expires_at,
            x.attempt_deadline_at, x.deadline_at,
            CASE WHEN x.has_inputs THEN ff_input_keys(x.id) END,
            CASE WHEN x.has_inputs THEN ff_input_ids(x.id) END,
            CASE WHEN x.has_inputs THEN ff_input_results(x.id) END,
            x.max_attempts, CASE WHEN x.max_attempts > 1 THEN x.retry END, x.available_at,
            x.part;
    END IF;
END $$;

-- `claim` (see version 2); the state column is now a domain, and RETURN QUERY wants the
-- exact column types of ff_reply.
CREATE OR REPLACE FUNCTION ff_claim(p_lane text, p_caps text[], p_max integer, p_ttl bigint,
                         p_worker text, p_now bigint)
RETURNS SETOF ff_reply LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH pick AS (
        SELECT c.id FROM ff_execution c
        WHERE c.state = 'ready' AND c.lane = p_lane AND c.caps <@ p_caps
          AND (c.deadline_at IS NULL OR c.deadline_at > p_now)
          -- A standalone execution (flow_id NULL) never matches: an anti-join probe of an
          -- almost always empty index, no per-row function call.
          AND NOT EXISTS (SELECT 1 FROM ff_cancel_backlog b WHERE b.flow_id = c.flow_id)
        ORDER BY c.priority DESC, c.ready_seq
        LIMIT p_max
        FOR UPDATE OF c SKIP LOCKED
    )
    UPDATE ff_execution x
    SET state = 'running', epoch = x.epoch + 1, attempt = x.attempt + 1,
        lease_id = gen_random_uuid(), worker = p_worker, lease_expires_at = p_now + p_ttl,
        attempt_started_at = p_now, attempt_deadline_at = p_now + x.attempt_timeout_ms,
        ready_seq = NULL, progress = NULL, fail_disposition = NULL
    FROM pick
    WHERE x.id = pick.id
    RETURNING 'claimed'::text, x.id, x.state::text, x.epoch, x.attempt, NULL::text, x.lease_id,
        x.lane, x.priority, x.payload, x.flow_id, x.node_key, x.lease_expires_at,
        x.attempt_deadline_at, x.deadline_at,
        CASE WHEN x.has_inputs THEN ff_input_keys(x.id) END,
        CASE WHEN x.has_inputs THEN ff_input_ids(x.id) END,
        CASE WHEN x.has_inputs THEN ff_input_results(x.id) END,
        x.max_attempts, CASE WHEN x.max_attempts > 1 THEN x.retry END, x.available_at,
        x.part;
END $$;

-- `fail` (see version 2), unchanged but for its inlined claim (the state column is now a
-- domain, and RETURN QUERY wants the exact column types of ff_reply).
CREATE OR REPLACE FUNCTION ff_fail(p_id uuid, p_part smallint, p_lease uuid, p_epoch bigint,
                        p_message text, p_retryable boolean, p_delay_ms bigint,
                        p_offset bigint, p_inline integer,
                        p_lane text, p_caps text[], p_max integer, p_ttl bigint,
                        p_worker text)
RETURNS SETOF ff_reply LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := ff_now(p_offset);
    v record;
    v_fence text;
    v_reason text;
    v_outcome text;
BEGIN
    PERFORM ff_lock_flow_of(p_id);
    SELECT state, epoch, lease_id, lease_expires_at, attempt, end_reason, flow_id, out_degree,
           max_attempts, retry, fail_disposition
    INTO v FROM ff_execution WHERE id = p_id AND part = p_part FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NEXT ff_status('not_found', p_id, NULL, NULL, NULL, NULL, NULL);
        RETURN;
    END IF;
    v_fence := ff_fence(v.state, v.epoch, v.lease_id, v.lease_expires_at, p_epoch, p_lease,
                        v_now);
    IF v_fence = 'ok' THEN
        IF p_retryable AND v.attempt < v.max_attempts AND p_delay_ms IS NULL THEN
            RETURN NEXT ROW('need_delay', p_id, v.state, v.epoch, v.attempt, NULL, NULL,
                NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                v.max_attempts, v.retry, NULL, p_part)::ff_reply;
            RETURN;
        END IF;
        UPDATE ff_execution
        SET history = ff_attempt_ended(history, attempt, worker, lease_id, epoch,
                                       attempt_started_at, v_now, 'failed', p_message,
                                       p_retryable)
        WHERE id = p_id;
        v_outcome := 'failed';
        IF p_retryable AND v.attempt < v.max_attempts THEN
            v_outcome := ff_retry_or_cancel(p_id, p_part, v.flow_id, v.out_degree, p_delay_ms,
                                            v_now, p_inline);
            IF v_outcome = 'cascade' THEN
                PERFORM ff_cascade_inline(ARRAY[p_id], v_now, p_inline);
            END IF;
        ELSE
            v_reason := CASE WHEN p_retryable THEN 'attempts_exhausted' ELSE 'non_retryable' END;
            UPDATE ff_execution
            SET state = 'failed', end_reason = v_reason, finished_at = v_now,
                attempt_deadline_at = NULL
            WHERE id = p_id;
            IF v.flow_id IS NOT NULL THEN
                PERFORM ff_end_member(p_id, p_part, v.flow_id, v.out_degree, 'failed', v_reason,
                                      v_now, p_inline);
            END IF;
        END IF;
        IF v_outcome = 'retry' THEN
            UPDATE ff_execution SET fail_disposition = v_now + p_delay_ms WHERE id = p_id;
            RETURN NEXT ff_status('retry', p_id, NULL, v.epoch, v.attempt, NULL,
                                  v_now + p_delay_ms);
        ELSE
            UPDATE ff_execution SET fail_disposition = -1 WHERE id = p_id;
            RETURN NEXT ff_status('failed', p_id, NULL, v.epoch, v.attempt, NULL, NULL);
        END IF;
    ELSIF v_fence = 'inactive' AND v.fail_disposition IS NOT NULL THEN
        RETURN NEXT ff_status('repeat', p_id, v.state, v.epoch, v.attempt, v.end_reason,
                              v.fail_disposition);
    ELSE
        RETURN NEXT ff_status(v_fence, p_id, v.state, v.epoch, v.attempt, v.end_reason, NULL);
        RETURN;
    END IF;
    IF p_max > 0 THEN
        -- The claim statement of ff_claim, inlined (no nested call, one materialisation);
        -- a unit test keeps the copies identical.
        RETURN QUERY
        WITH pick AS (
            SELECT c.id FROM ff_execution c
            WHERE c.state = 'ready' AND c.lane = p_lane AND c.caps <@ p_caps
              AND (c.deadline_at IS NULL OR c.deadline_at > v_now)
              -- A standalone execution (flow_id NULL) never matches: an anti-join probe of an
              -- almost always empty index, no per-row function call.
              AND NOT EXISTS (SELECT 1 FROM ff_cancel_backlog b WHERE b.flow_id = c.flow_id)
            ORDER BY c.priority DESC, c.ready_seq
            LIMIT p_max
            FOR UPDATE OF c SKIP LOCKED
        )
        UPDATE ff_execution x
        SET state = 'running', epoch = x.epoch + 1, attempt = x.attempt + 1,
            lease_id = gen_random_uuid(), worker = p_worker, lease_expires_at = v_now + p_ttl,
            attempt_started_at = v_now, attempt_deadline_at = v_now + x.attempt_timeout_ms,
            ready_seq = NULL, progress = NULL, fail_disposition = NULL
        FROM pick
        WHERE x.id = pick.id
        RETURNING 'claimed'::text, x.id, x.state::text, x.epoch, x.attempt, NULL::text, x.lease_id,
            x.lane, x.priority, x.payload, x.flow_id, x.node_key, x.lease_expires_at,
            x.attempt_deadline_at, x.deadline_at,
            CASE WHEN x.has_inputs THEN ff_input_keys(x.id) END,
            CASE WHEN x.has_inputs THEN ff_input_ids(x.id) END,
            CASE WHEN x.has_inputs THEN ff_input_results(x.id) END,
            x.max_attempts, CASE WHEN x.max_attempts > 1 THEN x.retry END, x.available_at,
            x.part;
    END IF;
END $$;

-- `create_flow` and `add_nodes` (see version 2): members are found by key in ff_member, and
-- ready roots send the work hint (the trigger that did is gone).
CREATE OR REPLACE FUNCTION ff_insert_graph(
    p_flow uuid, p_part smallint, p_patch boolean, p_offset bigint, p_inline integer,
    n_ids uuid[], n_keys text[], n_lanes text[], n_prio integer[], n_caps text[],
    n_payloads bytea[], n_max_attempts integer[], n_retry text[], n_delay bigint[],
    n_timeout bigint[], n_deadline bigint[], n_policy text[], n_need integer[],
    n_cancel_rem boolean[], n_incoming integer[], n_out integer[], n_inputs boolean[],
    e_from text[], e_to text[], e_kind text[], e_pass boolean[])
RETURNS TABLE (code text, node_key text, id uuid)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now bigint := ff_now(p_offset);
    v_n integer := cardinality(n_ids);
    v_m integer := coalesce(cardinality(e_from), 0);
    v_flow record;
    v_existing integer;
    v_key text;
    v_base_member integer := 0;
    v_base_edge integer := 0;
    v_edge record;
    v_queue uuid[] := '{}';
BEGIN
    IF NOT p_patch THEN
        INSERT INTO ff_flow (id, part, total, next_member, next_edge, created_at)
        VALUES (p_flow, p_part, v_n, v_n, v_m, v_now)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'exists'::text, m.node_key, m.id FROM ff_member m
                WHERE m.flow_id = p_flow ORDER BY m.member_no;
            RETURN;
        END IF;
    ELSE
        SELECT f.state, f.cancel_requested INTO v_flow FROM ff_flow f
        WHERE f.id = p_flow FOR UPDATE;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'flow_not_found'::text, NULL::text, NULL::uuid;
            RETURN;
        END IF;
        SELECT count(*) INTO v_existing FROM ff_member m
        WHERE m.flow_id = p_flow AND m.node_key = ANY (n_keys);
        IF v_existing = v_n THEN
            RETURN QUERY SELECT 'exists'::text, m.node_key, m.id
                FROM unnest(n_keys) WITH ORDINALITY k(key, ord)
                JOIN ff_member m ON m.flow_id = p_flow AND m.node_key = k.key
                ORDER BY k.ord;
            RETURN;
        END IF;
        IF v_flow.state <> 'running' OR v_flow.cancel_requested THEN
            RETURN QUERY SELECT 'flow_not_open'::text, v_flow.state || ':' ||
                v_flow.cancel_requested::text, NULL::uuid;
            RETURN;
        END IF;
        IF v_existing > 0 THEN
            SELECT k.key INTO v_key FROM unnest(n_keys) WITH ORDINALITY k(key, ord)
            WHERE EXISTS (SELECT 1 FROM ff_member m
                          WHERE m.flow_id = p_flow AND m.node_key = k.key)
            ORDER BY k.ord LIMIT 1;
            RETURN QUERY SELECT 'duplicate_node'::text, v_key, NULL::uuid;
            RETURN;
        END IF;
        SELECT e.key INTO v_key FROM unnest(e_from) WITH ORDINALITY e(key, ord)
        WHERE e.key <> ALL (n_keys)
          AND NOT EXISTS (SELECT 1 FROM ff_member m
                          WHERE m.flow_id = p_flow AND m.node_key = e.key)
        ORDER BY e.ord LIMIT 1;
        IF v_key IS NOT NULL THEN
            RETURN QUERY SELECT 'node_not_found'::text, v_key, NULL::uuid;
            RETURN;
        END IF;
        UPDATE ff_flow
        SET total = total + v_n, next_member = next_member + v_n, next_edge = next_edge + v_m
        WHERE ff_flow.id = p_flow
        RETURNING next_member - v_n, next_edge - v_m INTO v_base_member, v_base_edge;
    END IF;

    INSERT INTO ff_execution (id, part, state, lane, priority, caps, payload, max_attempts,
        retry, delay_ms, attempt_timeout_ms, deadline_at, created_at, ready_seq, available_at,
        flow_id, node_key, member_no, out_degree, has_inputs, grp_policy, grp_need,
        grp_cancel_remaining, grp_incoming, grp_verdict)
    SELECT n.id, p_part,
        CASE WHEN n.incoming > 0 THEN 'blocked' WHEN n.delay > 0 THEN 'delayed' ELSE 'ready' END,
        n.lane, n.prio, string_to_array(n.caps, ','), n.payload, n.max_attempts, n.retry,
        n.delay, n.timeout, v_now + n.deadline, v_now,
        CASE WHEN n.incoming = 0 AND n.delay = 0 THEN nextval('ff_ready_seq') END,
        CASE WHEN n.incoming = 0 AND n.delay > 0 THEN v_now + n.delay END,
        p_flow, n.key, v_base_member + n.ord::integer, n.out_degree, n.inputs,
        CASE WHEN n.incoming > 0 THEN n.policy END,
        CASE WHEN n.incoming > 0 THEN n.need END,
        CASE WHEN n.incoming > 0 THEN n.cancel_rem END,
        n.incoming,
        CASE WHEN n.incoming > 0 THEN 'pending' END
    FROM unnest(n_ids, n_keys, n_lanes, n_prio, n_caps, n_payloads, n_max_attempts, n_retry,
                n_delay, n_timeout, n_deadline, n_policy, n_need, n_cancel_rem, n_incoming,
                n_out, n_inputs)
         WITH ORDINALITY AS n(id, key, lane, prio, caps, payload, max_attempts, retry, delay,
                              timeout, deadline, policy, need, cancel_rem, incoming, out_degree,
                              inputs, ord)
    ORDER BY n.ord;

    INSERT INTO ff_member (flow_id, node_key, member_no, id)
    SELECT p_flow, n.key, v_base_member + n.ord::integer, n.id
    FROM unnest(n_keys, n_ids) WITH ORDINALITY AS n(key, id, ord);

    IF v_m > 0 THEN
        INSERT INTO ff_edge (from_id, to_id, flow_id, edge_no, kind, pass_result)
        SELECT f.id, t.id, p_flow, v_base_edge + e.ord::integer, e.kind, e.pass
        FROM unnest(e_from, e_to, e_kind, e_pass) WITH ORDINALITY AS e(fk, tk, kind, pass, ord)
        JOIN ff_member f ON f.flow_id = p_flow AND f.node_key = e.fk
        JOIN ff_member t ON t.flow_id = p_flow AND t.node_key = e.tk;
    END IF;

    IF p_patch AND v_m > 0 THEN
        -- Existing upstreams: more out-degree; those already ended apply their new edges now.
        UPDATE ff_execution x SET out_degree = x.out_degree + c.n
        FROM (SELECT e.key, count(*)::integer AS n FROM unnest(e_from) e(key)
              WHERE e.key <> ALL (n_keys) GROUP BY e.key) c
        JOIN ff_member m ON m.flow_id = p_flow AND m.node_key = c.key
        WHERE x.id = m.id;
        FOR v_edge IN
            SELECT f.id AS from_id, f.state AS from_state, t.id AS to_id, e.kind,
                   v_base_edge + e.ord::integer AS edge_no
            FROM unnest(e_from, e_to, e_kind) WITH ORDINALITY AS e(fk, tk, kind, ord)
            JOIN ff_member fm ON fm.flow_id = p_flow AND fm.node_key = e.fk
            JOIN ff_execution f ON f.id = fm.id
            JOIN ff_member t ON t.flow_id = p_flow AND t.node_key = e.tk
            WHERE e.fk <> ALL (n_keys)
              AND f.state IN ('succeeded', 'failed', 'cancelled', 'expired', 'skipped')
            ORDER BY e.ord
        LOOP
            UPDATE ff_edge SET applied = true
            WHERE from_id = v_edge.from_id AND edge_no = v_edge.edge_no;
            v_queue := v_queue || ff_apply_edge(v_edge.to_id,
                v_edge.kind = 'always' OR v_edge.from_state = 'succeeded',
                p_flow, p_part, v_now, p_inline);
        END LOOP;
        PERFORM ff_cascade_inline(v_queue, v_now, p_inline);
    END IF;

    IF ff_hints_on() THEN
        PERFORM ff_work_hint(p_part, r.lane, n_ids)
        FROM (SELECT DISTINCT n.lane FROM unnest(n_lanes, n_incoming, n_delay) n(lane, incoming, delay)
              WHERE n.incoming = 0 AND n.delay = 0) r;
    END IF;

    RETURN QUERY SELECT 'created'::text, k.key, k.id
        FROM unnest(n_keys, n_ids) WITH ORDINALITY AS k(key, id, ord) ORDER BY k.ord;
END $$;

-- The delayed promoter's step (see version 2); promoted work sends the work hint.
CREATE OR REPLACE FUNCTION ff_promote(p_ids uuid[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
    v_promoted integer := 0;
BEGIN
    FOREACH v_id IN ARRAY p_ids LOOP
        UPDATE ff_execution SET state = 'ready', ready_seq = nextval('ff_ready_seq')
        WHERE id = v_id AND state = 'delayed';
        IF FOUND THEN
            v_promoted := v_promoted + 1;
        END IF;
    END LOOP;
    IF v_promoted > 0 AND ff_hints_on() THEN
        PERFORM ff_work_hint(r.part, r.lane, p_ids)
        FROM (SELECT DISTINCT part, lane FROM ff_execution
              WHERE id = ANY (p_ids) AND state = 'ready') r;
    END IF;
    RETURN v_promoted;
END $$;

-- `cancel_flow` (see version 2): members are found through ff_member.
CREATE OR REPLACE FUNCTION ff_cancel_flow_step(p_flow uuid, p_mode text, p_limit integer,
                                    p_offset bigint, p_inline integer)
RETURNS TABLE (cancelled integer, left_over integer, flow_state text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now bigint := ff_now(p_offset);
    v_flow record;
    v_states text[] := CASE WHEN p_mode = 'cancel_all'
        THEN ARRAY['blocked', 'delayed', 'ready', 'running']
        ELSE ARRAY['blocked', 'delayed', 'ready'] END;
    v_done integer := 0;
    v_left integer;
    v_ids uuid[];
    v_outs integer[];
    v_queue uuid[] := '{}';
    v_state text;
BEGIN
    SELECT f.id, f.part, f.state INTO v_flow FROM ff_flow f WHERE f.id = p_flow FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_flow.state = 'running' THEN
        UPDATE ff_flow SET cancel_requested = true WHERE ff_flow.id = p_flow;
    END IF;
    WITH pick AS (
        SELECT x.id FROM ff_member m JOIN ff_execution x ON x.id = m.id
        WHERE m.flow_id = p_flow AND x.state = ANY (v_states)
        ORDER BY m.member_no LIMIT p_limit FOR UPDATE OF x
    ), done AS (
        UPDATE ff_execution x
        SET state = 'cancelled', end_reason = 'cancelled_by_flow', finished_at = v_now,
            ready_seq = NULL, attempt_deadline_at = NULL, available_at = NULL,
            epoch = CASE WHEN x.state = 'running' THEN x.epoch + 1 ELSE x.epoch END,
            history = CASE WHEN x.state = 'running' THEN
                ff_attempt_ended(x.history, x.attempt, x.worker, x.lease_id, x.epoch,
                                 x.attempt_started_at, v_now, 'cancelled', NULL, NULL)
                ELSE x.history END
        FROM pick WHERE x.id = pick.id
        RETURNING x.id, x.out_degree
    )
    SELECT coalesce(array_agg(done.id), '{}'), coalesce(array_agg(done.out_degree), '{}'),
           count(*)
    INTO v_ids, v_outs, v_done FROM done;
    IF v_done > 0 THEN
        UPDATE ff_flow
        SET terminal = terminal + v_done,
            state = CASE WHEN terminal + v_done < total THEN state ELSE 'cancelled' END,
            finished_at = CASE WHEN terminal + v_done < total THEN finished_at ELSE v_now END
        WHERE ff_flow.id = p_flow
        RETURNING ff_flow.state INTO v_state;
        IF v_state <> 'running' THEN
            PERFORM ff_hint('f:' || p_flow);
        END IF;
        FOR i IN 1 .. v_done LOOP
            IF ff_completion_recorded(v_ids[i], v_flow.part, p_flow, v_outs[i], 'cancelled',
                                      v_now, p_inline) THEN
                v_queue := v_queue || v_ids[i];
            END IF;
        END LOOP;
        PERFORM ff_cascade_inline(v_queue, v_now, p_inline);
    END IF;
    SELECT count(*) INTO v_left FROM ff_member m JOIN ff_execution x ON x.id = m.id
    WHERE m.flow_id = p_flow AND x.state = ANY (v_states);
    IF v_left > 0 THEN
        INSERT INTO ff_cancel_backlog (flow_id, part, mode, requested_at)
        VALUES (p_flow, v_flow.part, p_mode, v_now)
        ON CONFLICT (flow_id) DO NOTHING;
    ELSE
        DELETE FROM ff_cancel_backlog WHERE flow_id = p_flow;
    END IF;
    SELECT state INTO v_state FROM ff_flow WHERE id = p_flow;
    RETURN QUERY SELECT v_done, v_left, v_state;
END $$;
