//! The README's first example, compiled and run: a two-node flow on the in-memory backend,
//! drained by a hand-written worker loop. `tests/readme.rs` checks that the README shows
//! exactly the code between the markers below.
//!
//! Run it with `cargo run -p ff-engine --example flow_by_hand`.

use std::error::Error;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    // README:begin
    use ff_core::{
        ClaimRequest, CompleteRequest, EdgeSpec, EngineBackend, ExecutionSpec, FlowSpec, Lane,
        NodeKey, NodeSpec, WorkerId,
    };
    use std::sync::Arc;

    let backend: Arc<dyn EngineBackend> = ff_engine::connect("memory://").await?;
    let lane = Lane::new("thumbnails")?;
    let (resize, upload) = (NodeKey::new("resize")?, NodeKey::new("upload")?);

    // A two-node flow: `upload` becomes claimable only once `resize` succeeded,
    // and receives its result.
    let flow = FlowSpec::new()
        .node(NodeSpec::new(
            resize.clone(),
            ExecutionSpec::new(lane.clone(), b"photo.jpg".to_vec()),
        ))
        .node(NodeSpec::new(
            upload.clone(),
            ExecutionSpec::new(lane.clone(), vec![]),
        ))
        .edge(EdgeSpec::new(resize, upload).passing_result());
    backend.create_flow(&flow).await?;

    // A worker loop, by hand (ff_engine::Worker does this for you, with renewals and retries).
    let claim = ClaimRequest::new(WorkerId::random(), lane);
    let mut work = backend.claim(&claim).await?;
    while let Some(execution) = work.pop() {
        let result = b"done".to_vec(); // ... do the work ...
        let request = CompleteRequest::new(execution.fence)
            .with_result(result)
            .with_claim_next(claim.clone()); // the next execution comes back in the same round trip
        work = backend.complete(&request).await?.next;
    }
    // README:end

    let created = backend.create_flow(&flow).await?; // idempotent: the same flow again
    let snapshot = backend.describe_flow(&created.flow_id).await?;
    println!("flow {}: {:?}", created.flow_id, snapshot.state);
    Ok(())
}
