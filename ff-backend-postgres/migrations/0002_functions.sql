-- FlowFabric schema, version 2: server-side functions.
--
-- Every state change of the hot path is one function call, so a worker call is one round trip
-- and one transaction: the fence check, the transition, the flow counters, the completion
-- record or the inline cascade, and the claim of the worker's next executions. Functions take
-- the clock offset (p_offset, 0 in production) and read the clock once per call.
--
-- Lock order, everywhere: the flow row first (for flow members), then execution rows. Every
-- transaction that changes a member of a flow locks its flow row first, so transactions on
-- one flow serialize instead of deadlocking; claims lock only ready rows, with SKIP LOCKED.

-- The reply row of the worker and control functions. `code` says what the row is:
-- 'claimed' (a leased execution), 'ok', 'repeat', 'retry', 'failed', 'need_delay',
-- 'not_found', 'stale_epoch', 'lease_mismatch', 'lease_expired', 'inactive'.
CREATE TYPE ff_reply AS (
    code                text,
    id                  uuid,
    state               text,
    epoch               bigint,
    attempt             integer,
    end_reason          text,
    lease_id            uuid,
    lane                text,
    priority            integer,
    payload             bytea,
    flow_id             uuid,
    node_key            text,
    lease_expires_at    bigint,
    attempt_deadline_at bigint,
    deadline_at         bigint,
    in_keys             text[],
    in_ids              uuid[],
    in_results          bytea[],
    max_attempts        integer,
    retry               text,
    available_at        bigint,
    part                smallint
);

-- The backend clock in milliseconds. p_offset >= 0: the database clock plus that offset (0 in
-- production; tests move it with advance_clock). p_offset < 0: a frozen test clock reading
-- -p_offset, which moves only through advance_clock.
CREATE FUNCTION ff_now(p_offset bigint) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN p_offset < 0 THEN -p_offset
                ELSE floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + p_offset END
$$;

