//! Write AutoLoc user functions in Rust and compile them to WebAssembly.
//!
//! A guest is a `cdylib` crate built for `wasm32-unknown-unknown` that implements the guest ABI
//! v1 (`functions/guest/ABI.md`). This crate is the whole Rust side of it: one macro declares the
//! function and makes the exports; plain functions reach the store.
//!
//! # Map
//! - [`export!`]: declares the function (name, usage, output kind, entry) and generates the
//!   exports `autoloc_abi_v1`, `autoloc_describe`, `autoloc_alloc`, `autoloc_call`.
//! - The store, synchronously: [`read`] (many keys, one store access), [`read_each`] (the same,
//!   visiting borrowed values without copying them), [`neighbours_each`] (vertices, decoded by
//!   the host), [`get`], [`write`], [`checkpoint`].
//! - [`HostStore`]: the same imports as an [`autoloc_functions::Store`], so any
//!   [`autoloc_functions::Function`] runs in a guest unchanged ([`run_function`], or
//!   `export!`'s `function:` form).
//! - [`GuestError`]: how an entry fails: status 1 (bad arguments) or 2 (failed).
//! - [`functions`]: `autoloc-functions` re-exported (`Output`, `Args`, `graph`, the built-ins).
//! - `mock` (native builds only): an in-memory host for unit tests with plain `cargo test`.
//! - [`abi`]: the encodings and the bodies of the exports.
//! - `heap` (feature `heap`, on by default; `wasm32` only): the guest's `#[global_allocator]`,
//!   `dlmalloc` over a static arena before it grows the memory.
//!
//! A store error (an ACL, a wrong type, a refused write) never reaches the guest: the host ends
//! the invocation. A guest must be deterministic: an invocation may run again from the start and
//! must make the same reads and writes in the same order.
//!
//! # Example
//!
//! ```
//! use autoloc_guest::functions::{Args, Output, OutputKind};
//! use autoloc_guest::{export, read, GuestError};
//!
//! export! {
//!     name: "total_len",
//!     usage: "total_len <key>...",
//!     output: OutputKind::Sum,
//!     entry: total_len,
//! }
//!
//! /// The total length of the values at the keys, and how many exist.
//! fn total_len(args: &[Vec<u8>]) -> Result<Output, GuestError> {
//!     if args.is_empty() {
//!         return Err(GuestError::args("usage: total_len <key>..."));
//!     }
//!     let values = read(args); // one store access for all the keys
//!     let found = values.iter().flatten();
//!     Ok(Output::Sum {
//!         sum: found.clone().map(|v| v.len() as f64).sum(),
//!         keys: found.count() as u64,
//!     })
//! }
//! # autoloc_guest::mock::insert("a", "xyz");
//! # let r = AUTOLOC_GUEST.run(&[b"a".to_vec(), b"b".to_vec()]).unwrap();
//! # assert_eq!(r, Output::Sum { sum: 3.0, keys: 1 });
//! ```
//!
//! Built for `wasm32-unknown-unknown` in release, this is `total_len.wasm`. An existing
//! [`Function`] needs no rewrite:
//!
//! ```
//! autoloc_guest::export! {
//!     name: "khop_wasm",
//!     usage: "khop_wasm <start> <k>",
//!     function: autoloc_guest::functions::builtins::khop::Khop,
//! }
//! ```

pub mod abi;
#[cfg(all(target_arch = "wasm32", feature = "heap"))]
mod heap;
mod host;
#[cfg(not(target_arch = "wasm32"))]
pub mod mock;

use std::cell::Cell;
use std::convert::Infallible;
use std::fmt;

pub use autoloc_functions as functions;
use autoloc_functions::exec::block_on;
use autoloc_functions::graph::Neighbours;
use autoloc_functions::store::{NeighbourVisit, StoreFuture, Visit};
pub use autoloc_functions::{Error, Function, Output, OutputKind, Store};

/// Why an entry failed, as it reaches the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestError {
    /// The arguments are wrong (status 1): the caller's mistake, like a built-in's argument error.
    Args(String),
    /// The function failed (status 2).
    Failed(String),
    /// The function failed on what it read (status 3): an error reply, `CODE message`, with the
    /// code of a missing key, a value it cannot decode or a key of another type (`NOKEY`,
    /// `BADVALUE`, `WRONGTYPE`), which its caller gets as from a built-in. Made from an
    /// [`Error`] of those kinds.
    Data(String),
}

impl GuestError {
    /// An argument error with this message.
    pub fn args(message: impl Into<String>) -> GuestError {
        GuestError::Args(message.into())
    }

    /// A failure with this message.
    pub fn failed(message: impl Into<String>) -> GuestError {
        GuestError::Failed(message.into())
    }

