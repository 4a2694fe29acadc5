//! PostgreSQL from the system packages (15 on Debian 12), run from a private data directory.
//!
//! PostgreSQL refuses to run as root, and the task runner does run as root on CI and on the
//! development machines. As root, the server's directory is chowned to the `postgres` system
//! user (created by the distribution package) and `initdb` / `pg_ctl` run as that user via
//! `runuser`; as anyone else they run directly. When the `postgres` user cannot reach the
//! chosen directory (a checkout under `/root`, mode 0700), the server lives under the
//! system temporary directory instead; `state.json` records where.
//!
//! Durability is left at PostgreSQL's defaults (fsync on): benchmarks run on these servers.

use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use nix::unistd::{Uid, User};

use super::valkey::find_on_path;
use super::{Durability, Service, ServiceKind, ServiceRecord, with_free_ports};
use crate::process::{self, Progress};

/// Process name of the postmaster (`/proc/PID/comm`).
pub const PROCESS_NAME: &str = "postgres";
/// Environment variable that overrides where the PostgreSQL binaries are looked for.
pub const ENV_BINDIR: &str = "FF_PG_BINDIR";
/// The system user PostgreSQL runs as when we are root.
const SYSTEM_USER: &str = "postgres";
/// Longest socket directory we use in place: a Unix socket path (`DIR/.s.PGSQL.PORT`) must
/// fit in 107 bytes.
const MAX_SOCKET_DIR_LEN: usize = 80;
/// Passed to `pg_ctl -t`: how long start/stop may take.
const PG_CTL_TIMEOUT_SECS: u32 = 60;

