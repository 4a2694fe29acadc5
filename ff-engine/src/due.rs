//! What is due where: one `due_summary` call per refresh, shared by every scanner, so that
//! scanners call `scan` only on partitions with something due and an idle engine costs a few
//! backend calls per second instead of one per partition and scanner.
//!
//! The summary is a hint like any other: a partition missing from it (just acquired) counts
//! as due, and when the call fails the scanners fall back to visiting every partition.

use std::collections::HashMap;
use std::sync::Arc;

use ff_core::{Partition, PartitionDue, Timestamp};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::call::call;
use crate::engine::Shared;
use crate::scanner::ScanJob;

/// The last summary, shared by the scanners of one engine.
#[derive(Debug, Default)]
pub(crate) struct DueCache {
    last: Mutex<Option<Arc<DueView>>>,
}

/// One summary: the backend clock when it was taken, and each partition's due times.
#[derive(Debug)]
pub(crate) struct DueView {
    now: Timestamp,
    fetched: Instant,
    partitions: HashMap<Partition, PartitionDue>,
}

impl DueView {
    /// Whether `job` may have work on `partition` now. Unknown partitions may.
    pub(crate) fn is_due(&self, partition: Partition, job: ScanJob) -> bool {
        let Some(due) = self.partitions.get(&partition) else {
            return true;
        };
        let now = self.now.saturating_add(self.fetched.elapsed());
        match job {
            ScanJob::Backend(kind) => due.next_for(&kind).is_some_and(|at| at <= now),
            ScanJob::CompletionSweep => due.completions.is_some(),
        }
    }
}

impl DueCache {
    /// A summary of the owned partitions no older than the refresh interval, or `None` when
    /// the backend could not give one (every partition then counts as due).
    pub(crate) async fn view(&self, shared: &Shared) -> Option<Arc<DueView>> {
        let mut last = self.last.lock().await;
        if let Some(view) = last.as_ref()
            && view.fetched.elapsed() < shared.config.due_refresh_interval()
        {
            return Some(Arc::clone(view));
        }
        let owned: Vec<Partition> = shared.owned().iter().copied().collect();
        if owned.is_empty() {
            return None;
        }
        let fetched = Instant::now();
        match call("due_summary", shared.backend.due_summary(&owned)).await {
            Ok(summary) => {
                let view = Arc::new(DueView {
                    now: summary.now,
                    fetched,
                    partitions: summary
                        .partitions
                        .into_iter()
                        .map(|due| (due.partition, due))
                        .collect(),
                });
                *last = Some(Arc::clone(&view));
                Some(view)
            }
            Err(error) => {
                tracing::warn!(%error, "due_summary failed; scanning every owned partition");
                *last = None;
                None
            }
        }
    }
}
