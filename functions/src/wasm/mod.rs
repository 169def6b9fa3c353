//! User functions in WebAssembly: one host, on `wasmtime`, for both sides.
//!
//! A [`WasmFunction`] is a [`Function`] like a built-in: the module registers it in its registry
//! and runs it against the keyspace, the compute library registers the same bytes and runs them
//! against a data-plane link. The guest ABI is `functions/guest/ABI.md`.
//!
//! # How a guest reaches the store: one instance, suspended at each access
//! A guest is synchronous code; the [`Store`] is asynchronous (compute-side a read waits for a
//! reply while other invocations run on the same thread) and borrowed for one invocation. The
//! guest runs on a fiber of its own (wasmtime's async calls): an import leaves its request in
//! the invocation's [`Exchange`] and suspends the guest; the invocation's future performs the
//! request on the store (giving Redis's lock back storage-side, letting other invocations run
//! compute-side), leaves the answer, and resumes the guest where it stopped. One instance
//! serves the whole invocation.
//!
//! # Instances kept between invocations
//! Instantiating and resetting a pooled instance costs about 4 us, a third of a small
//! `khop_wasm`. A guest that declares `"reuse": true` (the SDK's guests do) keeps its instance
//! for the next invocation of the same function for the same principal ([`Store::principal`]:
//! storage-side the ACL user) on the same thread ([`idle`]). An instance is never handed to
//! another user or function, and it is dropped, not kept, when its call did not return (a trap,
//! a store error, a pushback) or its memory grew past [`IDLE_MEMORY_MAX`].
//!
//! # Limits
//! [`Limits`]: memory per instance (a [`wasmtime::StoreLimits`]), wasm stack, result size, and
//! CPU: an epoch ticker interrupts a guest at its deadline, the store's [`Store::deadline`]
//! (storage-side: the lock budget, then a [`Error::Pushback`]) or the compute-side limit; the
//! guest is suspended, the store checkpointed, and the guest resumed or dropped. The ticker
//! sleeps until the earliest deadline of the invocations running ([`Ticker`]): most invocations
//! end before theirs, and it does not wake for them.
//!
//! # Layout
//! - this file: the [`Host`] (engine, linker, compile cache) and [`WasmFunction`], which run
//!   each other (the host compiles and caches functions, a function runs on the host's engine).
//! - `pool.rs`: the epoch ticker and the pool's permits.
//! - `instance.rs`: one instance's state, its exchange with its invocation, a ready instance.
//! - `idle.rs`: instances kept between invocations ([`idle`]).
//! - `abi.rs`: the host's side of the ABI: exports, encodings; `abi_v1.rs` its constants, the
//!   one definition the guest SDK includes too.
//! - `imports.rs`: the store imports a guest may call.

mod abi;
pub mod abi_v1;
mod idle;
mod imports;
mod instance;
mod pool;

pub use imports::MAX_READ_KEYS;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, InstancePre, Linker, Module, Store as WasmStore, StoreLimitsBuilder, Trap,
    UpdateDeadline,
};

use crate::function::Invocation;
use crate::{Error, ErrorCode, Function, Output, OutputKind, Result, Store};
use abi::guest_error;
use abi_v1::{STATUS_ARGS, STATUS_DATA, STATUS_FAILED, STATUS_OK};
use idle::IDLE_SLOTS;
use instance::{lock, Entry, Exchange, Failed, Ready, Request, Run, Shared};
use pool::{Slots, Ticker};

/// What one guest may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Linear memory per instance, in bytes.
    pub memory: usize,
    /// Wasm stack, in bytes (deep recursion traps with a stack overflow past it).
    pub stack: usize,
    /// The largest result a guest may return, in bytes.
    pub result: usize,
    /// The largest module LOAD accepts, in bytes.
    pub module: usize,
    /// CPU time one compute-side invocation may take (storage-side the lock budget applies).
    pub compute_time: Duration,
    /// How a guest's memory accesses are checked: `true` (the default), by the hardware (each
    /// memory sits in a 4 GiB reservation with guard pages, and a stray access is a fault
    /// wasmtime's signal handler turns into a trap); `false`, by a bounds check compiled before
    /// every access. Signals make a guest's tight loops faster (`khop_wasm` on R-MAT
    /// in-process: 2.2x native against 2.5x with checks); they cost a new instance whose memory
    /// grows two `mprotect`s (its growth, and its slot's reset), which the SDK's allocator
    /// avoids up to 256 KiB (`functions/guest/ABI.md`). A process with a crash handler of its
    /// own puts a fall-through in front of it before the host starts, as the Redis module does.
    pub signal_traps: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 64 << 20,
            stack: 512 << 10,
            result: 16 << 20,
            module: 8 << 20,
            compute_time: Duration::from_secs(10),
            signal_traps: true,
        }
    }
}

/// Invocations that can run at once in the process, each on its own instance; more wait for one
/// ([`Slots`]).
pub const POOL_SLOTS: u32 = 256;

