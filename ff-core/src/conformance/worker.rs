//! A test worker for flow cases: claims what is ready in a lane, holds the leases, and ends
//! members by key, settling the flow after each step so assertions do not depend on whether
//! the backend cascades inline.

use std::collections::{BTreeMap, BTreeSet};

use crate::execution::{ClaimedExecution, CompleteRequest, FailRequest, Failure};
use crate::id::Lane;
use crate::limits;

use super::check::{CaseError, CaseResult};
use super::context::{FlowHandle, TestContext};

/// Holds the leases a case claimed in one lane, by member key.
#[derive(Debug)]
pub(crate) struct TestWorker<'a> {
    ctx: &'a TestContext,
    lane: Lane,
    flow: FlowHandle,
    held: BTreeMap<String, ClaimedExecution>,
}

impl<'a> TestWorker<'a> {
    /// A worker for `flow`'s members in `lane`.
    pub(crate) fn new(ctx: &'a TestContext, lane: &Lane, flow: &FlowHandle) -> Self {
        TestWorker {
            ctx,
            lane: lane.clone(),
            flow: flow.clone(),
            held: BTreeMap::new(),
        }
    }

    /// The flow.
    pub(crate) fn flow(&self) -> &FlowHandle {
        &self.flow
    }

    /// Records members added later by `add_nodes`.
    pub(crate) fn flow_mut(&mut self) -> &mut FlowHandle {
        &mut self.flow
    }

    /// The lease held on member `key`, if any.
    pub(crate) fn held(&self, key: &str) -> Option<&ClaimedExecution> {
        self.held.get(key)
    }

    /// Claims everything ready in the lane; returns the keys claimed now.
    pub(crate) async fn claim_ready(&mut self) -> CaseResult<BTreeSet<String>> {
        let claimed = self.ctx.claim(&self.lane, limits::MAX_CLAIM_BATCH).await?;
        let mut keys = BTreeSet::new();
        for c in claimed {
            let key = self
                .flow
                .key_of(&c.id())
                .map(str::to_string)
                .unwrap_or_else(|| c.id().to_string());
            keys.insert(key.clone());
            self.held.insert(key, c);
        }
        Ok(keys)
    }

    /// The lease on `key`, claiming what is ready first if it is not held yet.
    pub(crate) async fn take(&mut self, key: &str) -> CaseResult<ClaimedExecution> {
        if !self.held.contains_key(key) {
            self.claim_ready().await?;
        }
        self.held.remove(key).ok_or_else(|| {
            CaseError::new(format!(
                "member {key} of flow {} is not claimable",
                self.flow.id
            ))
        })
    }

    /// Completes `key` with its own name as the result, then settles the flow.
    pub(crate) async fn succeed(&mut self, key: &str) -> CaseResult {
        self.succeed_with(key, Some(key.as_bytes().to_vec())).await
    }

    /// Completes `key` with `result`, then settles the flow.
    pub(crate) async fn succeed_with(&mut self, key: &str, result: Option<Vec<u8>>) -> CaseResult {
        let claimed = self.take(key).await?;
        let mut request = CompleteRequest::new(claimed.fence);
        request.result = result;
        self.ctx.backend().complete(&request).await?;
        self.ctx.settle(&self.flow.id).await
    }

    /// Fails `key` permanently, then settles the flow.
    pub(crate) async fn fail(&mut self, key: &str) -> CaseResult {
        let claimed = self.take(key).await?;
        self.ctx
            .backend()
            .fail(&FailRequest::new(
                claimed.fence,
                Failure::permanent(format!("{key} failed")),
            ))
            .await?;
        self.ctx.settle(&self.flow.id).await
    }
}
