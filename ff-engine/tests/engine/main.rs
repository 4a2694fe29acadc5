//! The engine and the worker on the real in-memory backend: failover, ownership, fault
//! isolation, a large fan-out, graceful shutdown.

mod common;
mod fan_out;
mod faulty;
mod idle;
mod isolation;
mod ownership;
mod shutdown;
mod worker_failover;
mod worker_outcomes;
