//! Claiming across partitions, and the per-lane index of partitions with claimable work.
//!
//! A lane's ready work is spread over every partition, and one script only touches one
//! partition's slot. So that a worker does not probe empty partitions one round trip at a
//! time, each lane has an index — a sorted set `ff:<ns>:{lane:<lane>}:parts` under its own
//! hash tag, member = partition, score = when work there becomes claimable (0 = now, or the
//! earliest delayed `available_at`). It is touched only on transitions, never in the steady
//! state of a busy partition:
//!
//! - a ready set going from empty to non-empty (checked with one `ZCARD` after the `ZADD`)
//!   sets the partition's score to 0, unless the same call emptied the set again (a chain's
//!   `claim_next` taking the node it just readied); a delayed execution arriving lowers the
//!   score to its `available_at` (`ZADD LT`);
//! - a claim that leaves the lane without work the worker could take re-reads the lane's
//!   exact status on the partition (ready in any capability set, earliest delayed) and
//!   removes the entry or moves it to the next delayed time;
//! - the delayed-promotion scanner sets the entry of every lane with work on its partition,
//!   which repairs an entry lost to a crash between a script and the client's `ZADD`.
//!
//! **Standalone**: the functions write the index themselves, in the same call (no slot rules
//! forbid it there), and `ff_claim_any` claims across partitions in one FCALL: the worker's
//! sticky partition first, then the index's due partitions in random order. A claim that takes
//! a full batch does not count what is left: the worker stays, and the call that finds the
//! set empty fixes the entry. `complete` / `fail` with `claim_next` do the same after the
//! execution's own partition.
//!
//! **Cluster**: a partition's function cannot write the index (another slot), so it reports
//! the transitions and the client sends `ZADD LT`; a claim that finds a partition without work
//! for the lane removes it (or raises its score to the next delayed time), then re-reads the
//! partition's status and re-adds it if work arrived meanwhile. Writers add *after* their
//! script ran and removers re-check *after* removing, so every interleaving leaves a partition
//! with work in the index. A claim first tries the partition where the same worker last found
//! work for the lane (it stays there while the partition keeps yielding), then the index's due
//! partitions in random order, at most [`MAX_PROBES`] of them, one FCALL each.

use std::collections::HashSet;

use ff_core::{ClaimRequest, ClaimedExecution, EngineError, Lane, Partition};
use rand::seq::SliceRandom;
use uuid::Uuid;

use crate::backend::ValkeyBackend;
use crate::connection::Idempotent;
use crate::decode;
use crate::encode::{self, Args};
use crate::reply::{Effects, Fields};

/// Most partitions one claim call visits after its sticky partition.
pub(crate) const MAX_PROBES: usize = 8;

/// What a claim on one partition returned.
pub(crate) struct PartitionClaim {
    pub(crate) claimed: Vec<ClaimedExecution>,
    /// Ready executions of the lane left on the partition (any capabilities).
    pub(crate) ready_left: i64,
    /// The earliest delayed `available_at` of the lane there, or -1.
    pub(crate) next_delayed: i64,
}

impl ValkeyBackend {
    /// The 9 `claim_next` arguments of complete / fail: has_claim, lane, worker, max, lease
    /// TTL, capabilities, lease id base, the number of the call's partition and the most
    /// partitions to visit (a standalone server continues on other partitions of the lane index
    /// when the current one runs dry; a cluster stays on the current partition). Returns the
    /// lease id base the reply's lease ids derive from.
    pub(crate) fn claim_args(
        args: &mut Args,
        request: Option<&ClaimRequest>,
        partition: Partition,
    ) -> Uuid {
        let base = Uuid::new_v4();
        match request {
            None => {
                args.str("0");
                for _ in 0..8 {
                    args.str("");
                }
            }
            Some(r) => {
                args.str("1")
                    .str(r.lane.as_str())
                    .str(r.worker.as_str())
                    .num(r.max)
                    .num(ff_core::time::duration_millis(r.lease_ttl))
                    .str(&encode::capabilities(&r.capabilities))
                    .str(&base.to_string())
                    .num(partition.index())
                    .num(MAX_PROBES + 1);
            }
        }
        base
    }

    /// Decodes what follows the status of complete / fail on `partition`: the claim block when
    /// the call asked for one, and remembers where the worker should claim next.
    pub(crate) fn claimed_next(
        &self,
        partition: Partition,
        request: Option<&ClaimRequest>,
        base: Uuid,
        f: &mut Fields,
    ) -> Result<Vec<ClaimedExecution>, EngineError> {
        let Some(r) = request else {
            return Ok(Vec::new());
        };
        let key = (r.worker.clone(), r.lane.clone());
        if self.conn.is_cluster() {
            let ready_left = f.int()?;
            let _next_delayed = f.int()?;
            if ready_left > 0 {
                self.sticky_set(key, partition);
            } else {
                self.sticky_clear(&key);
            }
        } else {
            let stay = f.string()?;
            if stay.is_empty() {
                self.sticky_clear(&key);
            } else {
                self.sticky_set(key, self.partition_named(&stay)?);
            }
        }
        decode::claimed(f, base, &r.lane, |p| self.partition_named(p))
    }

