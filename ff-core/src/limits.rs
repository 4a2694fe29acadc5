//! Documented input limits. Every backend enforces the same ones (through the validators in
//! this crate) before it writes anything, so an input accepted by one backend is accepted by
//! all of them.

use std::time::Duration;

use crate::error::EngineError;

/// Largest execution payload, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Largest result a worker may complete with, in bytes.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;
/// Largest progress blob, in bytes.
pub const MAX_PROGRESS_BYTES: usize = 64 * 1024;
/// Longest failure message kept, in bytes. Longer messages are truncated (at a character
/// boundary) rather than rejected, so that a worker's failure report always lands.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4 * 1024;
/// Longest lane name, in bytes.
pub const MAX_LANE_BYTES: usize = 128;
/// Longest capability name, in bytes.
pub const MAX_CAPABILITY_BYTES: usize = 64;
/// Most capabilities an execution may require or a worker may offer.
pub const MAX_CAPABILITIES: usize = 64;
/// Longest node key, in bytes.
pub const MAX_NODE_KEY_BYTES: usize = 256;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
/// Longest worker or engine-instance id, in bytes.
pub const MAX_WORKER_ID_BYTES: usize = 128;
/// Most nodes one `create_flow` or `add_nodes` call may carry.
pub const MAX_NODES_PER_CALL: usize = 20_000;
/// Most edges one `create_flow` or `add_nodes` call may carry.
pub const MAX_EDGES_PER_CALL: usize = 100_000;
/// Most executions one claim may lease.
pub const MAX_CLAIM_BATCH: u32 = 1_000;
/// Most attempts a retry policy may allow.
pub const MAX_ATTEMPTS: u32 = 1_000;
/// Lowest priority.
pub const MIN_PRIORITY: i32 = -1_000;
/// Highest priority. The range keeps a Valkey sorted-set score (priority, then a sequence)
/// inside a double's exact integer range.
pub const MAX_PRIORITY: i32 = 1_000;
/// Longest delay, timeout, deadline, backoff or lease TTL: anything longer is a bug.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);
/// Shortest lease TTL.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(1);
/// Most items one scanner call may process.
pub const MAX_SCAN_BATCH: u32 = 10_000;
/// Most entries one list call may return.
pub const MAX_PAGE_SIZE: u32 = 10_000;

/// Checks that a count (batch size, page size) is within `1..=max`; the error names `field`.
pub fn check_count(field: &str, value: u32, max: u32) -> Result<(), EngineError> {
    if value == 0 || value > max {
        return Err(EngineError::validation(
            field,
            format!("{value} is outside 1..={max}"),
        ));
    }
    Ok(())
}

/// Checks that a blob (payload, result, progress) of `len` bytes fits `max`; the error names
/// `field`.
pub fn check_size(field: &str, len: usize, max: usize) -> Result<(), EngineError> {
    if len > max {
        return Err(EngineError::validation(
            field,
            format!("{len} bytes is larger than the limit of {max}"),
        ));
    }
    Ok(())
}

/// Truncates `message` to at most [`MAX_ERROR_MESSAGE_BYTES`] at a character boundary.
pub fn truncate_error_message(message: &str) -> &str {
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_ERROR_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        let long = "é".repeat(MAX_ERROR_MESSAGE_BYTES);
        let cut = truncate_error_message(&long);
        assert!(cut.len() <= MAX_ERROR_MESSAGE_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate_error_message("short"), "short");
    }

    #[test]
    fn priority_scores_stay_exact_in_a_double() {
        // 2001 priority levels × 2^42 sequence values < 2^53.
        let levels = u64::try_from(MAX_PRIORITY - MIN_PRIORITY + 1).unwrap();
        assert!(levels.checked_mul(1 << 42).unwrap() < (1 << 53));
    }
}
