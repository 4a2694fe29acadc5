//! Scanners in memory: each due item of a partition's time index, in due order after a cursor.

use std::collections::BTreeSet;
use std::ops::Bound;

use crate::error::EngineError;
use crate::id::{ExecutionId, FlowId};
use crate::partition::Partition;
use crate::scan::{DueSummary, PartitionDue, ScanCursor, ScanKind, ScanReport, ScanRequest};
use crate::state::{AttemptOutcome, ExecutionState};
use crate::time::Timestamp;

use super::state::{RetentionItem, State};

/// An entry of a time index that can be named in a cursor and a skip list.
trait ScanItem: Ord + Copy {
    fn name(&self) -> String;
    fn parse(name: &str) -> Option<Self>;
}

impl ScanItem for ExecutionId {
    fn name(&self) -> String {
        self.to_string()
    }

    fn parse(name: &str) -> Option<Self> {
        name.parse().ok()
    }
}

impl ScanItem for RetentionItem {
    fn name(&self) -> String {
        match self {
            RetentionItem::Execution(id) => id.to_string(),
            RetentionItem::Flow(id) => id.to_string(),
        }
    }

    fn parse(name: &str) -> Option<Self> {
        name.parse::<ExecutionId>()
            .map(RetentionItem::Execution)
            .or_else(|_| name.parse::<FlowId>().map(RetentionItem::Flow))
            .ok()
    }
}

fn encode_cursor<T: ScanItem>(at: Timestamp, item: &T) -> ScanCursor {
    ScanCursor(format!("{}:{}", at.as_millis(), item.name()))
}

fn decode_cursor<T: ScanItem>(cursor: &ScanCursor) -> Result<(Timestamp, T), EngineError> {
    let bad = || EngineError::validation("after", format!("malformed scan cursor {:?}", cursor.0));
    let (at, item) = cursor.0.split_once(':').ok_or_else(bad)?;
    let at = at.parse::<u64>().map_err(|_| bad())?;
    Ok((Timestamp::from_millis(at), T::parse(item).ok_or_else(bad)?))
}

/// The due items (`at <= due`) after the cursor, minus the skip list, up to `limit`; and the
/// cursor to continue from when more are due behind them.
fn select<T: ScanItem>(
    index: &BTreeSet<(Timestamp, T)>,
    request: &ScanRequest,
    due: Timestamp,
) -> Result<(Vec<T>, Option<ScanCursor>), EngineError> {
    let start = match &request.after {
        Some(cursor) => Bound::Excluded(decode_cursor::<T>(cursor)?),
        None => Bound::Unbounded,
    };
    let mut picked = Vec::new();
    let mut last_visited = None;
    let mut more = false;
    for (at, item) in index.range((start, Bound::Unbounded)) {
        if *at > due {
            break;
        }
        if picked.len() as u32 >= request.limit {
            more = true;
            break;
        }
        last_visited = Some((*at, *item));
        if request.skip.contains(&item.name()) {
            continue;
        }
        picked.push(*item);
    }
    let next = match (more, last_visited) {
        (true, Some((at, item))) => Some(encode_cursor(at, &item)),
        _ => None,
    };
    Ok((picked, next))
}

fn count_due<T: Ord>(index: &BTreeSet<(Timestamp, T)>, due: Timestamp) -> u64 {
    index.iter().take_while(|(at, _)| *at <= due).count() as u64
}

