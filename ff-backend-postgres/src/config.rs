//! How to reach the database and how the backend behaves there.

use std::time::Duration;

use ff_core::{EngineError, PartitionConfig};

/// The schema used when [`PostgresConfig::schema`] is not set.
pub const DEFAULT_SCHEMA: &str = "flowfabric";

/// Configuration of a [`crate::PostgresBackend`].
///
/// Every connection of the pool (and the hint listener) starts with `search_path` set to the
/// schema, so each deployment — or each conformance case — lives in its own schema and every
/// statement and server-side function is written unqualified. That keeps one statement text
/// per operation (one prepared statement per connection, whatever the schema) and lets the
/// functions installed by the migrations find their tables without qualification.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// A libpq-style connection string or `postgres://` URL.
    pub url: String,
    /// The schema holding FlowFabric's tables; `None` means [`DEFAULT_SCHEMA`]. Lower-case
    /// ASCII letters, digits and `_`, starting with a letter or `_`, at most 48 bytes.
    pub schema: Option<String>,
    /// The partition count: stored on first start, checked on every start.
    pub partitions: PartitionConfig,
    /// Most pooled connections.
    pub pool_size: usize,
    /// How long a call waits for a pooled connection before failing with a retryable
    /// transport error.
    pub pool_wait_timeout: Duration,
    /// Whether the backend sends `NOTIFY` wake-ups and `subscribe_hints` works. On by
    /// default.
    ///
    /// Without hints, workers and the engine poll: a worker on an idle lane backs off up to
    /// 500 ms between claims, so work made ready on an idle lane waits for the next poll —
    /// measured with the engine's `Worker` on a cross-lane two-node flow: p50 136 ms, p99
    /// 470 ms, against 1.2 ms and 5 ms with hints. With hints, what a `NOTIFY` costs (it
    /// takes a server-wide lock its transaction holds until it commits, so notifying commits
    /// go one at a time) is kept off the busy paths: WorkReady is sent only when a lane goes
    /// from no ready work to some, FlowFinished of `complete` is sent after the commit,
    /// batched; see the crate docs. Measured cost with hints (this crate's bench, same run):
    /// flat throughput unchanged, 10-node chains within a few percent. Turn them off to spend
    /// nothing on wake-ups, e.g. when every lane is always busy.
    pub hints: bool,
    /// Terminal transitions apply the cascade inline up to this out-degree (see
    /// [`ff_core::Capabilities::inline_cascade_limit`]).
    pub inline_cascade_limit: u32,
    /// Edges applied per `cascade_completion` call (one transaction) for large fan-outs.
    pub cascade_chunk: u32,
    /// Members cancelled per `cancel_flow` transaction; the rest go to the cancel backlog.
    pub cancel_chunk: u32,
    /// Tests only: the backend clock stands still at its reading at connect and moves only
    /// through `advance_clock` (the conformance suite's model test compares exact times).
    pub frozen_clock: bool,
    /// How often a call is retried after a serialization failure, deadlock or lost
    /// connection before the error is returned.
    pub retries: u32,
}

impl PostgresConfig {
    /// A config with defaults: schema `flowfabric`, 256 partitions, 16 connections, hints on,
    /// inline cascade up to 16 edges, chunks of 256 edges.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: None,
            partitions: PartitionConfig::default(),
            pool_size: 16,
            pool_wait_timeout: Duration::from_secs(10),
            hints: true,
            inline_cascade_limit: 16,
            cascade_chunk: 256,
            cancel_chunk: 10_000,
            frozen_clock: false,
            retries: 8,
        }
    }

    /// Sets the schema.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Sets the partition config.
    pub fn with_partitions(mut self, partitions: PartitionConfig) -> Self {
        self.partitions = partitions;
        self
    }

    /// Sets the pool size.
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Turns `NOTIFY` hints on or off.
    pub fn with_hints(mut self, on: bool) -> Self {
        self.hints = on;
        self
    }

    /// Sets the inline cascade limit (0 = every completion goes through the outbox).
    pub fn with_inline_cascade_limit(mut self, limit: u32) -> Self {
        self.inline_cascade_limit = limit;
        self
    }

    /// Sets the number of edges applied per `cascade_completion` call.
    pub fn with_cascade_chunk(mut self, chunk: u32) -> Self {
        self.cascade_chunk = chunk;
        self
    }

    /// Sets the number of members cancelled per `cancel_flow` transaction.
    pub fn with_cancel_chunk(mut self, chunk: u32) -> Self {
        self.cancel_chunk = chunk;
        self
    }

    /// Freezes the backend clock (tests only; see [`PostgresConfig::frozen_clock`]).
    pub fn with_frozen_clock(mut self, on: bool) -> Self {
        self.frozen_clock = on;
        self
    }

    /// The schema name in effect.
    pub fn schema_name(&self) -> &str {
        self.schema.as_deref().unwrap_or(DEFAULT_SCHEMA)
    }

    /// Checks the settings; every problem is a [`EngineError::Config`].
    pub fn validate(&self) -> Result<(), EngineError> {
        check_schema_name(self.schema_name())?;
        if self.partitions.partitions == 0 || self.partitions.partitions > i16::MAX as u16 {
            return Err(EngineError::Config(format!(
                "{} partitions: the postgres backend supports 1..={}",
                self.partitions.partitions,
                i16::MAX
            )));
        }
        if self.pool_size == 0 {
            return Err(EngineError::Config("pool_size must be at least 1".into()));
        }
        if self.cascade_chunk == 0 || self.cancel_chunk == 0 {
            return Err(EngineError::Config(
                "cascade_chunk and cancel_chunk must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Checks that `schema` is a plain lower-case identifier (it is spliced into `SET
/// search_path`, `CREATE SCHEMA` and the `LISTEN` channel name).
pub fn check_schema_name(schema: &str) -> Result<(), EngineError> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || schema.len() > 48 {
        return Err(EngineError::Config(format!(
            "schema {schema:?} must be 1 to 48 lower-case ASCII letters, digits or _, \
             not starting with a digit"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        assert!(check_schema_name("flowfabric").is_ok());
        assert!(check_schema_name("ff_case_12").is_ok());
        for bad in [
            "",
            "1abc",
            "Upper",
            "semi;colon",
            "quote\"",
            &"x".repeat(49),
        ] {
            assert!(
                matches!(check_schema_name(bad), Err(EngineError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn defaults_validate() {
        assert!(
            PostgresConfig::new("postgres://localhost")
                .validate()
                .is_ok()
        );
        let zero_pool = PostgresConfig::new("postgres://localhost").with_pool_size(0);
        assert!(zero_pool.validate().is_err());
    }
}