-- A wake-up hint, only when the connection enabled them (flowfabric.hints = on).
CREATE FUNCTION ff_hint(p_payload text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('flowfabric.hints', true) = 'on' THEN
        PERFORM pg_notify('flowfabric_' || current_schema(), p_payload);
    END IF;
END $$;

-- WorkReady hints: an execution became ready (created, promoted, satisfied, retried). Only
-- evaluated when the session turned hints on.
CREATE FUNCTION ff_ready_hint() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flowfabric_' || current_schema(), 'w:' || NEW.part || ':' || NEW.lane);
    RETURN NULL;
END $$;

CREATE TRIGGER ff_execution_ready_hint
    AFTER INSERT OR UPDATE OF state ON ff_execution
    FOR EACH ROW
    WHEN (NEW.state = 'ready' AND current_setting('flowfabric.hints', true) = 'on')
    EXECUTE FUNCTION ff_ready_hint();

-- A status reply (errors, repeats, dispositions).
CREATE FUNCTION ff_status(p_code text, p_id uuid, p_state text, p_epoch bigint,
                          p_attempt integer, p_end text, p_available bigint)
RETURNS ff_reply LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(p_code, p_id, p_state, p_epoch, p_attempt, p_end, NULL, NULL, NULL, NULL,
               NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, p_available,
               NULL)::ff_reply
$$;

-- The record of an attempt that ends now, appended to `history`.
CREATE FUNCTION ff_attempt_ended(p_history jsonb, p_attempt integer, p_worker text,
                                 p_lease uuid, p_epoch bigint, p_started bigint,
                                 p_ended bigint, p_outcome text, p_message text,
                                 p_retryable boolean)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(p_history, '[]'::jsonb) || jsonb_build_array(jsonb_strip_nulls(
        jsonb_build_object('n', p_attempt, 'w', p_worker, 'l', p_lease, 'e', p_epoch,
                           's', p_started, 't', p_ended, 'o', p_outcome, 'm', p_message,
                           'r', p_retryable)))
$$;

-- The fence check, steps 3 to 6 of the trait docs, on a locked row: 'ok' when the call may
-- take effect, otherwise why not ('inactive' = not running: a repeat or NotActive).
CREATE FUNCTION ff_fence(p_state text, p_epoch bigint, p_lease uuid, p_expires bigint,
                         p_fence_epoch bigint, p_fence_lease uuid, p_now bigint)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_epoch <> p_fence_epoch THEN 'stale_epoch'
        WHEN p_lease IS DISTINCT FROM p_fence_lease THEN 'lease_mismatch'
        WHEN p_state = 'running' AND p_expires <= p_now THEN 'lease_expired'
        WHEN p_state = 'running' THEN 'ok'
        ELSE 'inactive'
    END
$$;

-- Locks the flow row of a member (lock order: flow first). Returns the flow id, NULL for a
-- standalone execution or an unknown id.
CREATE FUNCTION ff_lock_flow_of(p_id uuid) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_flow uuid;
BEGIN
    SELECT f.id INTO v_flow FROM ff_flow f
    WHERE f.id = (SELECT x.flow_id FROM ff_execution x WHERE x.id = p_id)
    FOR UPDATE OF f;
    RETURN v_flow;
END $$;

-- The results handed to a claimed member along its `pass_result` edges from upstreams that
-- succeeded, in edge order: keys, execution ids, results. Separate plpgsql functions called
-- only for members that have such edges (`has_inputs`), so a claim of anything else pays
-- nothing for them (subqueries in the claim statement would be initialised on every call).
CREATE FUNCTION ff_input_keys(p_id uuid) RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN ARRAY(
        SELECT u.node_key FROM ff_edge e JOIN ff_execution u ON u.id = e.from_id
        WHERE e.to_id = p_id AND e.pass_result AND u.state = 'succeeded'
        ORDER BY e.edge_no);
END $$;

CREATE FUNCTION ff_input_ids(p_id uuid) RETURNS uuid[]
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN ARRAY(
        SELECT u.id FROM ff_edge e JOIN ff_execution u ON u.id = e.from_id
        WHERE e.to_id = p_id AND e.pass_result AND u.state = 'succeeded'
        ORDER BY e.edge_no);
END $$;

CREATE FUNCTION ff_input_results(p_id uuid) RETURNS bytea[]
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN ARRAY(
        SELECT u.result FROM ff_edge e JOIN ff_execution u ON u.id = e.from_id
        WHERE e.to_id = p_id AND e.pass_result AND u.state = 'succeeded'
        ORDER BY e.edge_no);
END $$;

-- Leases up to p_max ready executions of a lane whose required capabilities the worker
-- offers, by priority then FIFO, skipping any whose deadline has passed (the deadline scanner
-- expires those). One statement: candidates are locked with SKIP LOCKED, so concurrent
-- claimers never wait for each other. (plpgsql rather than SQL: PostgreSQL caches the plan of
-- a plpgsql statement per session, while a SQL function is planned again on every call.)
CREATE FUNCTION ff_claim(p_lane text, p_caps text[], p_max integer, p_ttl bigint,
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
    RETURNING 'claimed'::text, x.id, x.state, x.epoch, x.attempt, NULL::text, x.lease_id,
        x.lane, x.priority, x.payload, x.flow_id, x.node_key, x.lease_expires_at,
        x.attempt_deadline_at, x.deadline_at,
        CASE WHEN x.has_inputs THEN ff_input_keys(x.id) END,
        CASE WHEN x.has_inputs THEN ff_input_ids(x.id) END,
        CASE WHEN x.has_inputs THEN ff_input_results(x.id) END,
        x.max_attempts, CASE WHEN x.max_attempts > 1 THEN x.retry END, x.available_at,
        x.part;
END $$;

-- A flow member reached a terminal state (its row is already updated): counts it in its
-- flow and finishes the flow when it was the last one. Its outgoing edges: none → nothing;
-- at most p_inline → returns true, and the caller applies them inline (ff_cascade_inline,
-- breadth first, in this transaction); more → its completion goes to the outbox for
-- cascade_completion.
CREATE FUNCTION ff_member_ended(p_id uuid, p_part smallint, p_flow uuid, p_out_degree integer,
                                p_state text, p_reason text, p_now bigint, p_inline integer)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_fails integer := CASE WHEN p_reason IN ('attempts_exhausted', 'non_retryable',
        'cancelled_by_user', 'deadline_exceeded', 'dependency_impossible') THEN 1 ELSE 0 END;
    v_state text;
BEGIN
    UPDATE ff_flow
    SET terminal = terminal + 1,
        failing = failing + v_fails,
        state = CASE WHEN terminal + 1 < total THEN state
                     WHEN cancel_requested THEN 'cancelled'
                     WHEN failing + v_fails > 0 THEN 'failed'
                     ELSE 'succeeded' END,
        finished_at = CASE WHEN terminal + 1 < total THEN finished_at ELSE p_now END
    WHERE id = p_flow
    RETURNING state INTO v_state;
    IF v_state <> 'running' THEN
        PERFORM ff_hint('f:' || p_flow);
    END IF;
    -- As ff_completion_recorded, inlined on this hot path.
    IF p_out_degree = 0 THEN
        RETURN false;
    END IF;
    IF p_out_degree <= p_inline THEN
        RETURN true;
    END IF;
    INSERT INTO ff_completion (exec_id, part, flow_id, outcome, recorded_at)
    VALUES (p_id, p_part, p_flow, p_state, p_now)
    ON CONFLICT (exec_id) DO NOTHING;
    PERFORM ff_hint('c:' || p_part);
    RETURN false;
END $$;

-- The cascade half of a member's end: true = cascade inline (small out-degree), otherwise
-- the completion is written to the outbox (nothing to do for a member without edges).
CREATE FUNCTION ff_completion_recorded(p_id uuid, p_part smallint, p_flow uuid,
                                       p_out_degree integer, p_state text, p_now bigint,
                                       p_inline integer)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF p_out_degree = 0 THEN
        RETURN false;
    END IF;
    IF p_out_degree <= p_inline THEN
        RETURN true;
    END IF;
    INSERT INTO ff_completion (exec_id, part, flow_id, outcome, recorded_at)
    VALUES (p_id, p_part, p_flow, p_state, p_now)
    ON CONFLICT (exec_id) DO NOTHING;
    PERFORM ff_hint('c:' || p_part);
    RETURN false;
END $$;

-- Applies the outgoing edges of ended members breadth first, in the caller's transaction:
-- the inline cascade. Members ended on the way (skipped, cancelled) join the queue, as in the
-- reference backend's one inline queue; past a budget the rest go to the outbox, so one
-- transaction stays bounded.
CREATE FUNCTION ff_cascade_inline(p_queue uuid[], p_now bigint, p_inline integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_queue uuid[] := p_queue;
    v_i integer := 1;
    v record;
    v_applied integer;
    v_ended uuid[];
BEGIN
    WHILE v_i <= coalesce(cardinality(v_queue), 0) LOOP
        SELECT state, part, flow_id INTO v FROM ff_execution WHERE id = v_queue[v_i];
        IF v_i > 2000 THEN
            INSERT INTO ff_completion (exec_id, part, flow_id, outcome, recorded_at)
            VALUES (v_queue[v_i], v.part, v.flow_id, v.state, p_now)
            ON CONFLICT (exec_id) DO NOTHING;
            PERFORM ff_hint('c:' || v.part);
        ELSE
            SELECT a.applied, a.ended INTO v_applied, v_ended
            FROM ff_apply_edges(v_queue[v_i], v.state, v.flow_id, v.part, NULL, p_now,
                                p_inline) a;
            v_queue := v_queue || v_ended;
        END IF;
        v_i := v_i + 1;
    END LOOP;
END $$;

-- Applies up to p_limit (NULL = all) not-yet-applied outgoing edges of an ended member, in
-- edge order, each marked applied in the same transaction. Returns how many it applied and
-- the members it ended that are to be cascaded inline.
CREATE FUNCTION ff_apply_edges(p_from uuid, p_state text, p_flow uuid, p_part smallint,
                               p_limit integer, p_now bigint, p_inline integer,
                               OUT applied integer, OUT ended uuid[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_edge record;
BEGIN
    applied := 0;
    ended := '{}';
    FOR v_edge IN
        UPDATE ff_edge e SET applied = true
        FROM (SELECT edge_no FROM ff_edge
              WHERE from_id = p_from AND NOT applied
              ORDER BY edge_no LIMIT p_limit) pick
        WHERE e.from_id = p_from AND e.edge_no = pick.edge_no
        RETURNING e.to_id, e.kind, e.edge_no
    LOOP
        ended := ended || ff_apply_edge(v_edge.to_id,
                                        v_edge.kind = 'always' OR p_state = 'succeeded',
                                        p_flow, p_part, p_now, p_inline);
        applied := applied + 1;
    END LOOP;
END $$;

-- Counts one applied edge in the downstream's group and acts on a verdict reached now:
-- satisfied → ready (or delayed by the node's own delay; cancelled if its flow's cancel was
-- requested), and with CancelRemaining the unfinished upstreams are cancelled; impossible →
-- a blocked downstream is skipped. Returns the members it ended that cascade inline.
CREATE FUNCTION ff_apply_edge(p_to uuid, p_sat boolean, p_flow uuid, p_part smallint,
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
BEGIN
    -- A plain read is enough: the caller holds the flow lock, and every transition of a
    -- blocked member takes it too.
    SELECT state, grp_verdict, grp_sat, grp_unsat, grp_incoming, grp_need,
           grp_cancel_remaining, delay_ms, out_degree
    INTO v FROM ff_execution WHERE id = p_to;
    v_verdict := v.grp_verdict;
    IF v_verdict = 'pending' THEN
        IF v.grp_sat + v_sat >= v.grp_need THEN
            v_verdict := 'satisfied';
        ELSIF v.grp_unsat + v_unsat > v.grp_incoming - v.grp_need THEN
            v_verdict := 'impossible';
        END IF;
    END IF;
    IF v_verdict = 'satisfied' AND v.grp_verdict = 'pending' AND v.state = 'blocked'
       AND NOT (SELECT cancel_requested FROM ff_flow WHERE id = p_flow) THEN
        -- Satisfied now: counters, verdict and the transition in one row version.
        UPDATE ff_execution
        SET grp_sat = grp_sat + v_sat, grp_unsat = grp_unsat + v_unsat,
            grp_verdict = v_verdict,
            state = CASE WHEN delay_ms > 0 THEN 'delayed' ELSE 'ready' END,
            ready_seq = CASE WHEN delay_ms > 0 THEN NULL ELSE nextval('ff_ready_seq') END,
            available_at = CASE WHEN delay_ms > 0 THEN p_now + delay_ms END
        WHERE id = p_to;
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

-- Cancels one unfinished execution (the caller holds its flow lock, if any): a running one
-- is fenced out (epoch + 1) and its attempt ends 'cancelled'. `previous` is the state it was
-- cancelled from (NULL when it had already ended); `inline` says whether its edges are to be
-- cascaded inline by the caller.
CREATE FUNCTION ff_cancel_one(p_id uuid, p_reason text, p_now bigint, p_inline integer,
                              OUT previous text, OUT inline boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
BEGIN
    inline := false;
    SELECT state, part, flow_id, out_degree
    INTO v FROM ff_execution WHERE id = p_id FOR UPDATE;
    IF NOT FOUND OR v.state NOT IN ('blocked', 'delayed', 'ready', 'running') THEN
        previous := NULL;
        RETURN;
    END IF;
    previous := v.state;
    UPDATE ff_execution
    SET state = 'cancelled', end_reason = p_reason, finished_at = p_now, ready_seq = NULL,
        available_at = NULL, attempt_deadline_at = NULL,
        epoch = CASE WHEN v.state = 'running' THEN epoch + 1 ELSE epoch END,
        history = CASE WHEN v.state = 'running' THEN
            ff_attempt_ended(history, attempt, worker, lease_id, epoch, attempt_started_at,
                             p_now, 'cancelled', NULL, NULL)
            ELSE history END
    WHERE id = p_id;
    IF v.flow_id IS NOT NULL THEN
        inline := ff_member_ended(p_id, v.part, v.flow_id, v.out_degree, 'cancelled', p_reason,
                                  p_now, p_inline);
    END IF;
END $$;

-- A failed attempt with attempts left (the attempt is already recorded as ended by the
-- caller's update): `delayed` until now + p_delay_ms, or `ready` at once for a zero delay —
-- unless its flow's cancel was requested, in which case it is cancelled instead. Returns
-- 'retry', 'cancelled', or 'cascade' (cancelled, and the caller cascades it inline).
CREATE FUNCTION ff_retry_or_cancel(p_id uuid, p_part smallint, p_flow uuid, p_out_degree integer,
                                   p_delay_ms bigint, p_now bigint, p_inline integer)
RETURNS text LANGUAGE plpgsql AS $$
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
    WHERE id = p_id;
    RETURN 'retry';
END $$;

-- A member ended now: flow bookkeeping and, when small, its inline cascade.
CREATE FUNCTION ff_end_member(p_id uuid, p_part smallint, p_flow uuid, p_out_degree integer,
                              p_state text, p_reason text, p_now bigint, p_inline integer)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF ff_member_ended(p_id, p_part, p_flow, p_out_degree, p_state, p_reason, p_now,
                       p_inline) THEN
        PERFORM ff_cascade_inline(ARRAY[p_id], p_now, p_inline);
    END IF;
END $$;

-- `complete`: fence check, running → succeeded, flow bookkeeping (inline cascade or outbox),
-- and with p_max > 0 the claim of the worker's next executions — one transaction, one round
-- trip. The first row is the status ('ok', 'repeat' or an error code); 'claimed' rows follow.
--
-- A standalone execution takes one fenced UPDATE (epoch, lease id and expiry in the WHERE
-- clause); a flow member locks its flow first (lock order), then takes the same UPDATE. Only
-- when the UPDATE matches nothing does a read classify why.
CREATE FUNCTION ff_complete(p_id uuid, p_part smallint, p_lease uuid, p_epoch bigint,
                            p_result bytea, p_offset bigint, p_inline integer,
                            p_lane text, p_caps text[], p_max integer, p_ttl bigint,
                            p_worker text)
RETURNS SETOF ff_reply LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := ff_now(p_offset);
    v record;
    v_flow uuid;
    v_fence text;
    v_done boolean;
BEGIN
    UPDATE ff_execution
    SET state = 'succeeded', end_reason = 'completed', result = p_result,
        finished_at = v_now, attempt_deadline_at = NULL,
        history = ff_attempt_ended(history, attempt, worker, lease_id, epoch,
                                   attempt_started_at, v_now, 'succeeded', NULL, NULL)
    WHERE id = p_id AND part = p_part AND flow_id IS NULL AND epoch = p_epoch
      AND lease_id = p_lease AND state = 'running' AND lease_expires_at > v_now
    RETURNING epoch, attempt INTO v;
    v_done := FOUND;
    IF NOT v_done THEN
        v_flow := ff_lock_flow_of(p_id);
        IF v_flow IS NOT NULL THEN
            UPDATE ff_execution
            SET state = 'succeeded', end_reason = 'completed', result = p_result,
                finished_at = v_now, attempt_deadline_at = NULL,
                history = ff_attempt_ended(history, attempt, worker, lease_id, epoch,
                                           attempt_started_at, v_now, 'succeeded', NULL, NULL)
            WHERE id = p_id AND part = p_part AND epoch = p_epoch
              AND lease_id = p_lease AND state = 'running' AND lease_expires_at > v_now
            RETURNING epoch, attempt, out_degree INTO v;
            v_done := FOUND;
            IF v_done THEN
                IF ff_member_ended(p_id, p_part, v_flow, v.out_degree, 'succeeded',
                                   'completed', v_now, p_inline) THEN
                    PERFORM ff_cascade_inline(ARRAY[p_id], v_now, p_inline);
                END IF;
            END IF;
        END IF;
    END IF;
    IF v_done THEN
        RETURN NEXT ff_status('ok', p_id, 'succeeded', v.epoch, v.attempt, 'completed', NULL);
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
        RETURNING 'claimed'::text, x.id, x.state, x.epoch, x.attempt, NULL::text, x.lease_id,
            x.lane, x.priority, x.payload, x.flow_id, x.node_key, x.lease_expires_at,
            x.attempt_deadline_at, x.deadline_at,
            CASE WHEN x.has_inputs THEN ff_input_keys(x.id) END,
            CASE WHEN x.has_inputs THEN ff_input_ids(x.id) END,
            CASE WHEN x.has_inputs THEN ff_input_results(x.id) END,
            x.max_attempts, CASE WHEN x.max_attempts > 1 THEN x.retry END, x.available_at,
            x.part;
    END IF;
END $$;

-- `fail`: fence check, then retry (after p_delay_ms, computed by the client) or fail for
-- good. When a retry is due and p_delay_ms is NULL, answers 'need_delay' with the attempt and
-- the policy and changes nothing. A repeat answers the disposition the first call recorded
-- (`fail_disposition`). Claims next like complete.
CREATE FUNCTION ff_fail(p_id uuid, p_part smallint, p_lease uuid, p_epoch bigint,
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
        RETURNING 'claimed'::text, x.id, x.state, x.epoch, x.attempt, NULL::text, x.lease_id,
            x.lane, x.priority, x.payload, x.flow_id, x.node_key, x.lease_expires_at,
            x.attempt_deadline_at, x.deadline_at,
            CASE WHEN x.has_inputs THEN ff_input_keys(x.id) END,
            CASE WHEN x.has_inputs THEN ff_input_ids(x.id) END,
            CASE WHEN x.has_inputs THEN ff_input_results(x.id) END,
            x.max_attempts, CASE WHEN x.max_attempts > 1 THEN x.retry END, x.available_at,
            x.part;
    END IF;
END $$;

-- Classifies a fenced write (renew, progress) that matched nothing: only on the failure path.
CREATE FUNCTION ff_classify(p_id uuid, p_part smallint, p_lease uuid, p_epoch bigint,
                            p_offset bigint)
RETURNS ff_reply LANGUAGE plpgsql AS $$
DECLARE
    v record;
BEGIN
    SELECT state, epoch, lease_id, lease_expires_at, attempt, end_reason
    INTO v FROM ff_execution WHERE id = p_id AND part = p_part;
    IF NOT FOUND THEN
        RETURN ff_status('not_found', p_id, NULL, NULL, NULL, NULL, NULL);
    END IF;
    RETURN ff_status(ff_fence(v.state, v.epoch, v.lease_id, v.lease_expires_at, p_epoch,
                              p_lease, ff_now(p_offset)),
                     p_id, v.state, v.epoch, v.attempt, v.end_reason, NULL);
END $$;

-- A failed attempt decided by the backend (lease expiry, attempt timeout): re-checks that
-- the item is still due at the scanned epoch, bumps the epoch, and retries (after p_delay_ms,
-- computed by the client) or fails for good. `result`: 'retry', 'failed', 'cancelled',
-- 'need_delay' or 'gone' (no longer due: nothing changed); `cascade`: the caller cascades the
-- member inline (the scanner does so after its whole batch, like the reference backend).
CREATE FUNCTION ff_attempt_lost(p_id uuid, p_epoch bigint, p_outcome text, p_delay_ms bigint,
                                p_now bigint, p_inline integer,
                                OUT result text, OUT cascade boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
BEGIN
    cascade := false;
    PERFORM ff_lock_flow_of(p_id);
    SELECT state, epoch, attempt, max_attempts, lease_expires_at, attempt_deadline_at, part,
           flow_id, out_degree
    INTO v FROM ff_execution WHERE id = p_id FOR UPDATE;
    IF NOT FOUND OR v.state <> 'running' OR v.epoch <> p_epoch
       OR (p_outcome = 'lease_expired' AND v.lease_expires_at > p_now)
       OR (p_outcome = 'attempt_timeout'
           AND (v.attempt_deadline_at IS NULL OR v.attempt_deadline_at > p_now)) THEN
        result := 'gone';
        RETURN;
    END IF;
    IF v.attempt < v.max_attempts AND p_delay_ms IS NULL THEN
        result := 'need_delay';
        RETURN;
    END IF;
    UPDATE ff_execution
    SET epoch = epoch + 1, fail_disposition = NULL,
        history = ff_attempt_ended(history, attempt, worker, lease_id, epoch,
                                   attempt_started_at, p_now, p_outcome, NULL, NULL)
    WHERE id = p_id;
    IF v.attempt < v.max_attempts THEN
        result := ff_retry_or_cancel(p_id, v.part, v.flow_id, v.out_degree, p_delay_ms, p_now,
                                     p_inline);
        IF result = 'cascade' THEN
            result := 'cancelled';
            cascade := true;
        END IF;
        RETURN;
    END IF;
    UPDATE ff_execution
    SET state = 'failed', end_reason = 'attempts_exhausted', finished_at = p_now,
        attempt_deadline_at = NULL
    WHERE id = p_id;
    IF v.flow_id IS NOT NULL THEN
        cascade := ff_member_ended(p_id, v.part, v.flow_id, v.out_degree, 'failed',
                                   'attempts_exhausted', p_now, p_inline);
    END IF;
    result := 'failed';
END $$;

-- The deadline step for one execution: unfinished and past its deadline → expired (a
-- running one is fenced out). `expired` says whether it expired it; `cascade`: the caller
-- cascades it inline.
CREATE FUNCTION ff_expire(p_id uuid, p_now bigint, p_inline integer,
                          OUT expired boolean, OUT cascade boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
BEGIN
    expired := false;
    cascade := false;
    PERFORM ff_lock_flow_of(p_id);
    SELECT state, part, flow_id, out_degree, deadline_at
    INTO v FROM ff_execution WHERE id = p_id FOR UPDATE;
    IF NOT FOUND OR v.state NOT IN ('blocked', 'delayed', 'ready', 'running')
       OR v.deadline_at IS NULL OR v.deadline_at > p_now THEN
        RETURN;
    END IF;
    UPDATE ff_execution
    SET state = 'expired', end_reason = 'deadline_exceeded', finished_at = p_now,
        ready_seq = NULL, attempt_deadline_at = NULL, available_at = NULL,
        epoch = CASE WHEN v.state = 'running' THEN epoch + 1 ELSE epoch END,
        history = CASE WHEN v.state = 'running' THEN
            ff_attempt_ended(history, attempt, worker, lease_id, epoch, attempt_started_at,
                             p_now, 'expired', NULL, NULL)
            ELSE history END
    WHERE id = p_id;
    expired := true;
    IF v.flow_id IS NOT NULL THEN
        cascade := ff_member_ended(p_id, v.part, v.flow_id, v.out_degree, 'expired',
                                   'deadline_exceeded', p_now, p_inline);
    END IF;
END $$;

-- One scanner batch of lease expiries ('lease_expired'), attempt timeouts ('attempt_timeout')
-- or deadlines ('deadline'): each item in its own subtransaction (a failing item is reported
-- and rolled back alone), then the inline cascade of everything the batch ended, breadth
-- first — the reference backend's order. Returns the items that failed, with the error.
CREATE FUNCTION ff_scan_batch(p_kind text, p_ids uuid[], p_epochs bigint[], p_delays bigint[],
                              p_offset bigint, p_inline integer)
RETURNS TABLE (item uuid, error text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now bigint := ff_now(p_offset);
    v_queue uuid[] := '{}';
    v_lost record;
    v_expired record;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_ids), 0) LOOP
        BEGIN
            IF p_kind = 'deadline' THEN
                SELECT * INTO v_expired FROM ff_expire(p_ids[i], v_now, p_inline);
                IF v_expired.cascade THEN
                    v_queue := v_queue || p_ids[i];
                END IF;
            ELSE
                SELECT * INTO v_lost FROM ff_attempt_lost(p_ids[i], p_epochs[i], p_kind,
                                                          p_delays[i], v_now, p_inline);
                IF v_lost.cascade THEN
                    v_queue := v_queue || p_ids[i];
                END IF;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            item := p_ids[i];
            error := SQLSTATE || ': ' || SQLERRM;
            RETURN NEXT;
        END;
    END LOOP;
    PERFORM ff_cascade_inline(v_queue, v_now, p_inline);
END $$;

-- `cancel_execution`: returns 'cancelled' with the previous state, 'terminal' with the
-- current status, or 'not_found'.
CREATE FUNCTION ff_cancel_execution(p_id uuid, p_part smallint, p_offset bigint,
                                    p_inline integer)
RETURNS ff_reply LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := ff_now(p_offset);
    v_cancel record;
    v record;
BEGIN
    PERFORM ff_lock_flow_of(p_id);
    SELECT state, epoch, attempt, end_reason, flow_id INTO v
    FROM ff_execution WHERE id = p_id AND part = p_part;
    IF NOT FOUND THEN
        RETURN ff_status('not_found', p_id, NULL, NULL, NULL, NULL, NULL);
    END IF;
    SELECT * INTO v_cancel FROM ff_cancel_one(p_id, 'cancelled_by_user', v_now, p_inline);
    IF v_cancel.previous IS NULL THEN
        RETURN ff_status('terminal', p_id, v.state, v.epoch, v.attempt, v.end_reason, NULL);
    END IF;
    IF v_cancel.inline THEN
        PERFORM ff_cascade_inline(ARRAY[p_id], v_now, p_inline);
    END IF;
    RETURN ff_status('cancelled', p_id, v_cancel.previous, NULL, NULL, NULL, NULL);
END $$;

-- Cancels up to p_limit unfinished members of a flow (all of them with 'cancel_all', those
-- not started with 'cancel_pending'), set-based: every targeted member is cancelled first,
-- then their outgoing edges are applied, so the cascade never skips a member this call
-- cancels. Members left over go to the cancel backlog. Returns (cancelled, left, flow state),
-- or no row when the flow does not exist.
CREATE FUNCTION ff_cancel_flow_step(p_flow uuid, p_mode text, p_limit integer,
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
        SELECT x.id FROM ff_execution x
        WHERE x.flow_id = p_flow AND x.state = ANY (v_states)
        ORDER BY x.member_no LIMIT p_limit FOR UPDATE
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
    SELECT count(*) INTO v_left FROM ff_execution
    WHERE flow_id = p_flow AND state = ANY (v_states);
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

-- `cascade_completion` for one event: applies up to p_chunk of its edges (and, inline, what
-- they end) and retires it after the last one, in one transaction. Returns (applied,
-- finished).
CREATE FUNCTION ff_cascade(p_id uuid, p_chunk integer, p_offset bigint, p_inline integer)
RETURNS TABLE (applied integer, finished boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now bigint := ff_now(p_offset);
    v_flow uuid;
    v record;
    v_applied integer;
    v_ended uuid[];
BEGIN
    SELECT flow_id INTO v_flow FROM ff_completion WHERE exec_id = p_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0, true;
        RETURN;
    END IF;
    PERFORM 1 FROM ff_flow WHERE id = v_flow FOR UPDATE;
    SELECT exec_id, part, flow_id, outcome INTO v
    FROM ff_completion WHERE exec_id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0, true;
        RETURN;
    END IF;
    SELECT a.applied, a.ended INTO v_applied, v_ended
    FROM ff_apply_edges(p_id, v.outcome, v.flow_id, v.part, p_chunk, v_now, p_inline) a;
    PERFORM ff_cascade_inline(v_ended, v_now, p_inline);
    IF EXISTS (SELECT 1 FROM ff_edge WHERE from_id = p_id AND NOT applied) THEN
        RETURN QUERY SELECT v_applied, false;
        RETURN;
    END IF;
    DELETE FROM ff_completion WHERE exec_id = p_id;
    RETURN QUERY SELECT v_applied, true;
END $$;

-- `create_flow` (p_patch = false) and `add_nodes` (p_patch = true): the whole graph in one
-- transaction, bulk-inserted from arrays. Rows: ('created' | 'exists', key, id) per node, or
-- one error row ('flow_not_found' | 'duplicate_node' key | 'node_not_found' key |
-- 'flow_not_open' state/cancel_requested).
CREATE FUNCTION ff_insert_graph(
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
            RETURN QUERY SELECT 'exists'::text, x.node_key, x.id FROM ff_execution x
                WHERE x.flow_id = p_flow ORDER BY x.member_no;
            RETURN;
        END IF;
    ELSE
        SELECT f.state, f.cancel_requested INTO v_flow FROM ff_flow f
        WHERE f.id = p_flow FOR UPDATE;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'flow_not_found'::text, NULL::text, NULL::uuid;
            RETURN;
        END IF;
        SELECT count(*) INTO v_existing FROM ff_execution x
        WHERE x.flow_id = p_flow AND x.node_key = ANY (n_keys);
        IF v_existing = v_n THEN
            RETURN QUERY SELECT 'exists'::text, x.node_key, x.id
                FROM unnest(n_keys) WITH ORDINALITY k(key, ord)
                JOIN ff_execution x ON x.flow_id = p_flow AND x.node_key = k.key
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
            WHERE EXISTS (SELECT 1 FROM ff_execution x
                          WHERE x.flow_id = p_flow AND x.node_key = k.key)
            ORDER BY k.ord LIMIT 1;
            RETURN QUERY SELECT 'duplicate_node'::text, v_key, NULL::uuid;
            RETURN;
        END IF;
        SELECT e.key INTO v_key FROM unnest(e_from) WITH ORDINALITY e(key, ord)
        WHERE e.key <> ALL (n_keys)
          AND NOT EXISTS (SELECT 1 FROM ff_execution x
                          WHERE x.flow_id = p_flow AND x.node_key = e.key)
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

    IF v_m > 0 THEN
        INSERT INTO ff_edge (from_id, to_id, flow_id, edge_no, kind, pass_result)
        SELECT f.id, t.id, p_flow, v_base_edge + e.ord::integer, e.kind, e.pass
        FROM unnest(e_from, e_to, e_kind, e_pass) WITH ORDINALITY AS e(fk, tk, kind, pass, ord)
        JOIN ff_execution f ON f.flow_id = p_flow AND f.node_key = e.fk
        JOIN ff_execution t ON t.flow_id = p_flow AND t.node_key = e.tk;
    END IF;

    IF p_patch AND v_m > 0 THEN
        -- Existing upstreams: more out-degree; those already ended apply their new edges now.
        UPDATE ff_execution x SET out_degree = x.out_degree + c.n
        FROM (SELECT e.key, count(*)::integer AS n FROM unnest(e_from) e(key)
              WHERE e.key <> ALL (n_keys) GROUP BY e.key) c
        WHERE x.flow_id = p_flow AND x.node_key = c.key;
        FOR v_edge IN
            SELECT f.id AS from_id, f.state AS from_state, t.id AS to_id, e.kind,
                   v_base_edge + e.ord::integer AS edge_no
            FROM unnest(e_from, e_to, e_kind) WITH ORDINALITY AS e(fk, tk, kind, ord)
            JOIN ff_execution f ON f.flow_id = p_flow AND f.node_key = e.fk
            JOIN ff_execution t ON t.flow_id = p_flow AND t.node_key = e.tk
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

    RETURN QUERY SELECT 'created'::text, k.key, k.id
        FROM unnest(n_keys, n_ids) WITH ORDINALITY AS k(key, id, ord) ORDER BY k.ord;
END $$;

-- The delayed promoter's step: `delayed → ready` in the given (due) order, each taking its
-- FIFO sequence now. Returns how many it promoted.
CREATE FUNCTION ff_promote(p_ids uuid[]) RETURNS integer
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
    RETURN v_promoted;
END $$;