/// The directory holding `initdb`, `pg_ctl` and `pg_isready`.
///
/// Looks at `$FF_PG_BINDIR`, `/usr/lib/postgresql/15/bin`, `pg_config --bindir`, then the
/// newest `/usr/lib/postgresql/*/bin`. If none has the tools and we are root with apt, runs
/// `apt-get install -y postgresql` once and looks again.
pub fn find_bindir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = locate_bindir() {
        return Ok(dir);
    }
    if Uid::effective().is_root() && find_on_path("apt-get").is_some() {
        eprintln!("xtask: PostgreSQL server binaries not found; installing `postgresql` with apt");
        install_with_apt()?;
        if let Some(dir) = locate_bindir() {
            return Ok(dir);
        }
    }
    bail!(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in ${ENV_BINDIR}, \
         /usr/lib/postgresql/*/bin or `pg_config --bindir`; install PostgreSQL 15 \
         (`apt-get install postgresql`) or set {ENV_BINDIR}"
    )
}

fn has_tools(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "pg_isready"]
        .iter()
        .all(|tool| dir.join(tool).is_file())
}

fn locate_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(ENV_BINDIR) {
        let dir = PathBuf::from(dir);
        return has_tools(&dir).then_some(dir);
    }
    let preferred = PathBuf::from("/usr/lib/postgresql/15/bin");
    if has_tools(&preferred) {
        return Some(preferred);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|dir| has_tools(dir)) {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn install_with_apt() -> anyhow::Result<()> {
    let install = || {
        process::run_captured(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "postgresql"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null()),
        )
    };
    if install().is_ok() {
        return Ok(());
    }
    process::run_captured(Command::new("apt-get").arg("update").stdin(Stdio::null()))
        .context("apt-get update (before installing postgresql)")?;
    install().context("apt-get install postgresql")?;
    Ok(())
}

/// Starts PostgreSQL on a free 127.0.0.1 port with its files under `dir` (`data/`, `sock/`,
/// `postgres.log`), running `initdb` first if `dir/data` holds no cluster yet (with
/// `--no-sync` when the data is [`Durability::Throwaway`]).
pub fn start(bindir: &Path, dir: &Path, durability: Durability) -> anyhow::Result<Service> {
    let owner = if Uid::effective().is_root() {
        let user = User::from_name(SYSTEM_USER)
            .context("looking up the postgres user")?
            .with_context(|| {
                "running as root, but there is no `postgres` system user to run PostgreSQL \
                 as (PostgreSQL refuses to run as root); install the postgresql package or \
                 create the user (`useradd --system postgres`)"
            })?;
        Some(user)
    } else {
        None
    };
    let as_postgres_user = owner.is_some();
    let dir = private_dir(dir, owner.as_ref())?;
    let data_dir = dir.join("data");
    let log = dir.join("postgres.log");

    let sock_in_place = dir.join("sock");
    let sock_dir = if sock_in_place.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
        sock_in_place
    } else {
        std::env::temp_dir().join(format!("ff-xtask-pgsock-{}", short_hash(&dir)))
    };
    ensure_owned_dir(&sock_dir, owner.as_ref())?;
    let sock_text = sock_dir
        .to_str()
        .filter(|s| !s.contains('\''))
        .with_context(|| {
            format!(
                "socket directory {} is not usable in a pg_ctl option",
                sock_dir.display()
            )
        })?;

    if !data_dir.join("PG_VERSION").is_file() {
        if data_dir.exists() {
            // No PG_VERSION: an initdb that did not finish. Nothing in it is worth keeping.
            std::fs::remove_dir_all(&data_dir)
                .with_context(|| format!("removing the unfinished {}", data_dir.display()))?;
        }
        eprintln!("xtask: initdb {}", data_dir.display());
        let mut initdb = pg_command(bindir, "initdb", as_postgres_user)?;
        initdb.arg("-D").arg(&data_dir).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        if durability == Durability::Throwaway {
            initdb.arg("--no-sync");
        }
        process::run_captured(&mut initdb).context("initdb")?;
    }

    with_free_ports(|[port]| {
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k '{sock_text}' -c max_connections=200"
        );
        let started = process::run_captured(
            pg_command(bindir, "pg_ctl", as_postgres_user)?
                .arg("-D")
                .arg(&data_dir)
                .arg("-l")
                .arg(&log)
                .args([
                    "-w",
                    "-t",
                    &PG_CTL_TIMEOUT_SECS.to_string(),
                    "-o",
                    &options,
                    "start",
                ]),
        );
        let record = ServiceRecord {
            name: "postgres".to_owned(),
            kind: ServiceKind::Postgres {
                bindir: bindir.to_path_buf(),
                data_dir: data_dir.clone(),
                socket_dir: sock_dir.clone(),
                as_postgres_user,
            },
            // Read from postmaster.pid below: pg_ctl does not report it.
            pid: 0,
            port,
            dir: dir.clone(),
            log: log.clone(),
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        };
        if let Err(err) = started {
            // `pg_ctl -w` gave up, but the postmaster may be up or coming up: stop it.
            if let Ok(pid) = postmaster_pid(&data_dir) {
                drop(Service::new(ServiceRecord { pid, ..record }, None));
            }
            bail!(
                "{err:#}\nlast lines of {}:\n{}",
                log.display(),
                process::log_tail(&log, 20)
            );
        }
        let pid = postmaster_pid(&data_dir)?;
        // From here on the handle owns the server: an error below stops it.
        let service = Service::new(ServiceRecord { pid, ..record }, None);
        wait_accepting(&service)?;
        Ok(service)
    })
}

/// Waits until the server accepts connections on its TCP port (`pg_ctl -w` only watches
/// the pid file); fails early, with its log, if the postmaster exits.
fn wait_accepting(service: &Service) -> anyhow::Result<()> {
    let record = service.record();
    process::poll_until(
        &format!("postgres on port {} to accept connections", record.port),
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            if !is_alive(record) {
                bail!(
                    "postgres (pid {}) exited during startup; last lines of {}:\n{}",
                    record.pid,
                    record.log.display(),
                    process::log_tail(&record.log, 20)
                );
            }
            Ok(match probe(record) {
                Ok(_) => Progress::Done(()),
                Err(err) => Progress::Pending(format!("{err:#}")),
            })
        },
    )
}

/// Creates `dir` for the server and makes sure the user it runs as can use it, falling back
/// to a directory under the system temporary directory when that user cannot reach `dir`.
fn private_dir(dir: &Path, owner: Option<&User>) -> anyhow::Result<PathBuf> {
    ensure_owned_dir(dir, owner)?;
    let Some(user) = owner else {
        return Ok(dir.to_path_buf());
    };
    if user_can_write(dir, user)? {
        return Ok(dir.to_path_buf());
    }
    let fallback = std::env::temp_dir().join(format!("ff-xtask-pg-{}", short_hash(dir)));
    eprintln!(
        "xtask: the {} user cannot reach {}; keeping PostgreSQL's files in {}",
        user.name,
        dir.display(),
        fallback.display()
    );
    ensure_owned_dir(&fallback, owner)?;
    anyhow::ensure!(
        user_can_write(&fallback, user)?,
        "the {} user cannot write to {} either",
        user.name,
        fallback.display()
    );
    Ok(fallback)
}

/// Creates `dir` (and parents) and, when running as root, hands it to the server's user.
fn ensure_owned_dir(dir: &Path, owner: Option<&User>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(user) = owner {
        std::os::unix::fs::chown(dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .with_context(|| format!("chown {} to {}", dir.display(), user.name))?;
    }
    Ok(())
}

/// Whether `user` can create files in `dir` (every parent must be searchable for it).
fn user_can_write(dir: &Path, user: &User) -> anyhow::Result<bool> {
    let status = Command::new(runuser()?)
        .args(["-u", &user.name, "--", "test", "-w"])
        .arg(dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .status()
        .context("running `runuser ... test -w`")?;
    Ok(status.success())
}

fn runuser() -> anyhow::Result<PathBuf> {
    find_on_path("runuser")
        .or_else(|| {
            ["/usr/sbin/runuser", "/sbin/runuser"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .context("runuser (util-linux) not found: needed to run PostgreSQL as the postgres user")
}

/// `bindir/tool`, run as the `postgres` user through `runuser` when `as_postgres_user`.
///
/// Runs from `/` (the user may not be able to enter our working directory) and in its own
/// process group, so a Ctrl-C in the terminal does not cut a start or stop in half.
fn pg_command(bindir: &Path, tool: &str, as_postgres_user: bool) -> anyhow::Result<Command> {
    let mut cmd = if as_postgres_user {
        let mut cmd = Command::new(runuser()?);
        cmd.args(["-u", SYSTEM_USER, "--"]).arg(bindir.join(tool));
        cmd
    } else {
        Command::new(bindir.join(tool))
    };
    cmd.current_dir("/").stdin(Stdio::null()).process_group(0);
    Ok(cmd)
}

/// The postmaster's pid: the first line of `data/postmaster.pid`.
fn postmaster_pid(data_dir: &Path) -> anyhow::Result<u32> {
    let path = data_dir.join("postmaster.pid");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .with_context(|| format!("{} does not start with a pid", path.display()))
}

/// A short stable name for a path (FNV-1a), for directories derived from it.
fn short_hash(path: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.as_os_str().as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

pub(crate) fn is_alive(record: &ServiceRecord) -> bool {
    process::is_alive(record.pid, PROCESS_NAME)
}

/// `pg_isready` against the TCP port; returns its answer.
pub(crate) fn probe(record: &ServiceRecord) -> anyhow::Result<String> {
    let ServiceKind::Postgres { bindir, .. } = &record.kind else {
        bail!("{} is not a PostgreSQL record", record.name);
    };
    let out = process::run_captured(
        Command::new(bindir.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &record.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-t", "2"])
            .stdin(Stdio::null()),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `pg_ctl stop -m fast` (as the server's user), then SIGQUIT and SIGKILL if the
/// postmaster is still there.
pub(crate) fn stop(record: &ServiceRecord) -> anyhow::Result<()> {
    let ServiceKind::Postgres {
        bindir,
        data_dir,
        as_postgres_user,
        ..
    } = &record.kind
    else {
        bail!("{} is not a PostgreSQL record", record.name);
    };
    if !is_alive(record) {
        return Ok(());
    }
    let stopped = pg_command(bindir, "pg_ctl", *as_postgres_user).and_then(|mut cmd| {
        process::run_captured(cmd.arg("-D").arg(data_dir).args([
            "-m",
            "fast",
            "-w",
            "-t",
            &PG_CTL_TIMEOUT_SECS.to_string(),
            "stop",
        ]))
    });
    if let Err(err) = &stopped {
        eprintln!(
            "xtask: pg_ctl stop for {} failed, signalling instead: {err:#}",
            record.name
        );
    }
    if !process::wait_gone(record.pid, PROCESS_NAME, Duration::from_secs(5)) {
        process::terminate(
            record.pid,
            PROCESS_NAME,
            Signal::SIGQUIT,
            Duration::from_secs(10),
        )
        .with_context(|| format!("stopping {} (log: {})", record.name, record.log.display()))?;
    }
    Ok(())
}
