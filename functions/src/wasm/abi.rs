//! The host's side of the guest ABI (`functions/guest/ABI.md`): the exports a guest must have
//! ([`Exports`], resolved once per module), and the encodings both directions use (lists, packed
//! buffers, read values and neighbours). The constants are [`super::abi_v1`]'s, shared with the
//! guest SDK.

use std::fmt;

use wasmtime::{Memory, Module, Store as WasmStore};

use super::abi_v1::{EXPORTS, MISSING, RUN};
use super::instance::Run;
use crate::{Error, Result};

/// A guest that breaks the ABI (or whose module cannot load): a `GUEST` error.
pub(super) fn guest_error(reason: impl fmt::Display) -> Error {
    Error::Guest(reason.to_string())
}

/// One of [`EXPORTS`], by its index there.
#[derive(Debug, Clone, Copy)]
pub(super) enum Export {
    Memory = 0,
    Describe = 2,
    Alloc = 3,
    Call = 4,
}

/// A module's exports, resolved once when it compiles: an instance then finds each by index
/// instead of by name (a name lookup and a type check per export per invocation).
pub(super) struct Exports {
    required: [wasmtime::ModuleExport; 5],
    run: Option<wasmtime::ModuleExport>,
}

impl Exports {
    /// Resolves every export of the ABI; a module without one is an error.
    pub(super) fn of(module: &Module) -> Result<Exports> {
        let find = |name: &str| {
            module.get_export_index(name).ok_or_else(|| {
                guest_error(format!(
                    "the module does not export '{name}' (see functions/guest/ABI.md)"
                ))
            })
        };
        Ok(Exports {
            required: [
                find(EXPORTS[0])?,
                find(EXPORTS[1])?,
                find(EXPORTS[2])?,
                find(EXPORTS[3])?,
                find(EXPORTS[4])?,
            ],
            run: module.get_export_index(RUN),
        })
    }

    /// The instance's memory.
    pub(super) fn memory(
        &self,
        instance: &wasmtime::Instance,
        store: &mut WasmStore<Run>,
    ) -> Result<Memory> {
        instance
            .get_module_export(store, &self.required[Export::Memory as usize])
            .and_then(wasmtime::Extern::into_memory)
            .ok_or_else(|| guest_error("the export 'memory' is not a memory"))
    }

    /// One of the instance's functions, with its ABI signature checked.
    pub(super) fn func<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &self,
        instance: &wasmtime::Instance,
        store: &mut WasmStore<Run>,
        export: Export,
    ) -> Result<wasmtime::TypedFunc<P, R>> {
        typed(
            instance,
            store,
            &self.required[export as usize],
            EXPORTS[export as usize],
        )
    }

    /// The instance's `autoloc_run`, if the module exports it, its signature checked.
    pub(super) fn run(
        &self,
        instance: &wasmtime::Instance,
        store: &mut WasmStore<Run>,
    ) -> Result<Option<wasmtime::TypedFunc<i32, i64>>> {
        self.run
            .as_ref()
            .map(|export| typed(instance, store, export, RUN))
            .transpose()
    }
}

/// The function `export` (named `name`) of `instance`, with its signature checked.
fn typed<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    instance: &wasmtime::Instance,
    store: &mut WasmStore<Run>,
    export: &wasmtime::ModuleExport,
    name: &str,
) -> Result<wasmtime::TypedFunc<P, R>> {
    instance
        .get_module_export(&mut *store, export)
        .and_then(wasmtime::Extern::into_func)
        .ok_or_else(|| guest_error(format!("the export '{name}' is not a function")))?
        .typed::<P, R>(&*store)
        .map_err(|e| guest_error(format!("the export '{name}' has the wrong type: {e:#}")))
}

/// The bytes a packed `(ptr << 32) | len` names, if in bounds and at most `max` long.
pub(super) fn slice(data: &[u8], packed: i64, max: usize) -> Result<&[u8]> {
    let (at, len) = ((packed as u64 >> 32) as usize, packed as u32 as usize);
    if len > max {
        return Err(Error::TooLarge { len, max });
    }
    data.get(at..at + len)
        .ok_or_else(|| guest_error(format!("result at {at}+{len} is outside its memory")))
}

/// Appends a list: each entry as a `u32` length and its bytes.
pub(super) fn put_list<'b>(out: &mut Vec<u8>, items: impl Iterator<Item = &'b [u8]>) {
    for item in items {
        out.extend_from_slice(&(item.len() as u32).to_le_bytes());
        out.extend_from_slice(item);
    }
}

/// How many entries a list holds, if it is well formed.
pub(super) fn list_len(mut b: &[u8]) -> Option<usize> {
    let mut n = 0;
    while !b.is_empty() {
        let (len, rest) = b.split_first_chunk::<4>()?;
        b = rest.get(u32::from_le_bytes(*len) as usize..)?;
        n += 1;
    }
    Some(n)
}

/// A list's entries, or (`Err`) how many it holds when that is more than `max`: past `max`
/// the rest is only counted, no vector made for it. `None` if it is malformed.
pub(super) fn get_list(
    mut b: &[u8],
    max: usize,
) -> Option<std::result::Result<Vec<Vec<u8>>, usize>> {
    let mut items = Vec::new();
    while !b.is_empty() {
        if items.len() == max {
            return list_len(b).map(|rest| Err(max + rest));
        }
        let (len, rest) = b.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        items.push(rest.get(..len)?.to_vec());
        b = &rest[len..];
    }
    Some(Ok(items))
}

/// Whether `bytes`, a module wasmtime validated, has a start section (id 8).
pub(super) fn has_start_function(bytes: &[u8]) -> bool {
    /// An unsigned LEB128 number at `at`, and the offset after it.
    fn leb(bytes: &[u8], mut at: usize) -> Option<(usize, usize)> {
        let mut n = 0usize;
        for shift in (0..35).step_by(7) {
            let b = *bytes.get(at)?;
            at += 1;
            n |= usize::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some((n, at));
            }
        }
        None
    }
    let mut at = 8;
    while let Some(&id) = bytes.get(at) {
        if id == 8 {
            return true;
        }
        let Some((len, body)) = leb(bytes, at + 1) else {
            return false;
        };
        at = body + len;
    }
    false
}

/// Appends one read value as the ABI encodes it: a `u32` tag (`u32::MAX` for none, else the
/// length) and the bytes.
pub(super) fn put_value(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => out.extend_from_slice(&MISSING.to_le_bytes()),
        Some(v) => {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
    }
}

/// Appends one vertex's neighbours as the ABI encodes them: a `u32` tag (`u32::MAX` for a
/// missing key, else the count) and that many `u32` ids; a value that is no vertex fails.
pub(super) fn put_neighbours(
    out: &mut Vec<u8>,
    neighbours: Option<crate::graph::Neighbours<'_>>,
) -> crate::Result<()> {
    let Some(neighbours) = neighbours else {
        out.extend_from_slice(&MISSING.to_le_bytes());
        return Ok(());
    };
    if let Some(ids) = neighbours.le_ids()? {
        // Binary adjacency, or ids decoded already: the ABI's encoding, copied whole.
        let ids = &ids[..ids.len() / 4 * 4];
        out.extend_from_slice(&((ids.len() / 4) as u32).to_le_bytes());
        out.extend_from_slice(ids);
        return Ok(());
    }
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    neighbours.for_each(|id| out.extend_from_slice(&id.to_le_bytes()))?;
    let count = (out.len() - at - 4) / 4;
    out[at..at + 4].copy_from_slice(&(count as u32).to_le_bytes());
    Ok(())
}
