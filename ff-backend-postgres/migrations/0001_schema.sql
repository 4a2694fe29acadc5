-- FlowFabric schema, version 1: tables and indexes.
--
-- Every statement runs with `search_path` set to the deployment's schema (see config.rs), so
-- nothing here is schema-qualified. Times are milliseconds since the Unix epoch on the
-- backend clock (clock_timestamp() plus the backend instance's test offset).

-- Deployment facts stored on first start (partition count) and checked on every start.
CREATE TABLE ff_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- FIFO order of ready executions: taken whenever an execution becomes ready.
CREATE SEQUENCE ff_ready_seq AS bigint;

CREATE TABLE ff_flow (
    id               uuid PRIMARY KEY,
    part             smallint NOT NULL,
    state            text NOT NULL DEFAULT 'running'
                     CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled')),
    cancel_requested boolean NOT NULL DEFAULT false,
    -- Exact member counters, changed in the same transaction as every member transition.
    total            integer NOT NULL CHECK (total >= 0),
    terminal         integer NOT NULL DEFAULT 0 CHECK (terminal >= 0 AND terminal <= total),
    failing          integer NOT NULL DEFAULT 0 CHECK (failing >= 0 AND failing <= terminal),
    -- Creation order of members and edges (describe_flow lists them in it).
    next_member      integer NOT NULL DEFAULT 0,
    next_edge        integer NOT NULL DEFAULT 0,
    created_at       bigint NOT NULL,
    finished_at      bigint
);
-- Retention of finished flows, per partition, oldest first.
CREATE INDEX ff_flow_finished ON ff_flow (part, finished_at, id) WHERE state <> 'running';

-- One row per execution, standalone or flow member. The current attempt lives in the row;
-- finished attempts are appended to `history` (jsonb array) by the transition that ends them,
-- so an attempt costs no extra row nor index entry.
CREATE TABLE ff_execution (
    id                  uuid PRIMARY KEY,
    part                smallint NOT NULL,
    state               text NOT NULL CHECK (state IN ('blocked', 'delayed', 'ready', 'running',
                            'succeeded', 'failed', 'cancelled', 'expired', 'skipped')),
    end_reason          text CHECK (end_reason IN ('completed', 'attempts_exhausted',
                            'non_retryable', 'cancelled_by_user', 'cancelled_by_flow',
                            'cancelled_by_group', 'deadline_exceeded', 'dependency_impossible')),
    lane                text NOT NULL,
    priority            integer NOT NULL,
    caps                text[] NOT NULL DEFAULT '{}',
    payload             bytea NOT NULL,
    max_attempts        integer NOT NULL,
    -- The retry policy as ff-core serializes it (JSON); the backoff formula is computed by
    -- the client (RetryPolicy::delay_after), never in SQL.
    retry               text NOT NULL,
    delay_ms            bigint NOT NULL DEFAULT 0,
    attempt_timeout_ms  bigint,
    deadline_at         bigint,
    created_at          bigint NOT NULL,
    -- lifecycle
    epoch               bigint NOT NULL DEFAULT 0,
    attempt             integer NOT NULL DEFAULT 0,
    ready_seq           bigint,
    available_at        bigint,
    lease_id            uuid,
    worker              text,
    lease_expires_at    bigint,
    attempt_started_at  bigint,
    attempt_deadline_at bigint,
    progress            bytea,
    result              bytea,
    finished_at         bigint,
    history             jsonb,
    -- What the worker's `fail` of the latest attempt decided: the retry time, or -1 for
    -- failed for good; a repeated `fail` with the same fence answers the same.
    fail_disposition    bigint,
    -- flow membership
    flow_id             uuid,
    node_key            text,
    member_no           integer,
    out_degree          integer NOT NULL DEFAULT 0,
    has_inputs          boolean NOT NULL DEFAULT false,
    -- dependency group (members with incoming edges): policy, how many satisfied edges it
    -- needs, applied-edge counters and the verdict, decided once.
    grp_policy          text CHECK (grp_policy IN ('all_of', 'any_of', 'quorum')),
    grp_need            integer,
    grp_cancel_remaining boolean,
    grp_incoming        integer NOT NULL DEFAULT 0,
    grp_sat             integer NOT NULL DEFAULT 0,
    grp_unsat           integer NOT NULL DEFAULT 0,
    grp_verdict         text CHECK (grp_verdict IN ('pending', 'satisfied', 'impossible')),
    -- lease_id / lease_expires_at keep the latest attempt's lease after it ends (a repeated
    -- terminal call is recognised by it); only a running execution must have one.
    CHECK (state <> 'running' OR (lease_id IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK ((state IN ('succeeded', 'failed', 'cancelled', 'expired', 'skipped'))
           = (end_reason IS NOT NULL AND finished_at IS NOT NULL)),
    CHECK ((flow_id IS NULL) = (node_key IS NULL))
);

-- The claim path: ready work of a lane, priority first, then FIFO.
CREATE INDEX ff_exec_claim ON ff_execution (lane, priority DESC, ready_seq)
    WHERE state = 'ready';
-- Delayed work, per partition, for the promoter.
CREATE INDEX ff_exec_delayed ON ff_execution (part, available_at, id)
    WHERE state = 'delayed';
-- Each deadline, per partition, in due order.
CREATE INDEX ff_exec_lease_expiry ON ff_execution (part, lease_expires_at, id)
    WHERE state = 'running';
CREATE INDEX ff_exec_attempt_timeout ON ff_execution (part, attempt_deadline_at, id)
    WHERE state = 'running' AND attempt_deadline_at IS NOT NULL;
CREATE INDEX ff_exec_deadline ON ff_execution (part, deadline_at, id)
    WHERE deadline_at IS NOT NULL AND state IN ('blocked', 'delayed', 'ready', 'running');
-- Retention of standalone executions (members go with their flow).
CREATE INDEX ff_exec_finished ON ff_execution (part, finished_at, id)
    WHERE flow_id IS NULL AND finished_at IS NOT NULL;
-- Listing by partition and state.
CREATE INDEX ff_exec_list ON ff_execution (part, state, id);
-- Members by key (edges are given by key; describe_flow lists members).
CREATE UNIQUE INDEX ff_exec_member ON ff_execution (flow_id, node_key)
    WHERE flow_id IS NOT NULL;

CREATE TABLE ff_edge (
    from_id     uuid NOT NULL,
    to_id       uuid NOT NULL,
    flow_id     uuid NOT NULL,
    edge_no     integer NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('success', 'always')),
    pass_result boolean NOT NULL,
    -- Set by the transaction that applies the upstream's outcome to the downstream group:
    -- what makes applying an edge idempotent.
    applied     boolean NOT NULL DEFAULT false,
    -- Edge numbers are unique per flow, so per upstream too; this key is also the order in
    -- which an upstream's edges are applied (creation order, as the reference backend does).
    PRIMARY KEY (from_id, edge_no)
);
CREATE INDEX ff_edge_to ON ff_edge (to_id);
CREATE INDEX ff_edge_flow ON ff_edge (flow_id, edge_no);

-- Completion outbox: a flow member's terminal transition whose outgoing edges are not all
-- applied yet (written in the transition's transaction, retired with its last edge).
CREATE TABLE ff_completion (
    exec_id     uuid PRIMARY KEY,
    part        smallint NOT NULL,
    flow_id     uuid NOT NULL,
    outcome     text NOT NULL,
    recorded_at bigint NOT NULL
);
CREATE INDEX ff_completion_due ON ff_completion (part, recorded_at, exec_id);

-- Flows whose cancel still has members to cancel (large flows): worked by the
-- cancel-backlog scanner; members of such a flow are never claimed.
CREATE TABLE ff_cancel_backlog (
    flow_id      uuid PRIMARY KEY,
    part         smallint NOT NULL,
    mode         text NOT NULL CHECK (mode IN ('cancel_all', 'cancel_pending')),
    requested_at bigint NOT NULL
);
CREATE INDEX ff_cancel_backlog_due ON ff_cancel_backlog (part, requested_at, flow_id);

-- Engine instances and partition ownership leases.
CREATE TABLE ff_instance (
    id         text PRIMARY KEY,
    expires_at bigint NOT NULL
);
CREATE TABLE ff_partition_owner (
    part       smallint PRIMARY KEY,
    owner      text NOT NULL,
    expires_at bigint NOT NULL
);
