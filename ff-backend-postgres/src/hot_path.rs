//! The hottest calls as plain statements, prepared once per connection, instead of calls of
//! the plpgsql functions: `claim` (`ff_claim`'s statement), and `complete` of a standalone
//! execution, alone or with the claim of the worker's next executions.
//!
//! A function call costs its interpreter, a nested executor for each statement inside it and
//! the materialisation of its result set. For a standalone `complete`, which is one UPDATE,
//! that was a fifth of the call: pgbench, one client, commits not waiting for the disk, 157 µs
//! per `ff_complete` against 129 µs for the statement alone (round trip included). In `cargo xtask bench`'s flat workload,
//! before and after interleaved on one server: 157–162 against 133–139 µs of server CPU per
//! execution, 9.6–9.8k against 10.7–11.2k executions/s.
//!
//! Flow members stay with `ff_complete`, which counts them in their flow and cascades. A
//! single statement doing that for a chain's hop was measured too and lost: PostgreSQL
//! initialises every part of a statement's plan on each execution, used or not (each UPDATE
//! of `ff_execution` opens its eight indexes), and the function runs only the statements a
//! call needs.
//!
//! `ff_complete` stays the general implementation: when the statement matches nothing (the
//! fence does not hold, the call is repeated, or the id is a member's) the backend calls it,
//! and it decides the call in full. The claim statements are `ff_claim`'s, copied; a unit
//! test keeps the copies equal.

use std::sync::LazyLock;

/// `ff_claim`'s pick, with its parameters as placeholders (`p_lane`, `p_caps`, `p_max`,
/// `p_now`).
const CLAIM_PICK: &str = "SELECT c.id FROM ff_execution c
        WHERE c.state = 'ready' AND c.lane = p_lane AND c.caps <@ p_caps
          AND (c.deadline_at IS NULL OR c.deadline_at > p_now)
          AND NOT EXISTS (SELECT 1 FROM ff_cancel_backlog b WHERE b.flow_id = c.flow_id)
        ORDER BY c.priority DESC, c.ready_seq
        LIMIT p_max
        FOR UPDATE OF c SKIP LOCKED";

/// `ff_claim`'s lease of what it picked (`p_worker`, `p_ttl`, `p_now`).
const CLAIM_LEASE: &str = "UPDATE ff_execution x
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
        x.part";

/// The statement's clock: `ff_now` read once, by the `now` CTE every statement here starts
/// with.
const NOW_CTE: &str = "WITH now AS MATERIALIZED (SELECT ff_now($6) AS t)";

/// The parameters the claim placeholders are bound to.
struct ClaimParams {
    lane: &'static str,
    caps: &'static str,
    max: &'static str,
    ttl: &'static str,
    worker: &'static str,
}

/// The `pick` and `claimed` CTEs of a claim; `gate`, if any, is a further condition of the
/// pick (that the completion it follows took effect).
fn claim_ctes(p: &ClaimParams, gate: Option<&str>) -> String {
    let pick = match gate {
        Some(gate) => CLAIM_PICK.replace(
            "ORDER BY c.priority",
            &format!("AND {gate}\n        ORDER BY c.priority"),
        ),
        None => CLAIM_PICK.to_string(),
    };
    let bind = |sql: &str| {
        sql.replace("p_lane", p.lane)
            .replace("p_caps", p.caps)
            .replace("p_max", p.max)
            .replace("p_ttl", p.ttl)
            .replace("p_worker", p.worker)
            .replace("p_now", "(SELECT t FROM now)")
    };
    format!(
        "pick AS ({}),\nclaimed AS ({})",
        bind(&pick),
        bind(CLAIM_LEASE)
    )
}