    /// The status byte it travels with: 1, 2 or 3.
    pub fn status(&self) -> u8 {
        match self {
            GuestError::Args(_) => abi::STATUS_ARGS,
            GuestError::Failed(_) => abi::STATUS_FAILED,
            GuestError::Data(_) => abi::STATUS_DATA,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            GuestError::Args(m) | GuestError::Failed(m) | GuestError::Data(m) => m,
        }
    }
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for GuestError {}

/// [`Error::Arity`] and [`Error::BadArgument`] are argument errors (status 1), with the error's
/// `Display` as message; a missing key, a bad value and a wrong type keep their code (status 3,
/// the error's reply); every other error is a failure (status 2).
impl From<Error> for GuestError {
    fn from(e: Error) -> GuestError {
        match e {
            Error::Arity { .. } | Error::BadArgument { .. } => GuestError::Args(e.to_string()),
            Error::NoKey(_) | Error::BadValue { .. } | Error::WrongType(_) => {
                GuestError::Data(e.to_resp())
            }
            e => GuestError::Failed(e.to_string()),
        }
    }
}

/// A guest's declaration, as [`export!`] makes it (the static `AUTOLOC_GUEST` in the crate that
/// invokes it).
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    /// What callers call it by: 1 to 64 characters of `a-z`, `0-9`, `_`.
    pub name: &'static str,
    /// One line of usage.
    pub usage: &'static str,
    /// The kind of output it returns.
    pub output: fn() -> OutputKind,
    /// The function itself.
    pub entry: fn(&[Vec<u8>]) -> Result<Output, GuestError>,
    /// Whether the host may keep its instance for the next invocation by the same caller
    /// (`"reuse"` in `ABI.md`): globals then outlive a call. True unless the guest relies on
    /// fresh ones.
    pub reuse: bool,
}

impl Guest {
    /// The JSON object `autoloc_describe` returns.
    pub fn describe(&self) -> String {
        abi::describe_json(self.name, self.usage, (self.output)(), self.reuse)
    }

    /// Runs the entry on `args`. An output of another kind than declared, or `scores` not
    /// sorted by distinct ids, is a failure (status 2).
    pub fn run(&self, args: &[Vec<u8>]) -> Result<Output, GuestError> {
        let out = (self.entry)(args)?;
        let declared = (self.output)();
        if out.kind() != declared {
            return Err(GuestError::failed(format!(
                "{} returned a {} result but declares {}",
                self.name,
                out.kind().as_str(),
                declared.as_str()
            )));
        }
        // The ABI's `scores` are sorted by id: a result that is not would be malformed.
        if let Output::Scores(scores) = &out {
            if !scores.windows(2).all(|w| w[0].0 < w[1].0) {
                return Err(GuestError::failed(format!(
                    "{} returned scores that are not sorted by distinct ids",
                    self.name
                )));
            }
        }
        Ok(out)
    }

    /// Runs the entry on `args` and encodes the result as `autoloc_call` returns it: the status
    /// byte, then the output or the message.
    pub fn invoke(&self, args: &[Vec<u8>]) -> Vec<u8> {
        abi::encode_result(self.run(args))
    }
}

