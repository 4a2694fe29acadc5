//! The FlowFabric function library (`#!lua name=flowfabric`) and its version.
//!
//! The version is `<major>.<digest>`: `major` is [`LIBRARY_MAJOR`], raised by hand whenever the
//! stored data layout changes incompatibly; `digest` is a hash of the Lua source, so any edit
//! of the source makes a starting backend replace the stored library. A server whose library
//! has a *higher* major than this code is refused (the data may use a layout this code does
//! not know).

use std::sync::OnceLock;

/// The layout generation of the stored data the library reads and writes.
pub const LIBRARY_MAJOR: u32 = 2;

const SOURCE_TEMPLATE: &str = include_str!("lua/flowfabric.lua");

/// FNV-1a, 64 bit: a stable digest of the source (no cryptographic purpose).
fn digest(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// This code's library version, `<major>.<digest>`.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| format!("{LIBRARY_MAJOR}.{:016x}", digest(SOURCE_TEMPLATE)))
}

/// The library source with its version filled in, as sent with `FUNCTION LOAD`.
pub fn source() -> &'static str {
    static SOURCE: OnceLock<String> = OnceLock::new();
    SOURCE.get_or_init(|| SOURCE_TEMPLATE.replace("__FF_VERSION__", version()))
}

/// How a stored library version compares with this code's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    Same,
    Older,
    Newer,
}

pub(crate) fn compare(stored: &str) -> Stored {
    if stored == version() {
        return Stored::Same;
    }
    let major = stored
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if major > LIBRARY_MAJOR {
        Stored::Newer
    } else {
        Stored::Older
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_filled_in() {
        assert!(source().starts_with("#!lua name=flowfabric"));
        assert!(source().contains(version()));
        assert!(!source().contains("__FF_VERSION__"));
        assert_eq!(compare(version()), Stored::Same);
        assert_eq!(compare("0.abc"), Stored::Older);
        assert_eq!(compare(&format!("{}.0", LIBRARY_MAJOR + 1)), Stored::Newer);
        assert_eq!(compare("garbage"), Stored::Older);
    }
}