/// Pooled instances beyond [`POOL_SLOTS`], for LOAD's `autoloc_describe` runs, which do not wait.
const DESCRIBE_SLOTS: u32 = 16;

/// An instance whose memory grew past this is dropped after its call: an idle instance holds
/// its memory, and a reset (its next instance) rewrites every page of it.
const IDLE_MEMORY_MAX: usize = KEEP_RESIDENT;

/// Bytes of each pooled memory kept mapped and reset in place between instances (see
/// `pagemap_scan`). A 128 KiB budget, which gives a large invocation's pages back each time,
/// measured worse inside redis-server (`bench-wasm`, three runs each: R-MAT khop_wasm/khop
/// 3.77-3.97x against 3.17-3.39x, digest of 64 KiB values 0.94x against 0.90x native).
const KEEP_RESIDENT: usize = 4 << 20;

/// The process's one engine, its linker of the store ABI, its epoch ticker and compile cache.
pub struct Host {
    engine: Engine,
    linker: Linker<Run>,
    limits: Limits,
    ticker: Arc<Ticker>,
    slots: Slots,
    /// Compiled modules by content hash: loading the same bytes again costs a lookup.
    compiled: Mutex<HashMap<[u8; 32], Arc<WasmFunction>>>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("limits", &self.limits)
            .finish()
    }
}

static HOST: OnceLock<Host> = OnceLock::new();

/// Sets the limits of the process's host; fails once the host exists with other limits.
pub fn configure(limits: Limits) -> Result<&'static Host> {
    if HOST.get().is_none() {
        // An engine that cannot start is an error here (the module refuses to load), not a
        // panic inside redis-server.
        let host = Host::new(limits)
            .map_err(|e| Error::Registry(format!("the WebAssembly engine cannot start: {e:#}")))?;
        let _ = HOST.set(host);
    }
    let host = HOST.get().expect("set just above");
    if host.limits != limits {
        return Err(Error::Registry(
            "the WebAssembly host is already running with other limits".into(),
        ));
    }
    Ok(host)
}

/// The process's host (default [`Limits`] unless [`configure`] came first).
pub fn host() -> &'static Host {
    HOST.get_or_init(|| Host::new(Limits::default()).expect("the wasm engine starts"))
}

/// Whether the machine has swap: `/proc/swaps` lists a device or file (or cannot be read).
fn swap_on() -> bool {
    std::fs::read_to_string("/proc/swaps").map_or(true, |t| t.lines().count() > 1)
}

