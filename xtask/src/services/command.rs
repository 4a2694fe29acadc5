//! `cargo xtask services up|down|status`: long-lived servers for development under
//! `target/services/`.
//!
//! `up` starts servers and leaves them running, recorded in `target/services/state.json`;
//! `down` stops exactly those (and is idempotent); `status` shows them and checks that each
//! still answers. `up` prints `export FF_...=...` lines on stdout (everything else goes to
//! stderr), so `eval "$(cargo xtask services up)"` sets up a shell.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{Durability, Selection, State, Urls};
use crate::paths;

/// Arguments of `cargo xtask services`.
#[derive(Args, Debug)]
pub struct ServicesArgs {
    /// What to do with the servers.
    #[command(subcommand)]
    pub action: Action,
}

/// `services` subcommands.
#[derive(Subcommand, Debug)]
pub enum Action {
    /// Start servers under target/services and print their `export FF_...=` lines.
    Up(UpArgs),
    /// Stop every server that `up` started (nothing running is fine).
    Down,
    /// Show the recorded servers and whether each one answers; exit 1 unless all do.
    Status,
}

/// Which servers `services up` starts: standalone Valkey and PostgreSQL by default.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Also start a Valkey Cluster of 3 masters (FF_VALKEY_CLUSTER_URLS).
    #[arg(long)]
    pub valkey_cluster: bool,
    /// Do not start PostgreSQL.
    #[arg(long)]
    pub no_postgres: bool,
    /// Do not start the standalone Valkey.
    #[arg(long)]
    pub no_valkey: bool,
}

impl UpArgs {
    /// The servers these flags select.
    pub fn selection(&self) -> Selection {
        Selection {
            valkey: !self.no_valkey,
            valkey_cluster: self.valkey_cluster,
            postgres: !self.no_postgres,
        }
    }
}

/// Runs one `services` subcommand.
pub fn run(args: ServicesArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Up(up_args) => up(&up_args.selection()),
        Action::Down => down(),
        Action::Status => status(),
    }
}

fn selection_of(urls: &Urls) -> Selection {
    Selection {
        valkey: urls.valkey.is_some(),
        valkey_cluster: !urls.valkey_cluster.is_empty(),
        postgres: urls.postgres.is_some(),
    }
}

fn up(selection: &Selection) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !selection.is_empty(),
        "nothing to start: every server was excluded"
    );
    let root = paths::services_dir();
    if let Some(state) = State::load(&root)? {
        let alive: Vec<&str> = state
            .services
            .iter()
            .filter(|s| s.is_alive())
            .map(|s| s.name.as_str())
            .collect();
        if alive.len() == state.services.len() && selection_of(&state.urls) == *selection {
            eprintln!("xtask: already running ({})", alive.join(", "));
            print!("{}", state.urls.exports());
            return Ok(ExitCode::SUCCESS);
        }
        anyhow::ensure!(
            alive.is_empty(),
            "servers from an earlier `services up` are still running ({}); run \
             `cargo xtask services down` first",
            alive.join(", ")
        );
        // Every recorded server is gone (machine restart, killed by hand): a stale record.
        State::remove(&root)?;
    }
    let services = match super::start(selection, &root, Durability::Durable) {
        Ok(services) => services,
        Err(err) => {
            // `start` stopped whatever it had started; its partial record is now stale.
            let _ = State::remove(&root);
            return Err(err);
        }
    };
    let state = services.detach()?;
    for record in &state.services {
        eprintln!(
            "xtask: {:<18} pid {:<8} {:<46} {}",
            record.name,
            record.pid,
            record.url,
            record.dir.display()
        );
    }
    eprintln!(
        "xtask: state in {}; stop with `cargo xtask services down`",
        State::path(&root).display()
    );
    print!("{}", state.urls.exports());
    Ok(ExitCode::SUCCESS)
}

fn down() -> anyhow::Result<ExitCode> {
    let root = paths::services_dir();
    let Some(state) = State::load(&root)? else {
        eprintln!(
            "xtask: nothing to stop (no {})",
            State::path(&root).display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    state.stop_all()?;
    State::remove(&root)?;
    let names: Vec<&str> = state.services.iter().map(|s| s.name.as_str()).collect();
    eprintln!("xtask: stopped {}", names.join(", "));
    Ok(ExitCode::SUCCESS)
}

fn status() -> anyhow::Result<ExitCode> {
    let root = paths::services_dir();
    let Some(state) = State::load(&root)? else {
        println!("no servers recorded (no {})", State::path(&root).display());
        return Ok(ExitCode::FAILURE);
    };
    let mut healthy = true;
    for record in &state.services {
        let health = if !record.is_alive() {
            healthy = false;
            "DEAD (process gone)".to_owned()
        } else {
            match record.probe() {
                Ok(answer) => format!("up ({answer})"),
                Err(err) => {
                    healthy = false;
                    format!("NOT ANSWERING ({err:#})")
                }
            }
        };
        println!(
            "{:<18} pid {:<8} {:<46} {health}\n{:<18} data {}  log {}",
            record.name,
            record.pid,
            record.url,
            "",
            record.dir.display(),
            record.log.display()
        );
    }
    print!("{}", state.urls.exports());
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
