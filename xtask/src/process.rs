//! Processes: bounded waits, liveness checks, signals, running helper commands.
//!
//! Every wait in the task runner goes through [`poll_until`], which has a deadline and
//! notices interrupts, so nothing here can hang forever or ignore Ctrl-C.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::interrupt;

/// One observation of a condition being waited for.
#[derive(Debug)]
pub enum Progress<T> {
    /// The condition holds; the wait returns this value.
    Done(T),
    /// Not yet; the text says what was seen, and ends up in the timeout error.
    Pending(String),
}

/// Calls `probe` every `interval` until it returns [`Progress::Done`], fails, the `timeout`
/// passes, or an interrupt is requested.
///
/// A probe error is fatal (no retry): probes return `Pending` for states that may still
/// change and `Err` for those that cannot (e.g. the server process exited).
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> anyhow::Result<Progress<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        interrupt::check()?;
        let last = match probe()? {
            Progress::Done(value) => return Ok(value),
            Progress::Pending(last) => last,
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last seen: {last})");
        }
        std::thread::sleep(interval);
    }
}

/// Whether process `pid` exists, is not a zombie, and its command name (`/proc/PID/comm`)
/// starts with `name`.
///
/// The name check keeps a recycled pid from being mistaken for (and signalled as) one of
/// our servers.
pub fn is_alive(pid: u32, name: &str) -> bool {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let Ok(comm) = std::fs::read_to_string(proc_dir.join("comm")) else {
        return false;
    };
    if !comm.trim_end().starts_with(name) {
        return false;
    }
    pid_exists(pid)
}

/// Whether a (non-zombie) process with this pid exists, whatever it is.
///
/// Reads `/proc/PID/stat` (`pid (comm) STATE ...`; comm may contain spaces and parentheses,
/// so the state is the first field after the last `)`).
pub fn pid_exists(pid: u32) -> bool {
    let stat = Path::new("/proc").join(pid.to_string()).join("stat");
    std::fs::read_to_string(stat).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Sends `sig` to `pid`; a process that is already gone is not an error.
pub fn send_signal(pid: u32, sig: Signal) -> anyhow::Result<()> {
    let raw = i32::try_from(pid).with_context(|| format!("pid {pid} out of range"))?;
    match signal::kill(Pid::from_raw(raw), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(err) => Err(err).with_context(|| format!("sending {sig} to pid {pid}")),
    }
}

/// Waits until process `pid` (named `name`) is gone, up to `timeout`.
///
/// Deliberately ignores interrupts: it runs while stopping servers, which is exactly what
/// an interrupt asks for.
pub fn wait_gone(pid: u32, name: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_alive(pid, name) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Stops process `pid` (named `name`) with `first` (a graceful signal), escalating to
/// SIGKILL after `grace`. Returns once it is gone, or an error if even SIGKILL did not work.
pub fn terminate(pid: u32, name: &str, first: Signal, grace: Duration) -> anyhow::Result<()> {
    if !is_alive(pid, name) {
        return Ok(());
    }
    send_signal(pid, first)?;
    if wait_gone(pid, name, grace) {
        return Ok(());
    }
    eprintln!("xtask: {name} (pid {pid}) ignored {first} for {grace:?}; sending SIGKILL");
    send_signal(pid, Signal::SIGKILL)?;
    if wait_gone(pid, name, Duration::from_secs(5)) {
        Ok(())
    } else {
        bail!("{name} (pid {pid}) is still alive after SIGKILL")
    }
}

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` to completion with captured output; a spawn failure or a non-zero exit is an
/// error that quotes the command and its output.
///
/// Only for short helper commands (pip, initdb, pg_ctl): it has no timeout of its own, so
/// callers use tools that bound themselves (`pg_ctl -t`, `pg_isready -t`).
pub fn run_captured(cmd: &mut Command) -> anyhow::Result<Output> {
    let line = describe(cmd);
    let output = cmd
        .output()
        .with_context(|| format!("could not run `{line}`"))?;
    if output.status.success() {
        return Ok(output);
    }
    interrupt::check()?;
    let mut message = format!("`{line}` failed ({})", output.status);
    for (label, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        if !text.trim().is_empty() {
            let _ = write!(message, "\n--- {label} ---\n{}", text.trim_end());
        }
    }
    bail!(message)
}

/// The last `lines` lines of a log file, for error messages ("" if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// An exit status as a shell would report it: the code, or 128 + the signal number.
pub fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
        (None, None) => 1,
    }
}
