//! `state.json`: the record of a started set of servers, for `status` and `down` in a later
//! process, and for cleaning up after a test run that was killed outright.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{ServiceKind, ServiceRecord, Urls};

/// What a directory's servers are, as written to `<root>/state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The task runner process that owns these servers and will stop them (a test run);
    /// `None` once detached by `services up`. A state whose owner is dead is a leftover.
    pub owner_pid: Option<u32>,
    /// The servers, in start order.
    pub services: Vec<ServiceRecord>,
    /// Their URLs.
    pub urls: Urls,
}

impl State {
    /// `<root>/state.json`.
    pub fn path(root: &Path) -> PathBuf {
        root.join("state.json")
    }

    /// Reads `<root>/state.json`; `None` when there is none.
    pub fn load(root: &Path) -> anyhow::Result<Option<State>> {
        let path = Self::path(root);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        let state = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a state file of this xtask version",
                path.display()
            )
        })?;
        Ok(Some(state))
    }

    /// Writes `<root>/state.json` atomically (temporary file, then rename).
    pub fn save(&self, root: &Path) -> anyhow::Result<()> {
        let path = Self::path(root);
        let tmp = root.join(".state.json.tmp");
        let text = serde_json::to_string_pretty(self).context("serializing the state")?;
        std::fs::write(&tmp, text + "\n").with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// Removes `<root>/state.json` (absent is fine).
    pub fn remove(root: &Path) -> anyhow::Result<()> {
        let path = Self::path(root);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err).with_context(|| format!("removing {}", path.display())),
        }
    }

    /// Every directory the recorded servers use outside `root`.
    pub fn dirs_outside(&self, root: &Path) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for record in &self.services {
            dirs.push(record.dir.clone());
            if let ServiceKind::Postgres { socket_dir, .. } = &record.kind {
                dirs.push(socket_dir.clone());
            }
        }
        dirs.retain(|dir| !dir.starts_with(root));
        dirs
    }

    /// Stops every recorded server (reverse order), trying all of them, then reports every
    /// failure together. Idempotent: servers already gone are skipped.
    pub fn stop_all(&self) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        for record in self.services.iter().rev() {
            if let Err(err) = record.stop() {
                failures.push(format!("{}: {err:#}", record.name));
            }
        }
        anyhow::ensure!(
            failures.is_empty(),
            "could not stop every server:\n  {}",
            failures.join("\n  ")
        );
        Ok(())
    }
}
