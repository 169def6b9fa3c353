//! The guest ABI v1's constants (`functions/guest/ABI.md`), defined once for both sides: the
//! host compiles this file as `wasm::abi_v1`, the guest SDK (`functions/guest/sdk`, its own
//! workspace) includes the same file with `#[path]` as its `abi`'s constants.
//!
//! Plain constants only, naming nothing outside this file: it builds in both workspaces, for
//! both targets.

/// Result status: success, the output follows.
pub const STATUS_OK: u8 = 0;
/// Result status: the arguments are wrong, a message follows.
pub const STATUS_ARGS: u8 = 1;
/// Result status: the function failed, a message follows.
pub const STATUS_FAILED: u8 = 2;
/// Result status: the function failed on what it read; an error reply follows, `CODE message`,
/// its code `NOKEY`, `BADVALUE` or `WRONGTYPE`, which reaches the caller as a built-in's would.
pub const STATUS_DATA: u8 = 3;

/// The tag of a key that does not exist, in `read` and `neighbours` replies.
pub const MISSING: u32 = u32::MAX;

/// What every guest exports, in this order: its memory, the ABI version marker, then the
/// functions `autoloc_describe`, `autoloc_alloc` and `autoloc_call`.
pub const EXPORTS: [&str; 5] = [
    "memory",
    "autoloc_abi_v1",
    "autoloc_describe",
    "autoloc_alloc",
    "autoloc_call",
];

/// The optional export a guest that fetches its own arguments has.
pub const RUN: &str = "autoloc_run";

/// The module every import of the store ABI comes from.
pub const IMPORT_MODULE: &str = "autoloc";