/// The content hash a module is cached and versioned by, as 64 hex digits.
pub fn content_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Host {
    fn new(limits: Limits) -> wasmtime::Result<Host> {
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .max_wasm_stack(limits.stack)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            .signals_based_traps(limits.signal_traps)
            // One guard region after each memory (a 32-bit index and wasmtime's default 32 MiB
            // guard then need no check at all); none before it, which only halves the address
            // space the pool reserves.
            .guard_before_linear_memory(false);
        if !limits.signal_traps {
            // Traps come from explicit checks, which make guard pages useless, and a guard
            // makes every instance's memory change protection: the next instance of a slot
            // that grew past its initial size shrinks it with mprotect, a TLB shootdown on
            // every core. Without a guard the slot keeps its pages read-write and is only
            // reset.
            config.memory_guard_size(0);
        }
        // Instances come from a pool of slots whose memory is kept mapped and reset, instead of
        // mapping and unmapping each one.
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        let total = POOL_SLOTS + DESCRIBE_SLOTS + IDLE_SLOTS;
        pool.total_core_instances(total)
            .total_memories(total)
            .total_tables(total)
            .max_memory_size(limits.memory)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            // Reset a slot's memory by rewriting the pages that are present (found with the
            // PAGEMAP_SCAN ioctl, Linux 6.7+), keeping them mapped: the next instance takes no
            // page faults there. Without write-protect tracking every present private page
            // counts as written, so a page stays on the bill of every later reset of its slot
            // once any instance touched it (within KEEP_RESIDENT; past it pages are given back
            // with madvise). Those are given back at once: batched, a slot waited in the queue
            // and the next invocations took colder ones, each with its own pages to reset (a
            // small khop_wasm after one from R-MAT's hub: 18 us, against 11). The scan skips
            // a page that is swapped out, which would then keep what the last instance wrote
            // (wasmtime#14357): with swap on, the slot is reset without the scan (its first
            // KEEP_RESIDENT bytes zeroed, the rest given back).
            .pagemap_scan(if swap_on() {
                wasmtime::Enabled::No
            } else {
                wasmtime::Enabled::Auto
            })
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .decommit_batch_size(1);
        // Map the data segments copy-on-write from the module's image: only the pages a guest
        // writes are copied, where copying them all cost 1 us of khop_wasm's 14 (33 KB of
        // read-only data); a page it never writes stays the image's and is never reset. An
        // image spans its segments: one only where that is at most twice their bytes or 64 KiB
        // (under wasmtime's default of 16 MiB, a module of a few hundred bytes with two bytes
        // 8 MiB apart held 8 MiB in its compiled image and 8 more in the memfd mapped from it,
        // past what the module size limit means to bound).
        config
            .memory_init_cow(true)
            .memory_guaranteed_dense_image_size(64 << 10);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        imports::link(&mut linker)?;
        let ticker = Ticker::start(engine.clone())?;
        Ok(Host {
            engine,
            linker,
            limits,
            ticker,
            slots: Slots::new(POOL_SLOTS as usize),
            compiled: Mutex::new(HashMap::new()),
        })
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Validates and compiles `bytes` and reads the function's description: a module that is
    /// not WebAssembly, imports anything but the store ABI, lacks an export, or describes itself
    /// badly is an error. The same bytes compile once per process.
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<WasmFunction>> {
        if bytes.len() > self.limits.module {
            return Err(Error::TooLarge {
                len: bytes.len(),
                max: self.limits.module,
            });
        }
        let hash = content_hash(bytes);
        if let Some(f) = self
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
        {
            return Ok(f.clone());
        }
        if !bytes.starts_with(b"\0asm") {
            return Err(guest_error("not a WebAssembly module (no \\0asm header)"));
        }
        let module = Module::new(&self.engine, bytes).map_err(|e| guest_error(format!("{e:#}")))?;
        if abi::has_start_function(bytes) {
            // It would run while an instance is created, where nothing bounds its time or
            // serves its store accesses.
            return Err(guest_error(
                "a start function is not allowed: the host runs a guest only through \
                 autoloc_describe and autoloc_call (functions/guest/ABI.md)",
            ));
        }
        let exports = abi::Exports::of(&module)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| guest_error(format!("{e:#}")))?;
        let mut f = WasmFunction {
            name: String::new(),
            usage: String::new(),
            kind: OutputKind::Value,
            reuse: false,
            hash,
            pre,
            exports,
        };
        let describe = f.describe()?;
        f.name = describe.name;
        f.usage = describe.usage;
        f.kind = describe.kind;
        f.reuse = describe.reuse;
        let f = Arc::new(f);
        let mut cache = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(hash, f.clone());
        Ok(f)
    }

    fn store(&self, run: Run) -> WasmStore<Run> {
        let mut store = WasmStore::new(&self.engine, run);
        store.limiter(|run| &mut run.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let mut x = lock(&ctx.data().exchange);
            if Instant::now() >= x.deadline && x.request.is_none() {
                // Suspend the guest for a checkpoint; its answer is not needed to resume.
                x.request = Some(Request::Checkpoint);
                Ok(UpdateDeadline::Yield(1))
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        store
    }
}

/// A user function: a compiled guest and its description.
pub struct WasmFunction {
    name: String,
    usage: String,
    kind: OutputKind,
    /// Whether its instances may serve more than one invocation (its `"reuse"`).
    reuse: bool,
    hash: [u8; 32],
    pre: InstancePre<Run>,
    exports: abi::Exports,
}

impl fmt::Debug for WasmFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmFunction")
            .field("name", &self.name)
            .field("hash", &crate::hex::encode(&self.hash[..8]))
            .finish()
    }
}

/// What a guest says of itself (`autoloc_describe`).
struct Description {
    name: String,
    usage: String,
    kind: OutputKind,
    reuse: bool,
}

/// Drops every instance kept between invocations (at each thread's next call): the Redis module
/// calls it when an ACL user is deleted or disabled, so that a user created again under the
/// same name never gets the old one's instance.
pub fn forget_kept_instances() {
    idle::forget();
}

