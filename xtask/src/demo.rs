//! `cargo xtask demo`: placeholder until the engine's demo lands.
//!
//! This file belongs to the engine engineer, who replaces it with the real demo. The task
//! runner only relies on the two items below: [`DemoArgs`] (flattened into the CLI) and
//! [`run`].

/// Arguments of `cargo xtask demo`; none yet.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {}

/// Runs the demo. For now it only says that the demo does not exist yet.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let DemoArgs {} = args;
    println!("demo not built yet");
    Ok(())
}
