//! Metric names and descriptions.
//!
//! The engine and the worker report through the [`metrics`] facade: nothing is recorded until
//! the application installs a recorder (Prometheus exporter, StatsD, ...), and then every
//! metric below appears under its name. Call [`describe_metrics`] once after installing the
//! recorder to attach units and help texts.
//!
//! Labels: `scanner` (scanner name), `op` (backend operation), `lane`, `outcome`, `task`.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Completion events retired by this instance's dispatch (counter).
pub const COMPLETIONS_DISPATCHED: &str = "ff_engine_completions_dispatched_total";
/// Edges applied by `cascade_completion` calls of this instance (counter).
pub const EDGES_APPLIED: &str = "ff_engine_edges_applied_total";
/// Time from a completion's `recorded_at` to its retirement by the dispatch loop, by the
/// backend clock (histogram, seconds). Completions applied inline never reach the loop.
pub const CASCADE_LAG: &str = "ff_engine_cascade_lag_seconds";
/// Items a scanner cycle processed (counter, label `scanner`).
pub const SCANNER_PROCESSED: &str = "ff_engine_scanner_processed_total";
/// Items or partitions a scanner cycle failed on (counter, label `scanner`).
pub const SCANNER_ERRORS: &str = "ff_engine_scanner_errors_total";
/// Due items left after the last cycle, summed over the partitions it visited (gauge, label
/// `scanner`).
pub const SCANNER_BACKLOG: &str = "ff_engine_scanner_backlog";
/// Duration of a scanner cycle (histogram, seconds, label `scanner`).
pub const SCANNER_CYCLE: &str = "ff_engine_scanner_cycle_seconds";
/// Backend calls that returned an error (counter, label `op`).
pub const BACKEND_ERRORS: &str = "ff_engine_backend_errors_total";
/// Backend calls that panicked (counter, label `op`).
pub const BACKEND_PANICS: &str = "ff_engine_backend_panics_total";
/// Supervised task restarts (counter, label `task`).
pub const TASK_RESTARTS: &str = "ff_engine_task_restarts_total";
/// Partitions this instance owns (gauge).
pub const OWNED_PARTITIONS: &str = "ff_engine_owned_partitions";
/// Executions a worker claimed (counter, label `lane`).
pub const WORKER_CLAIMS: &str = "ff_worker_claims_total";
/// Claim round trips a worker made, `claim` calls and `complete`/`fail` calls carrying
/// `claim_next` (counter, label `lane`).
pub const WORKER_CLAIM_CALLS: &str = "ff_worker_claim_calls_total";
/// Attempts a worker finished, by outcome: `succeeded`, `retry_scheduled`, `failed`,
/// `lease_lost` (counter, labels `lane`, `outcome`).
pub const WORKER_COMPLETIONS: &str = "ff_worker_completions_total";
/// Handler run time (histogram, seconds, label `lane`).
pub const WORKER_HANDLER_DURATION: &str = "ff_worker_handler_seconds";

/// Registers units and descriptions of every metric with the installed recorder.
pub fn describe_metrics() {
    describe_counter!(
        COMPLETIONS_DISPATCHED,
        Unit::Count,
        "Completion events retired by the dispatch loop"
    );
    describe_counter!(
        EDGES_APPLIED,
        Unit::Count,
        "Edges applied by cascade_completion"
    );
    describe_histogram!(
        CASCADE_LAG,
        Unit::Seconds,
        "Completion recorded -> retired by the dispatch loop (backend clock)"
    );
    describe_counter!(
        SCANNER_PROCESSED,
        Unit::Count,
        "Items processed by scanner cycles"
    );
    describe_counter!(
        SCANNER_ERRORS,
        Unit::Count,
        "Items or partitions scanner cycles failed on"
    );
    describe_gauge!(
        SCANNER_BACKLOG,
        Unit::Count,
        "Due items left after the last scanner cycle"
    );
    describe_histogram!(SCANNER_CYCLE, Unit::Seconds, "Scanner cycle duration");
    describe_counter!(BACKEND_ERRORS, Unit::Count, "Backend calls that failed");
    describe_counter!(BACKEND_PANICS, Unit::Count, "Backend calls that panicked");
    describe_counter!(TASK_RESTARTS, Unit::Count, "Supervised task restarts");
    describe_gauge!(
        OWNED_PARTITIONS,
        Unit::Count,
        "Partitions owned by this engine instance"
    );
    describe_counter!(WORKER_CLAIMS, Unit::Count, "Executions claimed by workers");
    describe_counter!(
        WORKER_CLAIM_CALLS,
        Unit::Count,
        "Claim round trips made by workers"
    );
    describe_counter!(
        WORKER_COMPLETIONS,
        Unit::Count,
        "Attempts finished by workers, by outcome"
    );
    describe_histogram!(
        WORKER_HANDLER_DURATION,
        Unit::Seconds,
        "Worker handler run time"
    );
}
