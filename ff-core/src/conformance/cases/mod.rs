//! Every case of the suite, by behaviour area.

mod bad_input;
mod cancel;
mod capabilities;
mod cascade;
mod claim;
mod dynamic;
mod fencing;
mod flow;
mod ownership;
mod reads;
mod retention;
mod retry;
mod time;

use super::case::{Case, Feature, Requirement};
use super::model_test;

use Requirement::{Always, Lacks, Needs};

/// Registers `$body` (an `async fn(TestContext) -> CaseResult`) under `$name`.
macro_rules! case {
    ($name:literal, $requirement:expr, $body:path) => {
        Case {
            name: $name,
            requirement: $requirement,
            run: |ctx| Box::pin($body(ctx)),
        }
    };
}

/// Every case of the suite, in a stable order. A backend passes the suite when each of them
/// passes (or is ignored for a capability it does not offer).
pub fn cases() -> Vec<Case> {
    vec![
        case!("claim::priority_then_age", Always, claim::priority_then_age),
        case!(
            "claim::priority_order_within_a_flow",
            Always,
            claim::priority_order_within_a_flow
        ),
        case!("claim::lanes_do_not_mix", Always, claim::lanes_do_not_mix),
        case!(
            "claim::capability_subset_matching",
            Always,
            claim::capability_subset_matching
        ),
        case!("claim::batch_claim", Always, claim::batch_claim),
        case!(
            "claim::claim_describes_the_lease",
            Always,
            claim::claim_describes_the_lease
        ),
        case!(
            "claim::claims_bump_the_epoch",
            Always,
            claim::claims_bump_the_epoch
        ),
        case!(
            "claim::claim_next_hands_back_next_work",
            Needs(Feature::ClaimNext),
            claim::claim_next_hands_back_next_work
        ),
        case!(
            "fencing::stale_epoch_is_rejected",
            Always,
            fencing::stale_epoch_is_rejected
        ),
        case!(
            "fencing::wrong_lease_id_is_mismatch",
            Always,
            fencing::wrong_lease_id_is_mismatch
        ),
        case!(
            "fencing::expired_lease_cannot_complete",
            Always,
            fencing::expired_lease_cannot_complete
        ),
        case!(
            "fencing::renew_extends_the_lease",
            Always,
            fencing::renew_extends_the_lease
        ),
        case!(
            "fencing::complete_is_idempotent",
            Always,
            fencing::complete_is_idempotent
        ),
        case!(
            "fencing::fail_is_idempotent",
            Always,
            fencing::fail_is_idempotent
        ),
        case!(
            "fencing::other_terminal_call_is_not_active",
            Always,
            fencing::other_terminal_call_is_not_active
        ),
        case!(
            "retry::retry_with_backoff_then_fail",
            Always,
            retry::retry_with_backoff_then_fail
        ),
        case!(
            "retry::exponential_backoff_grows",
            Always,
            retry::exponential_backoff_grows
        ),
        case!(
            "retry::non_retryable_failure_is_final",
            Always,
            retry::non_retryable_failure_is_final
        ),
        case!(
            "retry::lease_expiry_retries_then_fails",
            Always,
            retry::lease_expiry_retries_then_fails
        ),
        case!("retry::attempt_timeout", Always, retry::attempt_timeout),
        case!(
            "time::deadline_expires_unfinished_work",
            Always,
            time::deadline_expires_unfinished_work
        ),
        case!(
            "time::deadline_expires_blocked_member",
            Always,
            time::deadline_expires_blocked_member
        ),
        case!(
            "time::delayed_not_claimable_before_its_time",
            Always,
            time::delayed_not_claimable_before_its_time
        ),
        case!(
            "time::idempotency_key_returns_same_execution",
            Always,
            time::idempotency_key_returns_same_execution
        ),
        case!(
            "flow::nodes_wait_for_dependencies",
            Always,
            flow::nodes_wait_for_dependencies
        ),
        case!(
            "flow::create_flow_is_idempotent",
            Always,
            flow::create_flow_is_idempotent
        ),
        case!(
            "flow::all_of_satisfied_and_impossible",
            Always,
            flow::all_of_satisfied_and_impossible
        ),
        case!(
            "flow::any_of_satisfied_and_impossible",
            Always,
            flow::any_of_satisfied_and_impossible
        ),
        case!(
            "flow::quorum_satisfied_and_impossible",
            Always,
            flow::quorum_satisfied_and_impossible
        ),
        case!(
            "flow::cancel_remaining_vs_let_run",
            Always,
            flow::cancel_remaining_vs_let_run
        ),
        case!("flow::always_edges", Always, flow::always_edges),
        case!("flow::skip_propagates", Always, flow::skip_propagates),
        case!("flow::data_passing", Always, flow::data_passing),
        case!(
            "flow::flow_state_and_counters",
            Always,
            flow::flow_state_and_counters
        ),
        case!(
            "dynamic::add_nodes_fan_out",
            Always,
            dynamic::add_nodes_fan_out
        ),
        case!(
            "dynamic::add_nodes_rejects_bad_patches",
            Always,
            dynamic::add_nodes_rejects_bad_patches
        ),
        case!(
            "cascade::pending_completion_is_finished_later",
            Always,
            cascade::pending_completion_is_finished_later
        ),
        case!(
            "cascade::unknown_completion_is_a_no_op",
            Always,
            cascade::unknown_completion_is_a_no_op
        ),
        case!(
            "cascade::add_nodes_from_pending_upstream",
            Always,
            cascade::add_nodes_from_pending_upstream
        ),
        case!("cancel::cancel_execution", Always, cancel::cancel_execution),
        case!(
            "cancel::cancel_blocked_member_cascades",
            Always,
            cancel::cancel_blocked_member_cascades
        ),
        case!(
            "cancel::cancel_flow_cancel_all",
            Always,
            cancel::cancel_flow_cancel_all
        ),
        case!(
            "cancel::cancel_flow_cancel_pending",
            Always,
            cancel::cancel_flow_cancel_pending
        ),
        case!(
            "retention::removes_only_old_terminal_work",
            Always,
            retention::retention_removes_only_old_terminal_work
        ),
        case!(
            "reads::change_priority_reorders",
            Always,
            reads::change_priority_reorders
        ),
        case!(
            "reads::progress_is_visible",
            Always,
            reads::progress_is_visible
        ),
        case!(
            "reads::describe_attempt_history",
            Always,
            reads::describe_attempt_history
        ),
        case!(
            "reads::list_pages_with_cursor",
            Always,
            reads::list_pages_with_cursor
        ),
        case!(
            "reads::scan_cursor_continues",
            Always,
            reads::scan_cursor_continues
        ),
        case!(
            "reads::due_summary_bounds",
            Always,
            reads::due_summary_bounds
        ),
        case!(
            "ownership::partition_ownership",
            Always,
            ownership::partition_ownership
        ),
        case!(
            "ownership::instance_heartbeats",
            Always,
            ownership::instance_heartbeats
        ),
        case!(
            "bad_input::malformed_execution_ids",
            Always,
            bad_input::malformed_execution_ids
        ),
        case!(
            "bad_input::foreign_and_unknown_execution_ids",
            Always,
            bad_input::foreign_and_unknown_execution_ids
        ),
        case!("bad_input::unknown_flow", Always, bad_input::unknown_flow),
        case!(
            "bad_input::invalid_graphs",
            Always,
            bad_input::invalid_graphs
        ),
        case!("bad_input::invalid_specs", Always, bad_input::invalid_specs),
        case!(
            "bad_input::invalid_worker_calls",
            Always,
            bad_input::invalid_worker_calls
        ),
        case!(
            "bad_input::invalid_reads_and_controls",
            Always,
            bad_input::invalid_reads_and_controls
        ),
        case!("capabilities::health", Always, capabilities::health),
        case!(
            "capabilities::advance_clock_unavailable",
            Lacks(Feature::ClockControl),
            capabilities::advance_clock_unavailable
        ),
        case!(
            "capabilities::advance_clock_moves_the_clock",
            Needs(Feature::ClockControl),
            capabilities::advance_clock_moves_the_clock
        ),
        case!(
            "capabilities::subscribe_hints_unavailable",
            Lacks(Feature::Hints),
            capabilities::subscribe_hints_unavailable
        ),
        case!(
            "capabilities::hints_arrive",
            Needs(Feature::Hints),
            capabilities::hints_arrive
        ),
        case!(
            "capabilities::claim_next_unsupported_returns_nothing",
            Lacks(Feature::ClaimNext),
            capabilities::claim_next_unsupported_returns_nothing
        ),
        case!(
            "model::random_flows",
            Needs(Feature::ClockControl),
            model_test::random_flows
        ),
    ]
}