/// The completion of a standalone execution, as `ff_complete` does it, with its `ok` reply
/// row (`ff_reply`'s columns). No row: the execution is a flow member, or its fence does not
/// hold.
const COMPLETE: &str = "done AS (
    UPDATE ff_execution x
    SET state = 'succeeded', end_reason = 'completed', result = $5,
        finished_at = (SELECT t FROM now), attempt_deadline_at = NULL
    WHERE x.id = $1 AND x.part = $2 AND x.epoch = $4 AND x.lease_id = $3 AND x.state = $7::text
      AND x.lease_expires_at > (SELECT t FROM now) AND x.flow_id IS NULL
    RETURNING x.epoch, x.attempt
)";
const COMPLETED: &str = "SELECT 'ok'::text, $1::uuid, 'succeeded'::text, d.epoch, d.attempt,
        'completed'::text, NULL::uuid, NULL::text, NULL::integer, NULL::bytea, NULL::uuid,
        NULL::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::text[], NULL::uuid[],
        NULL::bytea[], NULL::integer, NULL::text, NULL::bigint, NULL::smallint
    FROM done d";

/// `claim`: `$1` lane, `$2` capabilities, `$3` most to claim, `$4` lease TTL, `$5` worker,
/// `$6` clock offset. Answers `ff_reply` rows, as `ff_claim`.
pub(crate) static CLAIM: LazyLock<String> = LazyLock::new(|| {
    let params = ClaimParams {
        lane: "$1",
        caps: "$2",
        max: "$3::integer",
        ttl: "$4",
        worker: "$5",
    };
    format!(
        "{NOW_CTE},\n{}\nSELECT * FROM claimed",
        claim_ctes(&params, None)
    )
});

/// `complete` of a standalone execution: `$1` id, `$2` partition, `$3` lease, `$4` epoch, `$5`
/// result, `$6` clock offset, `$7` `'running'` (a parameter, not a literal: the generic plan
/// then probes the primary key rather than the partial lease-expiry index).
pub(crate) static COMPLETE_STANDALONE: LazyLock<String> =
    LazyLock::new(|| format!("{NOW_CTE},\n{COMPLETE}\n{COMPLETED}"));

/// [`COMPLETE_STANDALONE`], then the claim of the worker's next executions when it took
/// effect: `$8` lane, `$9` capabilities, `$10` most to claim, `$11` lease TTL, `$12` worker.
/// A statement of its own: the claim's part of the plan is initialised on every execution,
/// used or not, which the completions that claim nothing should not pay.
pub(crate) static COMPLETE_STANDALONE_CLAIMING: LazyLock<String> = LazyLock::new(|| {
    let params = ClaimParams {
        lane: "$8",
        caps: "$9",
        max: "$10::integer",
        ttl: "$11",
        worker: "$12",
    };
    format!(
        "{NOW_CTE},\n{COMPLETE},\n{}\n{COMPLETED}\nUNION ALL\nSELECT * FROM claimed",
        claim_ctes(&params, Some("EXISTS (SELECT 1 FROM done)"))
    )
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::tests::{latest, normalize};

    #[test]
    fn the_claim_is_ff_claims_statement() {
        let ff_claim = normalize(latest("ff_claim"));
        assert!(
            ff_claim.contains(&normalize(CLAIM_PICK)),
            "the pick differs"
        );
        assert!(
            ff_claim.contains(&normalize(CLAIM_LEASE)),
            "the lease differs"
        );
    }

    #[test]
    fn the_completion_is_ff_completes() {
        let ff_complete = normalize(latest("ff_complete"));
        let set = normalize(
            "SET state = 'succeeded', end_reason = 'completed', result = p_result,
             finished_at = v_now, attempt_deadline_at = NULL",
        );
        assert!(
            ff_complete.contains(&set),
            "ff_complete's transition changed"
        );
        let ours = normalize(COMPLETE)
            .replace("$5", "p_result")
            .replace("(SELECT t FROM now)", "v_now");
        assert!(
            ours.contains(&set),
            "the completion differs from ff_complete's"
        );
    }

    #[test]
    fn every_placeholder_is_bound() {
        for sql in [
            &*CLAIM,
            &*COMPLETE_STANDALONE,
            &*COMPLETE_STANDALONE_CLAIMING,
        ] {
            for placeholder in ["p_lane", "p_caps", "p_max", "p_ttl", "p_worker", "p_now"] {
                assert!(!sql.contains(placeholder), "{placeholder} left in {sql}");
            }
        }
    }
}
