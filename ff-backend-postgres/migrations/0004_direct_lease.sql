-- FlowFabric schema, version 4: the direct lease of a chain's downstream without a join.
--
-- Version 3 leased the single downstream of a completing member (`complete` with
-- `claim_next`) in one UPDATE that also counted the edge in every other case, deciding "take
-- it" in a subquery over the downstream's row joined into the UPDATE (`FROM (SELECT … FROM
-- ff_execution c …) d`). The planner pulls such a subquery up into a join, and an UPDATE
-- keeps a copy of every joined row for its recheck under concurrency: the whole downstream
-- row, whose 4 KiB payload is then read back from TOAST and copied on every chain hop.
-- Measured in the backend's bench (`FF_PG_BENCH_VARIANT_SQL`, chains of 10 nodes, 16
-- workers, 5 interleaved rounds on one server, twice): the same statement with the subquery
-- kept apart (`OFFSET 0`) ran 26–29 % more node executions per second; this version, a lean
-- lease UPDATE for that case alone (tried first, with the general edge UPDATE as before when
-- it does not take the downstream), 39–43 % more — 232–256 µs of server CPU per node instead
-- of 322–371 µs.

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
                -- it becomes ready and the claim would take it (the lease UPDATE below), one
                -- row version and one statement fewer than readying it and then claiming it.
                -- Otherwise (and when that UPDATE finds the downstream not takeable) the edge
                -- is counted by the general edge UPDATE.
                v_direct := cardinality(v.downstream) = 1 AND p_max > 0;
                FOREACH v_to IN ARRAY v.downstream LOOP
                    IF v_direct THEN
                        -- The downstream becomes ready now (its one missing edge, no delay)
                        -- and the claim-next affinity below would lease it: the worker's lane,
                        -- within its capabilities, not past its deadline, no ready work of the
                        -- lane with a higher priority, its flow's cancel not requested (read
                        -- under the flow lock the upstream's UPDATE took, which serializes every
                        -- transition of a blocked member). The lease fields are ff_claim's.
                        UPDATE ff_execution x
                        SET grp_sat = x.grp_sat + 1, grp_verdict = 'satisfied', state = 'running',
                            epoch = x.epoch + 1, attempt = x.attempt + 1,
                            lease_id = gen_random_uuid(), worker = p_worker,
                            lease_expires_at = v_now + p_ttl, attempt_started_at = v_now,
                            attempt_deadline_at = v_now + x.attempt_timeout_ms,
                            ready_seq = NULL, progress = NULL, fail_disposition = NULL
                        WHERE x.id = v_to AND x.state = 'blocked' AND x.grp_verdict = 'pending'
                          AND x.grp_sat + 1 >= x.grp_need AND x.delay_ms = 0
                          AND NOT x.grp_cancel_remaining AND NOT v.cancel_requested
                          AND x.lane = p_lane AND x.caps <@ p_caps
                          AND (x.deadline_at IS NULL OR x.deadline_at > v_now)
                          AND NOT EXISTS (SELECT 1 FROM ff_execution h
                                          WHERE h.state = 'ready' AND h.lane = p_lane
                                            AND h.priority > x.priority)
                        RETURNING 'claimed'::text, x.id, x.state::text, x.epoch, x.attempt,
                            NULL::text, x.lease_id, x.lane, x.priority, x.payload, x.flow_id,
                            x.node_key, x.lease_expires_at, x.attempt_deadline_at, x.deadline_at,
                            CASE WHEN x.has_inputs THEN ff_input_keys(x.id) END,
                            CASE WHEN x.has_inputs THEN ff_input_ids(x.id) END,
                            CASE WHEN x.has_inputs THEN ff_input_results(x.id) END,
                            x.max_attempts, CASE WHEN x.max_attempts > 1 THEN x.retry END,
                            x.available_at, x.part
                        INTO v_claim;
                        IF FOUND THEN
                            v_affine := 1;
                            CONTINUE;
                        END IF;
                    END IF;
                    -- The general edge UPDATE (ff_apply_edge's fast path, inlined).
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
                            AS idle_lane
                    INTO v_down;
                    IF NOT FOUND THEN
                        v_queue := v_queue || ff_apply_edge(v_to, true, v.flow_id, p_part,
                                                            v_now, p_inline);
                    ELSE
                        -- Made ready but not leased directly: the affinity claim takes it
                        -- when the lease UPDATE was not tried (it would not take it either).
                        IF v_down.readied AND NOT v_direct THEN
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