/// Polls `fut` once: `Some` with its output if it is done, `None` if it is suspended.
async fn poll_once<F: std::future::Future + ?Sized>(
    fut: std::pin::Pin<&mut F>,
) -> Option<F::Output> {
    let mut fut = Some(fut);
    std::future::poll_fn(move |cx| {
        let f = fut.take().expect("polled once");
        std::task::Poll::Ready(match f.poll(cx) {
            std::task::Poll::Ready(out) => Some(out),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

impl WasmFunction {
    /// The SHA-256 of its module's bytes: its version.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    fn new_store(&self, deadline: Instant) -> (WasmStore<Run>, Shared) {
        let limits = host().limits;
        let exchange = Arc::new(Mutex::new(Exchange::new(deadline, Vec::new())));
        let store = host().store(Run {
            exchange: exchange.clone(),
            memory: None,
            taken: Vec::new(),
            args: Vec::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory)
                .instances(1)
                .tables(4)
                .memories(1)
                .trap_on_grow_failure(true)
                .build(),
        });
        (store, exchange)
    }

    /// A new instance in a store of its own, its ABI exports resolved (their types checked).
    async fn instantiate(&self, deadline: Instant) -> Result<Ready> {
        let (mut store, exchange) = self.new_store(deadline);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(trap_error)?;
        let memory = self.exports.memory(&instance, &mut store)?;
        store.data_mut().memory = Some(memory);
        // Only what the invocation calls is looked up and type-checked: a new instance per call
        // pays for each.
        let entry = match self.exports.run(&instance, &mut store)? {
            Some(run) => Entry::Run(run),
            None => Entry::AllocCall(
                (self.exports).func(&instance, &mut store, abi::Export::Alloc)?,
                (self.exports).func(&instance, &mut store, abi::Export::Call)?,
            ),
        };
        Ok(Ready {
            store,
            exchange,
            instance,
            memory,
            entry,
        })
    }

    /// Calls `autoloc_describe` and checks what it says.
    fn describe(&self) -> Result<Description> {
        let deadline = Instant::now() + Duration::from_secs(1);
        let _running = Running::start(deadline);
        let text = crate::exec::block_on(async {
            let mut ready = self.instantiate(deadline).await?;
            let describe = self
                .exports
                .func::<(), i64>(&ready.instance, &mut ready.store, abi::Export::Describe)
                .map_err(|e| guest_error(format!("autoloc_describe: {e}")))?;
            // Nothing serves a store access or a checkpoint here: either ends the LOAD (waiting
            // for its answer, it had spun forever on the caller's thread, Redis's main thread).
            let exchange = ready.exchange.clone();
            let packed = {
                let mut call = std::pin::pin!(describe.call_async(&mut ready.store, ()));
                loop {
                    if let Some(out) = poll_once(call.as_mut()).await {
                        break out.map_err(trap_error)?;
                    }
                    match lock(&exchange).request.take() {
                        Some(Request::Checkpoint) => {
                            return Err(guest_error("autoloc_describe: ran for more than 1 s"))
                        }
                        Some(_) => {
                            return Err(guest_error(
                                "autoloc_describe: may not use the store (it has none)",
                            ))
                        }
                        // Suspended by wasmtime itself: resume it.
                        None => {}
                    }
                }
            };
            abi::slice(ready.memory.data(&ready.store), packed, 64 << 10).map(<[u8]>::to_vec)
        })?;
        let v: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| guest_error(format!("autoloc_describe: not JSON: {e}")))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| guest_error(format!("autoloc_describe: no string field '{k}'")))
        };
        let name = field("name")?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(guest_error(format!(
                "bad function name '{}': 1 to 64 of a-z, 0-9, _",
                name.escape_debug()
            )));
        }
        let usage = field("usage")?;
        if usage.len() > 512 || usage.contains('\n') {
            return Err(guest_error("usage must be one line of at most 512 bytes"));
        }
        let output = field("output")?;
        let kind = OutputKind::parse(&output)
            .ok_or_else(|| guest_error(format!("unknown output kind '{output}'")))?;
        let reuse = match v.get("reuse") {
            None => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => {
                return Err(guest_error(
                    "autoloc_describe: 'reuse' is not true or false",
                ))
            }
        };
        Ok(Description {
            name,
            usage,
            kind,
            reuse,
        })
    }

    /// Hands the guest the arguments and runs it to its result: `autoloc_run`, which fetches
    /// them with `args`, or else `autoloc_alloc` and `autoloc_call` (a call into the guest more,
    /// about 0.1 us). An error of the outer `Result` leaves the instance unfit for another call;
    /// the inner one is the guest's answer.
    async fn run_guest(&self, ready: &mut Ready, args: &[Vec<u8>]) -> Result<Result<Output>> {
        let store = &mut ready.store;
        let mut encoded = std::mem::take(&mut store.data_mut().args);
        encoded.clear();
        abi::put_list(&mut encoded, args.iter().map(Vec::as_slice));
        let len = i32::try_from(encoded.len()).map_err(|_| guest_error("arguments too large"))?;
        let packed = match &ready.entry {
            Entry::Run(run) => {
                store.data_mut().args = encoded;
                run.call_async(&mut *store, len).await.map_err(trap_error)?
            }
            Entry::AllocCall(alloc, call) => {
                let at = alloc
                    .call_async(&mut *store, len)
                    .await
                    .map_err(trap_error)?;
                ready
                    .memory
                    .write(&mut *store, at as u32 as usize, &encoded)
                    .map_err(|_| guest_error("autoloc_alloc returned memory out of bounds"))?;
                store.data_mut().args = encoded;
                call.call_async(&mut *store, (at, len))
                    .await
                    .map_err(trap_error)?
            }
        };
        let result = abi::slice(ready.memory.data(&*store), packed, host().limits.result)?;
        Ok(match result.split_first() {
            Some((&STATUS_OK, out)) => Output::decode(self.kind, out)
                .map_err(|e| guest_error(format!("result does not match its kind: {e}"))),
            Some((&STATUS_ARGS, msg)) => Err(Error::Usage(format!(
                "{}: {}",
                self.name,
                String::from_utf8_lossy(msg)
            ))),
            Some((&STATUS_FAILED, msg)) => Err(guest_error(String::from_utf8_lossy(msg))),
            Some((&STATUS_DATA, reply)) => Err(data_error(&String::from_utf8_lossy(reply))),
            _ => Err(guest_error("result has no status byte")),
        })
    }

    async fn invoke(&self, store: &dyn Store, args: &[Vec<u8>]) -> Result<Output> {
        let now = Instant::now();
        let compute_deadline = now + host().limits.compute_time;
        let deadline = |store: &dyn Store| store.deadline().unwrap_or(compute_deadline);
        // Past the pool, wait for an instance (compute-side, other invocations run meanwhile).
        let _slot = host().slots.acquire().await;
        let first = deadline(store);
        let running = Running::start(first);
        let kept = self
            .reuse
            .then(|| idle::take(&self.hash, store.principal(), now));
        let (mut ready, principal) = match kept.flatten() {
            Some((mut ready, principal)) => {
                ready.rearm(first);
                (ready, Some(principal))
            }
            None => (self.instantiate(first).await?, None),
        };
        let exchange = ready.exchange.clone();
        let out = {
            let mut guest = std::pin::pin!(self.run_guest(&mut ready, args));
            loop {
                if let Some(out) = poll_once(guest.as_mut()).await {
                    break out?;
                }
                let request = lock(&exchange).request.take();
                // An import waits for its answer; a guest the epoch suspended does not, and an
                // answer left for it would be taken by its next import instead of that one's.
                let awaited = !matches!(request, Some(Request::Checkpoint));
                let answer = match request {
                    Some(Request::Read(keys)) => {
                        let mut encoded = lock(&exchange).buffer();
                        store
                            .read(&keys, &mut |_, v| {
                                abi::put_value(&mut encoded, v);
                                Ok(())
                            })
                            .await
                            .map(|()| encoded)
                    }
                    Some(Request::Neighbours(keys)) => {
                        let mut encoded = lock(&exchange).buffer();
                        store
                            .read_neighbours(&keys, &mut |_, neighbours| {
                                abi::put_neighbours(&mut encoded, neighbours)
                            })
                            .await
                            .map(|()| encoded)
                    }
                    Some(Request::Write(key, value)) => {
                        store.write(&key, &value).await.map(|()| Vec::new())
                    }
                    Some(Request::Checkpoint) => {
                        // Storage-side the store answers with a pushback once the budget is spent.
                        store.checkpoint().await?;
                        if store.deadline().is_none() && Instant::now() >= compute_deadline {
                            return Err(guest_error(format!(
                                "ran for more than the compute-side limit of {} ms",
                                host().limits.compute_time.as_millis()
                            )));
                        }
                        Ok(Vec::new())
                    }
                    // Suspended by wasmtime itself: resume it.
                    None => continue,
                };
                let next = deadline(store);
                running.set(next);
                let mut x = lock(&exchange);
                x.deadline = next;
                if awaited {
                    x.answer = Some(answer);
                }
            }
        };
        // The call returned: the instance is whole, fit for the next one if small enough.
        if self.reuse && ready.memory.data_size(&ready.store) <= IDLE_MEMORY_MAX {
            let principal = principal.unwrap_or_else(|| store.principal().into());
            idle::keep(self.hash, principal, ready, now);
        }
        out
    }
}

