//! Where things live: the workspace root, its target directory, the cargo binary.

use std::path::{Path, PathBuf};

/// The workspace root (the parent of the `xtask` package).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("invariant: the xtask package sits in a subdirectory of the workspace root")
        .to_path_buf()
}

/// The cargo target directory: `$CARGO_TARGET_DIR` when set (relative to the workspace
/// root if relative), otherwise `<workspace>/target`.
///
/// Servers and their data live under it so `cargo clean` removes them and nothing leaks
/// into the source tree.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// `target/services`: the directory of `cargo xtask services` (state, data, binaries).
pub fn services_dir() -> PathBuf {
    target_dir().join("services")
}

/// `target/services-test`: one subdirectory per `cargo xtask test` run, kept apart from the
/// servers of `services up` so a test run never touches a developer's data.
pub fn test_services_dir() -> PathBuf {
    target_dir().join("services-test")
}

/// The cargo that runs us (`$CARGO`, set by `cargo run`), falling back to `cargo` on PATH.
pub fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}