impl State {
    pub(super) fn scan(
        &mut self,
        request: &ScanRequest,
        now: Timestamp,
        random: &mut dyn FnMut() -> f64,
    ) -> Result<ScanReport, EngineError> {
        request.validate()?;
        self.config.check(request.partition)?;
        let partition = request.partition;
        let report = match request.kind {
            ScanKind::LeaseExpiry | ScanKind::AttemptTimeout => {
                let lease_expiry = request.kind == ScanKind::LeaseExpiry;
                let set = if lease_expiry {
                    &self.partition(partition).leases
                } else {
                    &self.partition(partition).timeouts
                };
                let (items, next) = select(set, request, now)?;
                let outcome = if lease_expiry {
                    AttemptOutcome::LeaseExpired
                } else {
                    AttemptOutcome::TimedOut
                };
                for id in &items {
                    if self.known(id).state == ExecutionState::Running {
                        self.end_attempt(id, outcome, None, now);
                        self.known_mut(id).epoch += 1;
                        self.after_failed_attempt(id, true, now, random());
                    }
                }
                let set = if lease_expiry {
                    &self.partition(partition).leases
                } else {
                    &self.partition(partition).timeouts
                };
                report(items.len(), next, count_due(set, now))
            }
            ScanKind::DelayedPromotion => {
                let (items, next) = select(&self.partition(partition).delayed, request, now)?;
                for id in &items {
                    self.promote(id);
                }
                report(
                    items.len(),
                    next,
                    count_due(&self.partition(partition).delayed, now),
                )
            }
            ScanKind::ExecutionDeadline => {
                let (items, next) = select(&self.partition(partition).deadlines, request, now)?;
                for id in &items {
                    if !self.known(id).state.is_terminal() {
                        self.expire(id, now);
                    }
                }
                report(
                    items.len(),
                    next,
                    count_due(&self.partition(partition).deadlines, now),
                )
            }
            ScanKind::CancelBacklog => report(0, None, 0),
            ScanKind::Retention { older_than } => {
                let horizon = now.saturating_sub(older_than);
                let (items, next) = select(&self.partition(partition).terminal, request, horizon)?;
                for item in &items {
                    self.remove(item);
                }
                report(
                    items.len(),
                    next,
                    count_due(&self.partition(partition).terminal, horizon),
                )
            }
        };
        self.drain_inline(now);
        Ok(report)
    }

    pub(super) fn due_summary(
        &self,
        partitions: &[Partition],
        now: Timestamp,
    ) -> Result<DueSummary, EngineError> {
        for partition in partitions {
            self.config.check(*partition)?;
        }
        let head = |set: &BTreeSet<(Timestamp, ExecutionId)>| set.first().map(|(at, _)| *at);
        let partitions = partitions
            .iter()
            .map(|&partition| {
                let index = self.partition(partition);
                PartitionDue {
                    partition,
                    lease_expiry: head(&index.leases),
                    delayed: head(&index.delayed),
                    attempt_timeout: head(&index.timeouts),
                    deadline: head(&index.deadlines),
                    // Flow cancels are never deferred here.
                    cancel_backlog: None,
                    finished: index.terminal.first().map(|(at, _)| *at),
                    completions: index.completions.values().next().map(|e| e.recorded_at),
                }
            })
            .collect();
        Ok(DueSummary { now, partitions })
    }

    /// Retention: removes a terminal standalone execution, or a finished flow with every
    /// member and any completion still pending for them.
    fn remove(&mut self, item: &RetentionItem) {
        let (members, finished_at) = match item {
            RetentionItem::Execution(id) => (
                vec![*id],
                self.executions.get(id).and_then(|e| e.finished_at),
            ),
            RetentionItem::Flow(flow_id) => match self.flows.remove(flow_id) {
                Some(flow) => (flow.members, flow.finished_at),
                None => (Vec::new(), None),
            },
        };
        for id in &members {
            self.executions.remove(id);
            let index = self.partition_mut(id.partition());
            index.executions.remove(id);
            if let Some(seq) = index.completion_seq.remove(id) {
                index.completions.remove(&seq);
            }
        }
        let partition = match item {
            RetentionItem::Execution(id) => id.partition(),
            RetentionItem::Flow(flow_id) => flow_id.partition(&self.config),
        };
        if let Some(at) = finished_at {
            self.partition_mut(partition).terminal.remove(&(at, *item));
        }
    }
}

fn report(processed: usize, next: Option<ScanCursor>, backlog: u64) -> ScanReport {
    ScanReport {
        processed: u32::try_from(processed).unwrap_or(u32::MAX),
        failures: Vec::new(),
        next,
        backlog,
    }
}
