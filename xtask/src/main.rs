//! Entry point of `cargo xtask`; everything lives in the `xtask` library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = xtask::Cli::parse();
    match xtask::run(cli) {
        Ok(code) => code,
        Err(err) if xtask::interrupt::caused(&err) => {
            eprintln!("xtask: interrupted");
            ExitCode::from(130)
        }
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
