//! The ABI's encodings (lists, results, the description) and the bodies of the four exports,
//! which [`export!`](crate::export) wraps in `#[unsafe(no_mangle)]` functions.

use std::cell::Cell;
use std::fmt::Write as _;

use autoloc_functions::{Output, OutputKind};

use crate::{Guest, GuestError};

/// The ABI's constants (status bytes, the missing-key tag, export and import names): one
/// definition, the host's `functions/src/wasm/abi_v1.rs`, compiled here too.
#[path = "../../../src/wasm/abi_v1.rs"]
mod v1;

pub use v1::{
    EXPORTS, IMPORT_MODULE, MISSING, RUN, STATUS_ARGS, STATUS_DATA, STATUS_FAILED, STATUS_OK,
};

thread_local! {
    // wasm32-unknown-unknown has no threads: these are plain statics there.
    /// The buffer `autoloc_alloc` last handed out, valid until the next `autoloc_alloc`.
    static ARGS: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// The last result, kept until the next call so the host can copy it out.
    static RESULT: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// The description, kept for the host to copy out.
    static DESCRIPTION: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Appends `items` to `out` as a *list*: each a `u32` length, then its bytes.
pub fn encode_list<K: AsRef<[u8]>>(items: &[K], out: &mut Vec<u8>) {
    let bytes: usize = items.iter().map(|k| 4 + k.as_ref().len()).sum();
    out.reserve(bytes);
    for item in items {
        let item = item.as_ref();
        out.extend_from_slice(&(item.len() as u32).to_le_bytes());
        out.extend_from_slice(item);
    }
}

/// Splits a `u32` little-endian length off the front of `b`.
pub(crate) fn split_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (n, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*n), rest))
}

/// Decodes a *list*; `None` if an entry runs past the end.
pub fn decode_list(mut b: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut items = Vec::new();
    while !b.is_empty() {
        let (n, rest) = split_u32(b)?;
        let (item, rest) = rest.split_at_checked(n as usize)?;
        items.push(item.to_vec());
        b = rest;
    }
    Some(items)
}

/// `(ptr << 32) | len`, as the ABI returns a buffer.
fn pack(b: &[u8]) -> i64 {
    (((b.as_ptr() as usize as u32 as u64) << 32) | u64::from(b.len() as u32)) as i64
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The description `autoloc_describe` returns:
/// `{"name":..,"usage":..,"output":..,"reuse":..}`.
pub fn describe_json(name: &str, usage: &str, kind: OutputKind, reuse: bool) -> String {
    let mut s = String::with_capacity(48 + name.len() + usage.len());
    s.push_str("{\"name\":");
    json_string(name, &mut s);
    s.push_str(",\"usage\":");
    json_string(usage, &mut s);
    s.push_str(",\"output\":");
    json_string(kind.as_str(), &mut s);
    s.push_str(if reuse {
        ",\"reuse\":true}"
    } else {
        ",\"reuse\":false}"
    });
    s
}

/// The result bytes of an invocation: the status byte, then the output or the message.
///
/// A text or value output is moved, not copied, behind its status byte, so a result close to the
/// memory limit does not need twice its size.
pub fn encode_result(result: Result<Output, GuestError>) -> Vec<u8> {
    match result {
        Ok(Output::Text(text)) => {
            let mut b = text.into_bytes();
            b.reserve_exact(1);
            b.insert(0, STATUS_OK);
            b
        }
        Ok(Output::Value(Some(mut v))) => {
            v.reserve_exact(2);
            v.splice(0..0, [STATUS_OK, 1]);
            v
        }
        Ok(out) => {
            let mut b = vec![STATUS_OK];
            out.encode(&mut b);
            b
        }
        Err(e) => {
            let (status, message) = match e {
                GuestError::Args(m) => (STATUS_ARGS, m),
                GuestError::Failed(m) => (STATUS_FAILED, m),
                GuestError::Data(m) => (STATUS_DATA, m),
            };
            let mut b = Vec::with_capacity(1 + message.len());
            b.push(status);
            b.extend_from_slice(message.as_bytes());
            b
        }
    }
}

/// Checks a declaration at compile time: a name of 1 to 64 characters of `a-z`, `0-9`, `_` and a
/// usage of one non-empty line.
pub const fn check_declaration(name: &str, usage: &str) {
    let n = name.as_bytes();
    if n.is_empty() || n.len() > 64 {
        panic!("autoloc_guest::export!: the name must be 1 to 64 characters long");
    }
    let mut i = 0;
    while i < n.len() {
        let c = n[i];
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_') {
            panic!("autoloc_guest::export!: the name may hold only a-z, 0-9 and _");
        }
        i += 1;
    }
    let u = usage.as_bytes();
    if u.is_empty() {
        panic!("autoloc_guest::export!: the usage must not be empty");
    }
    let mut i = 0;
    while i < u.len() {
        if u[i] == b'\n' || u[i] == b'\r' {
            panic!("autoloc_guest::export!: the usage must be one line");
        }
        i += 1;
    }
}