    /// One `ff_claim` on one partition.
    async fn claim_on(
        &self,
        partition: Partition,
        request: &ClaimRequest,
    ) -> Result<PartitionClaim, EngineError> {
        let base = Uuid::new_v4();
        let mut args = Args::with_capacity(7);
        args.str(&self.offset());
        args.str(request.lane.as_str())
            .str(request.worker.as_str())
            .num(request.max)
            .num(ff_core::time::duration_millis(request.lease_ttl))
            .str(&encode::capabilities(&request.capabilities))
            .str(&base.to_string());
        let reply = self
            .conn
            .fcall(
                "ff_claim",
                &[self.prefix(partition)],
                &args.0,
                Idempotent::No,
            )
            .await?;
        let mut f = Fields::new(reply, "ff_claim")?;
        f.status(&partition.hash_tag())?;
        let ready_left = f.int()?;
        let next_delayed = f.int()?;
        let claimed = decode::claimed(&mut f, base, &request.lane, |p| self.partition_named(p))?;
        let effects = Effects::parse(&mut f)?;
        self.apply_effects(partition, &effects).await?;
        Ok(PartitionClaim {
            claimed,
            ready_left,
            next_delayed,
        })
    }

    /// The claim across partitions (see the module docs): the sticky partition first, then
    /// due partitions of the lane index until `max` executions are leased or
    /// [`MAX_PROBES`] partitions were visited.
    pub(crate) async fn claim_any(
        &self,
        request: &ClaimRequest,
    ) -> Result<Vec<ClaimedExecution>, EngineError> {
        if !self.conn.is_cluster() {
            return self.claim_standalone(request).await;
        }
        let sticky_key = (request.worker.clone(), request.lane.clone());
        let max = usize::try_from(request.max).unwrap_or(usize::MAX);
        let mut out: Vec<ClaimedExecution> = Vec::new();
        let mut tried = HashSet::new();
        let mut stay: Option<Partition> = None;
        if let Some(partition) = self.sticky_get(&sticky_key) {
            tried.insert(partition);
            let got = self.claim_on(partition, request).await?;
            if got.claimed.is_empty() || got.ready_left == 0 {
                // Empty now: take it out of the index before others probe it in vain.
                self.index_miss(partition, &request.lane, &got).await?;
            } else {
                stay = Some(partition);
            }
            out.extend(got.claimed);
        }
        if out.len() < max {
            let mut due = self.lane_due(&request.lane).await?;
            due.retain(|p| !tried.contains(p));
            due.shuffle(&mut rand::rng());
            for partition in due.into_iter().take(MAX_PROBES) {
                let rest = request
                    .clone()
                    .with_max(u32::try_from(max - out.len()).unwrap_or(u32::MAX));
                let got = self.claim_on(partition, &rest).await?;
                if got.claimed.is_empty() || got.ready_left == 0 {
                    self.index_miss(partition, &request.lane, &got).await?;
                }
                if got.claimed.is_empty() {
                    continue;
                }
                if got.ready_left > 0 {
                    stay = Some(partition);
                }
                out.extend(got.claimed);
                if out.len() >= max {
                    break;
                }
            }
        }
        match stay {
            Some(partition) => self.sticky_set(sticky_key, partition),
            None => self.sticky_clear(&sticky_key),
        }
        Ok(out)
    }

    /// On a standalone server one FCALL claims across partitions: the function reads the lane
    /// index and visits the due partitions (the worker's sticky one first) itself.
    async fn claim_standalone(
        &self,
        request: &ClaimRequest,
    ) -> Result<Vec<ClaimedExecution>, EngineError> {
        let sticky_key = (request.worker.clone(), request.lane.clone());
        let preferred = self
            .sticky_get(&sticky_key)
            .map(|p| p.index().to_string())
            .unwrap_or_default();
        let key = self.lane_index_key(request.lane.as_str());
        let base = Uuid::new_v4();
        let mut args = Args::with_capacity(9);
        args.str(&self.offset())
            .str(request.lane.as_str())
            .str(request.worker.as_str())
            .num(request.max)
            .num(ff_core::time::duration_millis(request.lease_ttl))
            .str(&encode::capabilities(&request.capabilities))
            .str(&base.to_string())
            .str(&preferred)
            .num(MAX_PROBES + 1);
        let reply = self
            .conn
            .fcall("ff_claim_any", &[&key], &args.0, Idempotent::No)
            .await?;
        let mut f = Fields::new(reply, "ff_claim_any")?;
        f.status("")?;
        let stay = f.string()?;
        let claimed = decode::claimed(&mut f, base, &request.lane, |p| self.partition_named(p))?;
        if stay.is_empty() {
            self.sticky_clear(&sticky_key);
        } else {
            self.sticky_set(sticky_key, self.partition_named(&stay)?);
        }
        Ok(claimed)
    }