/// Declares the guest and generates the ABI's exports.
///
/// Two forms. With an entry of type `fn(&[Vec<u8>]) -> Result<Output, E>` where
/// `E: Into<GuestError>` (so [`GuestError`] or [`autoloc_functions::Error`]):
///
/// ```ignore
/// autoloc_guest::export! {
///     name: "friends_wasm",                       // a const &str: checked at compile time
///     usage: "friends_wasm <vertex> <n>",         // a const &str, one line
///     output: autoloc_guest::OutputKind::Scores,  // an OutputKind expression
///     entry: friends,                             // a function (or a closure without captures)
/// }
/// ```
///
/// Or with any [`Function`] value, run through [`HostStore`] (its output kind is the function's;
/// its argument errors name the guest instead of the function):
///
/// ```ignore
/// autoloc_guest::export! {
///     name: "khop_wasm",
///     usage: "khop_wasm <start> <k>",
///     function: autoloc_guest::functions::builtins::khop::Khop,
/// }
/// ```
///
/// Either form takes an optional last field `reuse: false` for a guest whose globals must start
/// fresh in every invocation; by default the host may keep an instance for the same caller's
/// next call (`ABI.md`, "How the host runs a guest"), about 4 us less per call.
///
/// Either form defines `static AUTOLOC_GUEST: Guest` in the calling module (handy for native
/// tests: `AUTOLOC_GUEST.run(&args)`), and, when built for `wasm32`, the five exports. Invoke it
/// once per crate.
#[macro_export]
macro_rules! export {
    (
        name: $name:expr,
        usage: $usage:expr,
        output: $output:expr,
        entry: $entry:expr
        $(, reuse: $reuse:expr)? $(,)?
    ) => {
        $crate::__export_guest! {
            $name,
            $usage,
            || $output,
            |args| $crate::abi::into_guest_result(($entry)(args)),
            true $(&& $reuse)?
        }
    };
    (
        name: $name:expr,
        usage: $usage:expr,
        function: $function:expr
        $(, reuse: $reuse:expr)? $(,)?
    ) => {
        $crate::__export_guest! {
            $name,
            $usage,
            || $crate::Function::output_kind(&$function),
            |args| $crate::run_function(&$function, $name, $usage, args),
            true $(&& $reuse)?
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_guest {
    ($name:expr, $usage:expr, $output:expr, $entry:expr, $reuse:expr) => {
        const _: () = $crate::abi::check_declaration($name, $usage);

        /// This crate's guest declaration, made by `autoloc_guest::export!`.
        #[allow(dead_code)]
        pub(crate) static AUTOLOC_GUEST: $crate::Guest = $crate::Guest {
            name: $name,
            usage: $usage,
            output: $output,
            entry: $entry,
            reuse: $reuse,
        };

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            /// Marks the ABI version; never called.
            #[unsafe(no_mangle)]
            pub extern "C" fn autoloc_abi_v1() {}

            /// `(ptr << 32) | len` of the JSON description.
            #[unsafe(no_mangle)]
            pub extern "C" fn autoloc_describe() -> i64 {
                $crate::abi::describe(&AUTOLOC_GUEST)
            }

            /// A buffer of `len` bytes for the arguments.
            #[unsafe(no_mangle)]
            pub extern "C" fn autoloc_alloc(len: i32) -> i32 {
                $crate::abi::alloc(len)
            }

            /// Runs the guest; `(ptr << 32) | len` of the result.
            #[unsafe(no_mangle)]
            pub extern "C" fn autoloc_call(args_ptr: i32, args_len: i32) -> i64 {
                $crate::abi::call(&AUTOLOC_GUEST, args_ptr, args_len)
            }

            /// Runs the guest on the `args_len` bytes of arguments it fetches from the host;
            /// `(ptr << 32) | len` of the result.
            #[unsafe(no_mangle)]
            pub extern "C" fn autoloc_run(args_len: i32) -> i64 {
                $crate::abi::run(&AUTOLOC_GUEST, args_len)
            }
        };
    };
}

// ---------------------------------------------------------------------------------------------
// The store, synchronously.

thread_local! {
    /// The buffer `read` replies land in, reused from one read to the next.
    static READ_BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The reply buffer's first size: a reply that does not fit costs a second host call (`take`),
/// a plain call (no suspension), cheaper than zeroing a larger buffer in every fresh instance
/// (and resetting the pages it dirtied when the instance is done): 16 KiB here cost a tenth of
/// a small `khop_wasm`.
const READ_BUF_MIN: usize = 1024;
/// A reply buffer grown past this is freed after use rather than kept for the next read.
const READ_BUF_KEEP: usize = 1024 * 1024;

/// Reads `keys` in one store access and calls `visit(index, value)` for each, in order, with
/// `None` for a missing key. The value is borrowed from the reply buffer: no copy. The first
/// error `visit` returns stops the visit and is returned. No keys, no store access.
pub fn read_each<K, E>(
    keys: &[K],
    visit: impl FnMut(usize, Option<&[u8]>) -> Result<(), E>,
) -> Result<(), E>
where
    K: AsRef<[u8]>,
{
    access(keys, host::read, 1, visit)
}

/// Reads the vertices stored at `keys` (AutoLoc's graph layouts, binary or JSON) in one store
/// access and calls `visit(index, neighbours)` for each, in order, with `None` for a missing
/// key. The host decodes them, natively: in a guest's `khop`, decoding JSON in WebAssembly took
/// longer than all else together. A value that is no vertex ends the invocation with an error
/// naming its key (as a store error does). The first error `visit` returns stops the visit and
/// is returned. No keys, no store access.
pub fn neighbours_each<K, E>(
    keys: &[K],
    mut visit: impl FnMut(usize, Option<Neighbours<'_>>) -> Result<(), E>,
) -> Result<(), E>
where
    K: AsRef<[u8]>,
{
    access(keys, host::neighbours, 4, |i, ids| {
        visit(i, ids.map(Neighbours::Ids))
    })
}

/// One store access through `import` (`read` or `neighbours`): the keys encoded, the reply
/// (fetched with `take` if it did not fit the reused buffer) walked by [`visit_reply`] with
/// entries of `unit`-byte items. No keys, no store access.
fn access<K: AsRef<[u8]>, E>(
    keys: &[K],
    import: fn(&[u8], &mut [u8]) -> usize,
    unit: usize,
    visit: impl FnMut(usize, Option<&[u8]>) -> Result<(), E>,
) -> Result<(), E> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut list = Vec::new();
    abi::encode_list(keys, &mut list);
    // Taken out, not borrowed: a `read` from inside `visit` just uses a buffer of its own.
    let mut buf = READ_BUF.take();
    if buf.len() < READ_BUF_MIN {
        buf.resize(READ_BUF_MIN, 0);
    }
    let n = import(&list, &mut buf);
    drop(list);
    if n > buf.len() {
        buf.resize(n, 0);
        let m = host::take(&mut buf[..n]);
        assert_eq!(
            m, n,
            "autoloc: take returned {m} bytes, the store access announced {n}"
        );
    }
    let result = visit_reply(&buf[..n], keys.len(), unit, visit);
    if buf.len() <= READ_BUF_KEEP {
        READ_BUF.set(buf);
    }
    result
}

/// Walks a reply of `count` entries, each a `u32` tag (`MISSING`, or the number of `unit`-byte
/// items that follow). The host is trusted: a malformed reply is a bug there, and traps.
fn visit_reply<E>(
    mut reply: &[u8],
    count: usize,
    unit: usize,
    mut visit: impl FnMut(usize, Option<&[u8]>) -> Result<(), E>,
) -> Result<(), E> {
    const BAD: &str = "autoloc: malformed reply from the host";
    for i in 0..count {
        let (tag, rest) = abi::split_u32(reply).expect(BAD);
        if tag == abi::MISSING {
            reply = rest;
            visit(i, None)?;
        } else {
            let len = (tag as usize).checked_mul(unit).expect(BAD);
            let (value, rest) = rest.split_at_checked(len).expect(BAD);
            reply = rest;
            visit(i, Some(value))?;
        }
    }
    assert!(reply.is_empty(), "{BAD}");
    Ok(())
}

/// Reads `keys` in one store access: their values in order, `None` for a missing key.
///
/// ```
/// # autoloc_guest::mock::insert("a", "1");
/// let values = autoloc_guest::read(&["a", "b"]);
/// assert_eq!(values, vec![Some(b"1".to_vec()), None]);
/// ```
pub fn read<K: AsRef<[u8]>>(keys: &[K]) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::with_capacity(keys.len());
    let visited: Result<(), Infallible> = read_each(keys, |_, v| {
        out.push(v.map(<[u8]>::to_vec));
        Ok(())
    });
    match visited {
        Ok(()) => out,
        Err(never) => match never {},
    }
}

/// Reads one key.
pub fn get(key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    read(&[key]).pop().flatten()
}

/// Sets `key` to `value`.
pub fn write(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
    host::write(key.as_ref(), value.as_ref());
}

/// A point where a long computation may be suspended or pushed back (storage-side, the budget
/// is also enforced without it).
pub fn checkpoint() {
    host::checkpoint();
}

// ---------------------------------------------------------------------------------------------
// The store as an `autoloc_functions::Store`.

/// The host's store as an [`autoloc_functions::Store`]: every future completes at once, so
/// [`block_on`] runs a [`Function`] to completion.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostStore;

impl Store for HostStore {
    fn read<'a>(&'a self, keys: &'a [Vec<u8>], visit: Visit<'a>) -> StoreFuture<'a, ()> {
        Box::pin(async move { read_each(keys, visit) })
    }

    fn read_neighbours<'a>(
        &'a self,
        keys: &'a [Vec<u8>],
        visit: NeighbourVisit<'a>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move { neighbours_each(keys, visit) })
    }

    fn write<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            write(key, value);
            Ok(())
        })
    }

    fn checkpoint(&self) -> StoreFuture<'_, ()> {
        Box::pin(async {
            checkpoint();
            Ok(())
        })
    }
}

/// Runs `function` against [`HostStore`] under the guest's `name` and `usage`: its argument
/// errors ([`Error::Arity`], [`Error::BadArgument`]) are renamed to them, so a caller of
/// `khop_wasm` reads `khop_wasm`'s usage, not `khop`'s.
pub fn run_function(
    function: &dyn Function,
    name: &'static str,
    usage: &'static str,
    args: &[Vec<u8>],
) -> Result<Output, GuestError> {
    block_on(function.call(&HostStore, args)).map_err(|e| {
        GuestError::from(match e {
            Error::Arity { .. } => Error::Arity {
                function: name,
                usage,
            },
            Error::BadArgument {
                name: arg, reason, ..
            } => Error::BadArgument {
                function: name,
                name: arg,
                reason,
            },
            e => e,
        })
    })
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