/// A guest's failure on what it read (ABI status 3, an error reply): its code if it is one of
/// a read's (`NOKEY`, `BADVALUE`, `WRONGTYPE`), else a `GUEST` error. A guest must not pass for
/// the host: a `PUSHBACK` would send its caller off to replay it, a `NOPERM` blame an ACL.
fn data_error(reply: &str) -> Error {
    let e = Error::from_resp(reply);
    match e.code() {
        ErrorCode::NoKey | ErrorCode::BadValue | ErrorCode::WrongType => e,
        _ => guest_error(reply),
    }
}

/// A wasmtime error as the caller sees it: a store error passed on, or a trap reported.
fn trap_error(e: wasmtime::Error) -> Error {
    if let Some(Failed(err)) = e.downcast_ref::<Failed>() {
        return err.clone();
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => guest_error("trap: wasm stack overflow (recursion too deep)"),
        Some(Trap::MemoryOutOfBounds) => guest_error("trap: out-of-bounds memory access"),
        Some(Trap::UnreachableCodeReached) => guest_error("trap: unreachable executed"),
        Some(Trap::AllocationTooLarge) => guest_error("trap: memory limit reached"),
        Some(trap) => guest_error(format!("trap: {trap}")),
        None => {
            let text = format!("{e:#}");
            if text.contains("forcing trap when growing memory") {
                guest_error("trap: memory limit reached (memory.grow past the cap)")
            } else {
                guest_error(text)
            }
        }
    }
}

/// A running invocation's deadline, known to the ticker while alive.
struct Running(usize);

impl Running {
    fn start(deadline: Instant) -> Running {
        Running(host().ticker.add(deadline))
    }

    fn set(&self, deadline: Instant) {
        host().ticker.set(self.0, deadline);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        host().ticker.remove(self.0);
    }
}