    fn partition_named(&self, name: &str) -> Result<Partition, EngineError> {
        name.parse::<u16>()
            .ok()
            .filter(|i| *i < self.partitions.partitions)
            .map(Partition)
            .ok_or_else(|| EngineError::Corrupt(format!("bad partition {name:?} in a lane index")))
    }

    /// Up to [`MAX_PROBES`] partitions whose index score for `lane` is due (backend clock), in
    /// random order.
    async fn lane_due(&self, lane: &Lane) -> Result<Vec<Partition>, EngineError> {
        let key = self.lane_index_key(lane.as_str());
        let mut args = Args::with_capacity(2);
        args.str(&self.offset()).num(MAX_PROBES);
        let reply = self
            .conn
            .fcall("ff_lane_due", &[&key], &args.0, Idempotent::Yes)
            .await?;
        let mut f = Fields::new(reply, "ff_lane_due")?;
        f.status("")?;
        let mut out = Vec::with_capacity(f.remaining());
        while f.remaining() > 0 {
            let p = f.string()?;
            match p.parse::<u16>() {
                Ok(i) if i < self.partitions.partitions => out.push(Partition(i)),
                _ => {
                    tracing::warn!(lane = lane.as_str(), member = %p, "ignoring a bad lane-index member");
                }
            }
        }
        Ok(out)
    }

    /// A claim found no work for `lane` on `partition`: take the partition out of the lane
    /// index (or move it to its next delayed time), then re-check and put it back if work
    /// arrived in between.
    async fn index_miss(
        &self,
        partition: Partition,
        lane: &Lane,
        got: &PartitionClaim,
    ) -> Result<(), EngineError> {
        if got.ready_left > 0 {
            // Work this worker cannot take (capabilities): the entry stays.
            return Ok(());
        }
        let key = self.lane_index_key(lane.as_str());
        let member = partition.index().to_string();
        let mut cmd = redis::cmd("ZADD");
        if got.next_delayed >= 0 {
            cmd.arg(&key).arg("GT").arg(got.next_delayed).arg(&member);
        } else {
            cmd = redis::cmd("ZREM");
            cmd.arg(&key).arg(&member);
        }
        self.conn.raw(&cmd).await.map_err(|e| {
            crate::connection::map_error("updating a lane index", e, Idempotent::Yes)
        })?;
        let reply = self
            .conn
            .fcall(
                "ff_lane_status",
                &[self.prefix(partition)],
                &[lane.as_str().as_bytes().to_vec()],
                Idempotent::Yes,
            )
            .await?;
        let mut f = Fields::new(reply, "ff_lane_status")?;
        f.status(&partition.hash_tag())?;
        let ready = f.int()?;
        let next_delayed = f.int()?;
        if ready > 0 {
            self.lane_index_add(lane.as_str(), partition, 0).await?;
        } else if next_delayed >= 0 {
            self.lane_index_add(lane.as_str(), partition, next_delayed)
                .await?;
        }
        Ok(())
    }

    /// `ZADD LT`: the lane has work on `partition` from `score` on.
    pub(crate) async fn lane_index_add(
        &self,
        lane: &str,
        partition: Partition,
        score: i64,
    ) -> Result<(), EngineError> {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(self.lane_index_key(lane))
            .arg("LT")
            .arg(score)
            .arg(partition.index().to_string());
        self.conn.raw(&cmd).await.map_err(|e| {
            crate::connection::map_error("updating a lane index", e, Idempotent::Yes)
        })?;
        Ok(())
    }

    /// Applies what a script reported: lane-index additions. Best effort: the operation
    /// itself has landed, so a failure here is logged, not returned (the delayed-promotion
    /// scanner re-adds a missing entry).
    pub(crate) async fn apply_effects(
        &self,
        partition: Partition,
        effects: &Effects,
    ) -> Result<(), EngineError> {
        for (lane, score) in &effects.lanes {
            let mut attempt = 0u64;
            while let Err(error) = self.lane_index_add(lane, partition, *score).await {
                attempt += 1;
                if attempt >= 3 || !error.is_retryable() {
                    tracing::warn!(lane, partition = partition.index(), %error,
                        "lane index not updated; the delayed-promotion scanner will repair it");
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10 * attempt)).await;
            }
        }
        Ok(())
    }
}