/// `autoloc_describe`: the description, kept alive for the host to copy.
pub fn describe(guest: &Guest) -> i64 {
    let json = guest.describe().into_bytes();
    let packed = pack(&json);
    DESCRIPTION.set(json);
    packed
}

/// `autoloc_alloc`: a zero-filled buffer of `len` bytes (never a dangling pointer, even for 0),
/// kept until the next `autoloc_alloc`. An allocation that fails traps.
pub fn alloc(len: i32) -> i32 {
    let len = len as u32 as usize;
    drop(ARGS.take()); // free the last one first
    let mut buf = Vec::with_capacity(len.max(1));
    buf.resize(len, 0);
    let ptr = buf.as_ptr() as usize as u32 as i32;
    ARGS.set(buf);
    ptr
}

/// The `len` bytes at `ptr`, which must lie within `buf` (the `autoloc_alloc` buffer).
fn args_within(buf: &[u8], ptr: i32, len: i32) -> Option<&[u8]> {
    let len = len as u32 as usize;
    if len == 0 {
        return Some(&[]);
    }
    let start = (ptr as u32 as usize).checked_sub(buf.as_ptr() as usize)?;
    buf.get(start..start.checked_add(len)?)
}

/// `autoloc_call`: decodes the arguments from the `autoloc_alloc` buffer, runs the guest and
/// returns its result, kept alive for the host to copy.
pub fn call(guest: &Guest, args_ptr: i32, args_len: i32) -> i64 {
    drop(RESULT.take());
    let buf = ARGS.take();
    let args = match args_within(&buf, args_ptr, args_len) {
        Some(b) => decode_list(b).ok_or("autoloc_call: malformed argument list"),
        None => Err("autoloc_call: the arguments are not in the buffer autoloc_alloc returned"),
    };
    drop(buf);
    respond(guest, args.map_err(String::from))
}

/// `autoloc_run`: fetches the `args_len` bytes of arguments with the host's `args`, runs the
/// guest and returns its result, kept alive for the host to copy. One call into the guest where
/// `autoloc_alloc` and `autoloc_call` are two.
pub fn run(guest: &Guest, args_len: i32) -> i64 {
    drop(RESULT.take());
    let len = args_len as u32 as usize;
    let mut buf = vec![0; len];
    let n = crate::host::args(&mut buf);
    let args = if n != len {
        Err(format!(
            "autoloc_run: {n} bytes of arguments from the host, {len} announced"
        ))
    } else {
        decode_list(&buf).ok_or_else(|| "autoloc_run: malformed argument list".to_string())
    };
    drop(buf);
    respond(guest, args)
}

/// Runs the guest on its decoded arguments (or fails with the message why there are none) and
/// keeps the encoded result for the host to copy: the end of `autoloc_call` and `autoloc_run`.
fn respond(guest: &Guest, args: Result<Vec<Vec<u8>>, String>) -> i64 {
    let out = match args {
        Ok(args) => guest.invoke(&args),
        Err(message) => encode_result(Err(GuestError::failed(message))),
    };
    let packed = pack(&out);
    RESULT.set(out);
    packed
}

/// The last result `autoloc_run` or `autoloc_call` left for the host.
#[cfg(test)]
pub(crate) fn last_result() -> Vec<u8> {
    let r = RESULT.take();
    RESULT.set(r.clone());
    r
}

/// Turns an entry's result into the guest's.
pub fn into_guest_result<E: Into<GuestError>>(r: Result<Output, E>) -> Result<Output, GuestError> {
    r.map_err(Into::into)
}