impl Function for WasmFunction {
    fn name(&self) -> &str {
        &self.name
    }
    fn usage(&self) -> &str {
        &self.usage
    }
    fn output_kind(&self) -> OutputKind {
        self.kind
    }
    fn version(&self) -> Option<[u8; 32]> {
        Some(self.hash)
    }
    fn check(&self, _args: &[Vec<u8>]) -> Result<()> {
        // The guest checks its arguments when it runs, before its first store access.
        Ok(())
    }
    fn call<'a>(&'a self, store: &'a dyn Store, args: &'a [Vec<u8>]) -> Invocation<'a> {
        Box::pin(self.invoke(store, args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    fn poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        std::pin::Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }

    /// A data segment: active in memory 0, `i32.const 0`, one byte.
    const BYTE_AT_0: &[u8] = &[0, 0x41, 0, 0x0b, 1, 0x5a];
    /// The same at `i32.const 8 << 20` (signed LEB128: 0x80 0x80 0x80 0x04).
    const BYTE_AT_8_MIB: &[u8] = &[0, 0x41, 0x80, 0x80, 0x80, 0x04, 0x0b, 1, 0x5a];

    /// A module of one memory of 129 pages (8 MiB and a page) with `segments` (few and short:
    /// each count and length fits one LEB128 byte).
    fn module_with(segments: &[&[u8]]) -> Vec<u8> {
        // One memory, no maximum, at least 129 pages.
        module(&[(5, &[1, 0, 0x81, 0x01]), (11, &vector(segments))])
    }

    /// A module of these sections (id and content), in order.
    fn module(sections: &[(u8, &[u8])]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        for (id, content) in sections {
            m.extend(section(*id, content));
        }
        m
    }

    /// A vector as a module encodes it: its count (one LEB128 byte: under 128), then its
    /// entries.
    fn vector<E: std::borrow::Borrow<[u8]>>(entries: &[E]) -> Vec<u8> {
        assert!(entries.len() < 128);
        [&[entries.len() as u8][..], &entries.concat()].concat()
    }

    /// The export section of a guest whose function 0 is its import: memory 0 and functions 1
    /// to 4 under the ABI's required names, in their order, and with `run` function 5 as
    /// `autoloc_run`.
    fn abi_exports(run: bool) -> Vec<u8> {
        let mut exports: Vec<Vec<u8>> = (abi_v1::EXPORTS.iter().enumerate())
            .map(|(i, export)| {
                // The memory (kind 2) and functions (kind 0).
                let (kind, index) = if i == abi::Export::Memory as usize {
                    (2, 0)
                } else {
                    (0, i as u8)
                };
                [name(export), vec![kind, index]].concat()
            })
            .collect();
        if run {
            exports.push([name(abi_v1::RUN), vec![0, 5]].concat());
        }
        vector(&exports)
    }

    /// A section: its id, its length (one LEB128 byte: under 128) and its content.
    fn section(id: u8, content: &[u8]) -> Vec<u8> {
        assert!(content.len() < 128);
        [&[id, content.len() as u8][..], content].concat()
    }

    /// A guest with every ABI export, importing `autoloc.read`, whose `autoloc_describe` runs
    /// `describe` (a function body of type `() -> i64`) and, with `start`, a start function
    /// running that body (of type `() -> ()`).
    fn guest_with(describe: &[u8], start: Option<&[u8]>) -> Vec<u8> {
        let types: &[u8] = &[
            5, // read, () -> (), () -> i64, (i32) -> i32, (i32, i32) -> i64
            0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 1, 0x7f, 0x60, 0, 0, 0x60, 0, 1, 0x7e, 0x60, 1, 0x7f,
            1, 0x7f, 0x60, 2, 0x7f, 0x7f, 1, 0x7e,
        ];
        let import = [&[1][..], &name("autoloc"), &name("read"), &[0, 0]].concat();
        // Functions 1..=5: abi_v1, describe, alloc, call, and the start function.
        let functions: &[u8] = &[5, 1, 2, 3, 4, 1];
        let code = vector(&[
            body(&[0, 0x0b]),
            body(describe),
            body(&[0, 0x41, 0, 0x0b]),
            body(&[0, 0x42, 0, 0x0b]),
            body(start.unwrap_or(&[0, 0x0b])),
        ]);
        let exports = abi_exports(false);
        let mut sections: Vec<(u8, &[u8])> = vec![
            (1, types),
            (2, &import),
            (3, functions),
            (5, &[1, 0, 1]),
            (7, &exports),
        ];
        if start.is_some() {
            sections.push((8, &[5]));
        }
        sections.push((10, &code));
        module(&sections)
    }

    /// A name as a module encodes it: its length (one LEB128 byte: under 128), then its bytes.
    fn name(n: &str) -> Vec<u8> {
        [&[n.len() as u8][..], n.as_bytes()].concat()
    }

    /// A function body: its length (one LEB128 byte: under 128), then the body.
    fn body(b: &[u8]) -> Vec<u8> {
        [&[b.len() as u8][..], b].concat()
    }

    /// Compiles `bytes` on another thread: its error, or a panic if it took past 30 s.
    fn compile_error(bytes: Vec<u8>) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(host().compile(&bytes).map(drop));
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(r) => r.expect_err("a bad guest loaded").to_string(),
            Err(_) => panic!("LOAD of a bad guest did not end within 30 s"),
        }
    }

    /// Loop forever: `loop br 0 end` (then `unreachable`, which types as any result).
    const SPIN: &[u8] = &[0, 0x03, 0x40, 0x0c, 0, 0x0b, 0x00, 0x0b];
    /// `read(0, 0, 0, 0)`, then a result of 0 (`() -> i64`).
    const READ: &[u8] = &[
        0, 0x41, 0, 0x41, 0, 0x41, 0, 0x41, 0, 0x10, 0, 0x1a, 0x42, 0, 0x0b,
    ];

    #[test]
    fn a_guest_describing_itself_gets_one_second_and_no_store() {
        let e = compile_error(guest_with(SPIN, None));
        assert!(e.contains("autoloc_describe") && e.contains("1 s"), "{e}");
        let e = compile_error(guest_with(READ, None));
        assert!(e.contains("autoloc_describe") && e.contains("store"), "{e}");
    }

    #[test]
    fn a_list_past_its_bound_is_counted_without_being_decoded() {
        let mut list = Vec::new();
        abi::put_list(&mut list, [&b"a"[..], b"", b"xyz"].into_iter());
        assert_eq!(abi::list_len(&list), Some(3));
        assert_eq!(abi::list_len(&[]), Some(0));
        assert_eq!(abi::list_len(&list[..list.len() - 1]), None);
        assert_eq!(abi::list_len(&[1, 0, 0]), None);
        assert_eq!(
            abi::get_list(&list, 3),
            Some(Ok(vec![b"a".to_vec(), vec![], b"xyz".to_vec()]))
        );
        assert_eq!(abi::get_list(&list, 1), Some(Err(3)));
        assert_eq!(abi::get_list(&list[..list.len() - 1], 1), None);
    }

    #[test]
    fn a_start_function_is_refused_at_load() {
        let e = compile_error(guest_with(&[0, 0x42, 0, 0x0b], Some(SPIN)));
        assert!(e.contains("start function"), "{e}");
        let e = compile_error(guest_with(&[0, 0x42, 0, 0x0b], Some(&[0, 0x0b])));
        assert!(e.contains("start function"), "{e}");
    }

    /// Signed LEB128, as `i32.const` and `i64.const` take it.
    fn sleb(mut v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0) {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    /// A working guest without the SDK, importing `autoloc.args`. Its result `[0, 0]` (nothing)
    /// sits at 0 and its description (`function`, reusable) at 16; `autoloc_alloc` hands out 1024.
    /// With `run`, it also exports `autoloc_run`, whose body (type `(i32) -> i64`) is `run`.
    fn guest_without_sdk(function: &str, run: Option<&[u8]>) -> Vec<u8> {
        let json = format!(
            r#"{{"name":"{function}","usage":"{function}","output":"value","reuse":true}}"#
        );
        let types: &[u8] = &[
            // () -> (), () -> i64, (i32) -> i32, (i32, i32) -> i64, (i32) -> i64, and the
            // import's (i32, i32) -> i32
            6, 0x60, 0, 0, 0x60, 0, 1, 0x7e, 0x60, 1, 0x7f, 1, 0x7f, 0x60, 2, 0x7f, 0x7f, 1, 0x7e,
            0x60, 1, 0x7f, 1, 0x7e, 0x60, 2, 0x7f, 0x7f, 1, 0x7f,
        ];
        // Function 0 is the import `args`; functions 1..=4 are abi_v1, describe, alloc, call,
        // and 5 autoloc_run, with `run`, of type 4.
        let import = [&[1][..], &name("autoloc"), &name("args"), &[0, 5]].concat();
        let packed =
            |at: i64, len: usize| [&[0, 0x42][..], &sleb(at << 32 | len as i64), &[0x0b]].concat();
        let mut types_of = vec![vec![0], vec![1], vec![2], vec![3]];
        let mut bodies = vec![
            body(&[0, 0x0b]),
            body(&packed(16, json.len())),
            body(&[0, 0x41, 0x80, 0x08, 0x0b]),
            body(&packed(0, 2)),
        ];
        if let Some(run) = run {
            types_of.push(vec![4]);
            bodies.push(body(run));
        }
        let data = [
            &[2, 0, 0x41, 0, 0x0b, 2, 0, 0][..],
            &[0, 0x41, 16, 0x0b, json.len() as u8],
            json.as_bytes(),
        ]
        .concat();
        module(&[
            (1, types),
            (2, &import),
            (3, &vector(&types_of)),
            (5, &[1, 0, 1]),
            (7, &abi_exports(run.is_some())),
            (10, &vector(&bodies)),
            (11, &data),
        ])
    }

    fn call_guest(bytes: &[u8], args: &[&[u8]]) -> Result<Output> {
        let f = host().compile(bytes)?;
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        crate::exec::block_on(f.call(&crate::MemStore::new(), &args))
    }

    #[test]
    fn a_guest_without_autoloc_run_is_handed_its_arguments_through_autoloc_alloc() {
        let bytes = guest_without_sdk("v1_only", None);
        for _ in 0..2 {
            assert_eq!(call_guest(&bytes, &[b"x"]).unwrap(), Output::Value(None));
        }
    }

    #[test]
    fn autoloc_run_fetches_the_arguments_with_args_and_a_short_buffer_is_an_error() {
        // `args(32, n)`, dropped, then the result at 0: `n` is the buffer's size.
        let run = |cap: u8| {
            [
                &[0, 0x41, 32, 0x41, cap, 0x10, 0, 0x1a, 0x42][..],
                &sleb(2),
                &[0x0b],
            ]
            .concat()
        };
        // The list of one argument "x": 5 bytes.
        let fits = guest_without_sdk("run_fits", Some(&run(5)));
        assert_eq!(call_guest(&fits, &[b"x"]).unwrap(), Output::Value(None));
        let short = guest_without_sdk("run_short", Some(&run(4)));
        let e = call_guest(&short, &[b"x"]).unwrap_err().to_string();
        assert!(e.contains("args: a buffer of 4 bytes for 5 bytes"), "{e}");
    }

    #[test]
    fn neighbours_reach_a_guest_as_the_abi_encodes_them_whatever_their_layout() {
        use crate::graph::{encode_adjacency, Neighbours};
        // The ABI's encoding, written id by id.
        let want = |ids: &[u32]| {
            let mut out = (ids.len() as u32).to_le_bytes().to_vec();
            ids.iter().for_each(|id| out.extend(id.to_le_bytes()));
            out
        };
        let put = |n: Option<Neighbours<'_>>| {
            let mut out = Vec::new();
            abi::put_neighbours(&mut out, n).map(|()| out)
        };
        let binary = encode_adjacency(&[9, 2, 70_000]);
        let value = |value| Some(Neighbours::Value { key: b"1", value });
        assert_eq!(put(value(&binary)).unwrap(), want(&[2, 9, 70_000]));
        assert_eq!(
            put(value(br#"{"neigh": ["4", 5]}"#)).unwrap(),
            want(&[4, 5])
        );
        let ids = [3u8, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff];
        assert_eq!(put(Some(Neighbours::Ids(&ids))).unwrap(), want(&[3, 1]));
        assert_eq!(put(None).unwrap(), u32::MAX.to_le_bytes());
        assert!(put(value(b"junk")).is_err());
    }

    #[test]
    fn sparse_data_segments_get_no_copy_on_write_image() {
        let engine = &host().engine;
        let size = |bytes: &[u8]| {
            Module::new(engine, bytes)
                .unwrap()
                .serialize()
                .unwrap()
                .len()
        };
        // Two bytes 8 MiB apart: an image would hold the 8 MiB between them.
        let sparse = size(&module_with(&[BYTE_AT_0, BYTE_AT_8_MIB]));
        let one = size(&module_with(&[BYTE_AT_0]));
        assert!(
            sparse < one + (64 << 10),
            "{sparse} B compiled against {one} B"
        );
    }

    #[test]
    fn a_guest_keeps_only_the_codes_of_what_a_read_found() {
        for (reply, code) in [
            ("NOKEY no such key '9'", ErrorCode::NoKey),
            ("BADVALUE bad value at '2': junk", ErrorCode::BadValue),
            ("WRONGTYPE '11' holds another type", ErrorCode::WrongType),
            ("PUSHBACK budget 1 us spent", ErrorCode::Guest),
            ("NOPERM no permissions", ErrorCode::Guest),
            ("BUSY later", ErrorCode::Guest),
            ("no code at all", ErrorCode::Guest),
            ("", ErrorCode::Guest),
        ] {
            let e = data_error(reply);
            assert_eq!(e.code(), code, "{reply}");
            if code == ErrorCode::Guest {
                assert!(e.to_string().contains(reply), "{e}");
            }
        }
    }

    #[test]
    fn past_the_pool_invocations_wait_in_order_and_permits_are_handed_on() {
        let slots = Slots::new(2);
        let a = poll(&mut slots.acquire());
        let b = poll(&mut slots.acquire());
        assert!(a.is_ready() && b.is_ready());
        let (mut c, mut d) = (slots.acquire(), slots.acquire());
        assert!(poll(&mut c).is_pending());
        assert!(poll(&mut d).is_pending());
        // A newcomer does not overtake the queue, even once a permit is free.
        drop(a);
        let mut e = slots.acquire();
        assert!(poll(&mut e).is_pending());
        assert!(poll(&mut d).is_pending(), "the first in line gets it");
        let Poll::Ready(c) = poll(&mut c) else {
            panic!("c was first in line")
        };
        // d is dropped after being handed b's permit: the permit goes on to e.
        drop(b);
        drop(d);
        let Poll::Ready(e) = poll(&mut e) else {
            panic!("e was next")
        };
        drop((c, e));
        assert_eq!(slots.lock().free, 2);
        assert!(slots.lock().waiting.is_empty() && slots.lock().queue.is_empty());
    }
}
