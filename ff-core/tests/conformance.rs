//! The backend conformance suite on the in-memory backend, in both cascade modes: inline
//! (small fan-outs cascade inside the terminal transition) and deferred (every completion
//! waits for `cascade_completion`), so the two paths are proven equivalent.

use std::process::ExitCode;
use std::sync::Arc;

use ff_core::conformance::{self, BackendFactory};
use ff_core::memory::MemoryBackend;
use ff_core::{EngineBackend, EngineError, Timestamp};

/// A frozen clock at a fixed, realistic time: time moves only through `advance_clock`.
const START: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// In-memory backends with a given inline cascade limit; each case gets its own backend, so
/// the namespace needs no prefix.
struct Memory {
    label: &'static str,
    inline_cascade_limit: u32,
}

#[async_trait::async_trait]
impl BackendFactory for Memory {
    fn label(&self) -> String {
        self.label.to_string()
    }

    async fn create(&self, _case: &str) -> Result<Arc<dyn EngineBackend>, EngineError> {
        Ok(Arc::new(
            MemoryBackend::builder()
                .inline_cascade_limit(self.inline_cascade_limit)
                .frozen_clock(START)
                .build(),
        ))
    }
}

fn main() -> ExitCode {
    conformance::main(vec![
        Arc::new(Memory {
            label: "memory-inline",
            inline_cascade_limit: 64,
        }),
        Arc::new(Memory {
            label: "memory-deferred",
            inline_cascade_limit: 0,
        }),
    ])
}
