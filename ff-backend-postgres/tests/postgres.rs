//! Backend-specific tests against a real PostgreSQL server (`FF_POSTGRES_URL`): migrations,
//! the main paths, reconnection after `pg_terminate_backend`, a drainer killed with SIGKILL
//! in the middle of a chunked cascade, and two drainers on one outbox.
//!
//! Without `FF_POSTGRES_URL` every test is reported ignored (failed with
//! `FF_REQUIRE_SERVERS=1`). The binary doubles as the "engine" child process of the SIGKILL
//! test: with `FF_PG_DRAIN_CHILD=<schema>` it drains that schema's outbox and never returns.

mod support;

use std::process::ExitCode;

fn main() -> ExitCode {
    if let Ok(schema) = std::env::var(support::DRAIN_CHILD_ENV) {
        return support::drain_child(&schema);
    }
    support::run()
}
