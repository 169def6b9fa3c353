//! User functions in WebAssembly: one host, on `wasmtime`, for both sides.
//!
//! A [`WasmFunction`] is a [`Function`] like a built-in: the module registers it in its registry
//! and runs it against the keyspace, the compute library registers the same bytes and runs them
//! against a data-plane link. The guest ABI is `functions/guest/ABI.md`.
//!
//! # How a guest reaches the store: a journal, replayed
//! A guest is synchronous code; the [`Store`] is asynchronous (compute-side a read waits for a
//! reply, while other invocations run on the same thread) and borrowed for one invocation. So
//! the guest never touches the store. An invocation is a loop of *runs* of a fresh instance
//! against a [`Journal`] of the store operations made so far:
//! - a `read` the journal answers is answered at once, in place;
//! - a `read` past the journal's end ends the run (a trap the host makes): the host performs it
//!   on the store (asynchronously, giving the lock back storage-side, letting other invocations
//!   run compute-side), appends the values, and starts the next run;
//! - a `write` is appended and applied to the store before the next read or the end;
//! - a run that returns ends the invocation.
//!
//! Runs are deterministic replays of one another, checked operation by operation. A function
//! with `n` store accesses takes `n + 1` runs; each earlier run redoes only the work before its
//! last read, which for the graph functions here is small next to the last step.
//!
//! # Limits
//! [`Limits`]: memory per instance (a [`wasmtime::StoreLimits`]), wasm stack, result size, and
//! CPU: an epoch ticker interrupts a run at its deadline, the store's [`Store::time_left`]
//! (storage-side: the lock budget, then a [`Error::Pushback`]) or the compute-side limit.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{
    Caller, Config, Engine, InstancePre, Linker, Memory, Module, Store as WasmStore, StoreLimits,
    StoreLimitsBuilder, Trap, UpdateDeadline,
};

use crate::function::Invocation;
use crate::{Error, Function, Output, OutputKind, Result, Store};

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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 64 << 20,
            stack: 512 << 10,
            result: 16 << 20,
            module: 8 << 20,
            compute_time: Duration::from_secs(10),
        }
    }
}

/// How often the epoch ticker interrupts running guests to look at their deadlines.
const TICK: Duration = Duration::from_micros(100);

/// The process's one engine, its linker of the store ABI, its epoch ticker and compile cache.
pub struct Host {
    engine: Engine,
    linker: Linker<Run>,
    limits: Limits,
    /// Invocations running now: the ticker sleeps when there are none.
    running: Arc<AtomicUsize>,
    ticker: std::thread::Thread,
    /// Compiled modules by content hash: loading the same bytes again costs a lookup.
    compiled: Mutex<HashMap<[u8; 32], Arc<WasmFunction>>>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host").field("limits", &self.limits).finish()
    }
}

static HOST: OnceLock<Host> = OnceLock::new();

/// Sets the limits of the process's host; fails once the host exists with other limits.
pub fn configure(limits: Limits) -> Result<&'static Host> {
    let host = HOST.get_or_init(|| Host::new(limits).expect("the wasm engine starts"));
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

/// The content hash a module is cached and versioned by, as 64 hex digits.
pub fn content_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Hex of a hash.
pub fn hex(hash: &[u8]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn guest_error(reason: impl fmt::Display) -> Error {
    Error::Guest(reason.to_string())
}

impl Host {
    fn new(limits: Limits) -> wasmtime::Result<Host> {
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .max_wasm_stack(limits.stack)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        abi::link(&mut linker)?;
        let running = Arc::new(AtomicUsize::new(0));
        let ticker = {
            let (engine, running) = (engine.clone(), running.clone());
            std::thread::Builder::new()
                .name("autoloc-wasm-epoch".into())
                .spawn(move || loop {
                    if running.load(Ordering::Acquire) == 0 {
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                })?
                .thread()
                .clone()
        };
        Ok(Host {
            engine,
            linker,
            limits,
            running,
            ticker,
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
        for export in abi::EXPORTS {
            if module.get_export(export).is_none() {
                return Err(guest_error(format!(
                    "the module does not export '{export}' (see functions/guest/ABI.md)"
                )));
            }
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| guest_error(format!("{e:#}")))?;
        let mut f = WasmFunction {
            name: String::new(),
            usage: String::new(),
            kind: OutputKind::Value,
            hash,
            pre,
        };
        let describe = f.describe()?;
        f.name = describe.0;
        f.usage = describe.1;
        f.kind = describe.2;
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
            if Instant::now() >= ctx.data().deadline {
                Err(Deadline.into())
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        store
    }
}

/// A run ran past its deadline.
#[derive(Debug)]
struct Deadline;

impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ran past its deadline")
    }
}

impl std::error::Error for Deadline {}

/// A run reached a read the journal cannot answer yet: the host performs it and runs again.
#[derive(Debug)]
struct Suspend;

impl fmt::Display for Suspend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("suspended at a store read")
    }
}

impl std::error::Error for Suspend {}

/// A store error that ends the invocation (it reaches the caller unchanged).
#[derive(Debug)]
struct Failed(Error);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Failed {}

/// One store operation of an invocation, as the journal keeps it.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    /// Keys read and the values read (`None`: no such key).
    Read(Vec<Vec<u8>>, Vec<Option<Vec<u8>>>),
    /// A key written and its value; `applied` once the store has it.
    Write(Vec<u8>, Vec<u8>, bool),
}

/// The store operations of one invocation so far, in order.
#[derive(Debug, Default)]
struct Journal {
    ops: Vec<Op>,
}

/// The state of one run: what the imports see.
struct Run {
    journal: Journal,
    /// The next operation of this run.
    cursor: usize,
    /// Keys of the read this run stopped at.
    pending: Option<Vec<Vec<u8>>>,
    /// The last read's result, when it did not fit the guest's buffer (`take` copies it).
    taken: Vec<u8>,
    limits: StoreLimits,
    deadline: Instant,
}

/// A user function: a compiled guest and its description.
pub struct WasmFunction {
    name: String,
    usage: String,
    kind: OutputKind,
    hash: [u8; 32],
    pre: InstancePre<Run>,
}

impl fmt::Debug for WasmFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmFunction")
            .field("name", &self.name)
            .field("hash", &hex(&self.hash[..8]))
            .finish()
    }
}

/// How a run ended.
enum Step {
    Done(Output),
    Read(Vec<Vec<u8>>),
    Deadline,
}

impl WasmFunction {
    /// The SHA-256 of its module's bytes: its version.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    fn new_run(&self, journal: Journal, deadline: Instant) -> WasmStore<Run> {
        let limits = host().limits;
        host().store(Run {
            journal,
            cursor: 0,
            pending: None,
            taken: Vec::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory)
                .instances(1)
                .tables(4)
                .memories(1)
                .trap_on_grow_failure(true)
                .build(),
            deadline,
        })
    }

    /// Calls `autoloc_describe` and checks what it says.
    fn describe(&self) -> Result<(String, String, OutputKind)> {
        let _running = Running::start();
        let mut store = self.new_run(Journal::default(), Instant::now() + Duration::from_secs(1));
        let instance = self.pre.instantiate(&mut store).map_err(trap_error)?;
        let describe = instance
            .get_typed_func::<(), i64>(&mut store, "autoloc_describe")
            .map_err(|e| guest_error(format!("autoloc_describe: {e:#}")))?;
        let packed = describe.call(&mut store, ()).map_err(trap_error)?;
        let memory = abi::memory(&instance, &mut store)?;
        let text = abi::slice(memory.data(&store), packed, 64 << 10)?;
        let v: serde_json::Value = serde_json::from_slice(text)
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
        let kind = match field("output")?.as_str() {
            "ids" => OutputKind::Ids,
            "text" => OutputKind::Text,
            "scores" => OutputKind::Scores,
            "sum" => OutputKind::Sum,
            "value" => OutputKind::Value,
            other => return Err(guest_error(format!("unknown output kind '{other}'"))),
        };
        Ok((name, usage, kind))
    }

    /// One run against `journal`: returns the journal and how the run ended.
    fn run_once(
        &self,
        args: &[Vec<u8>],
        journal: Journal,
        deadline: Instant,
    ) -> (Journal, Result<Step>) {
        let mut store = self.new_run(journal, deadline);
        let step = self.run_in(&mut store, args);
        let run = store.into_data();
        let step = match step {
            Err(Interrupted::Suspend) => match run.pending {
                Some(keys) => Ok(Step::Read(keys)),
                None => Err(guest_error("suspended with no read pending")),
            },
            Err(Interrupted::Deadline) => Ok(Step::Deadline),
            Err(Interrupted::Error(e)) => Err(e),
            Ok(out) => {
                if run.cursor < run.journal.ops.len() {
                    Err(guest_error(
                        "not deterministic: a run ended before the operations an earlier run made",
                    ))
                } else {
                    Ok(Step::Done(out))
                }
            }
        };
        (run.journal, step)
    }

    fn run_in(&self, store: &mut WasmStore<Run>, args: &[Vec<u8>]) -> Result<Output, Interrupted> {
        let instance = self.pre.instantiate(&mut *store).map_err(interrupted)?;
        let memory = abi::memory(&instance, &mut *store).map_err(Interrupted::Error)?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut *store, "autoloc_alloc")
            .map_err(interrupted)?;
        let call = instance
            .get_typed_func::<(i32, i32), i64>(&mut *store, "autoloc_call")
            .map_err(interrupted)?;
        let mut encoded = Vec::new();
        abi::put_list(&mut encoded, args.iter().map(Vec::as_slice));
        let len = i32::try_from(encoded.len())
            .map_err(|_| Interrupted::Error(guest_error("arguments too large")))?;
        let at = alloc.call(&mut *store, len).map_err(interrupted)?;
        memory
            .write(&mut *store, at as u32 as usize, &encoded)
            .map_err(|_| {
                Interrupted::Error(guest_error("autoloc_alloc returned memory out of bounds"))
            })?;
        let packed = call.call(&mut *store, (at, len)).map_err(interrupted)?;
        let result = abi::slice(memory.data(&*store), packed, host().limits.result)
            .map_err(Interrupted::Error)?;
        match result.split_first() {
            Some((0, out)) => Output::decode(self.kind, out).map_err(|e| {
                Interrupted::Error(guest_error(format!("result does not match its kind: {e}")))
            }),
            Some((1, msg)) => Err(Interrupted::Error(Error::Usage(format!(
                "{}: {}",
                self.name,
                String::from_utf8_lossy(msg)
            )))),
            Some((2, msg)) => Err(Interrupted::Error(guest_error(String::from_utf8_lossy(
                msg,
            )))),
            _ => Err(Interrupted::Error(guest_error("result has no status byte"))),
        }
    }

    async fn invoke(&self, store: &dyn Store, args: &[Vec<u8>]) -> Result<Output> {
        let started = Instant::now();
        let compute_limit = host().limits.compute_time;
        let mut journal = Journal::default();
        loop {
            let deadline = match store.time_left() {
                Some(left) => Instant::now() + left,
                None => started + compute_limit,
            };
            let (back, step) = {
                let _running = Running::start();
                self.run_once(args, journal, deadline)
            };
            journal = back;
            let step = step?;
            apply_writes(store, &mut journal).await?;
            match step {
                Step::Done(out) => return Ok(out),
                Step::Read(keys) => {
                    let mut values = vec![None; keys.len()];
                    store
                        .read(&keys, &mut |i, v| {
                            values[i] = v.map(<[u8]>::to_vec);
                            Ok(())
                        })
                        .await?;
                    journal.ops.push(Op::Read(keys, values));
                }
                Step::Deadline => {
                    // Storage-side the store answers with a pushback once the budget is spent.
                    store.checkpoint().await?;
                    if store.time_left().is_some() {
                        // The budget is not spent (the deadline passed while the lock was given
                        // back): run again from the journal.
                        continue;
                    }
                    return Err(guest_error(format!(
                        "ran for more than the compute-side limit of {} ms",
                        compute_limit.as_millis()
                    )));
                }
            }
        }
    }
}

/// Applies the journal's writes the store does not have yet, in order.
async fn apply_writes(store: &dyn Store, journal: &mut Journal) -> Result<()> {
    for op in &mut journal.ops {
        if let Op::Write(key, value, applied) = op {
            if !*applied {
                store.write(key, value).await?;
                *applied = true;
            }
        }
    }
    Ok(())
}

/// Why a run stopped before returning.
enum Interrupted {
    Suspend,
    Deadline,
    Error(Error),
}

/// Sorts a wasmtime error out: the host's own suspension and deadline, a store error to pass
/// on, or a trap to report.
fn interrupted(e: wasmtime::Error) -> Interrupted {
    if e.downcast_ref::<Suspend>().is_some() {
        Interrupted::Suspend
    } else if e.downcast_ref::<Deadline>().is_some() {
        Interrupted::Deadline
    } else {
        Interrupted::Error(trap_error(e))
    }
}

/// A trap or host failure as the caller sees it.
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

/// Counts a running invocation for the epoch ticker while alive.
struct Running;

impl Running {
    fn start() -> Running {
        let host = host();
        if host.running.fetch_add(1, Ordering::AcqRel) == 0 {
            host.ticker.unpark();
        }
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        host().running.fetch_sub(1, Ordering::AcqRel);
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

/// The store ABI: the imports a guest may use and the exports it must have.
mod abi {
    use super::*;

    /// What every guest exports (`functions/guest/ABI.md`).
    pub(super) const EXPORTS: [&str; 5] = [
        "memory",
        "autoloc_abi_v1",
        "autoloc_describe",
        "autoloc_alloc",
        "autoloc_call",
    ];

    /// The guest's memory.
    pub(super) fn memory(
        instance: &wasmtime::Instance,
        store: &mut WasmStore<Run>,
    ) -> Result<Memory> {
        instance
            .get_memory(store, "memory")
            .ok_or_else(|| guest_error("the module exports no memory 'memory'"))
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

    /// Reads a list.
    fn get_list(mut b: &[u8]) -> Option<Vec<Vec<u8>>> {
        let mut items = Vec::new();
        while !b.is_empty() {
            let (len, rest) = b.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            items.push(rest.get(..len)?.to_vec());
            b = &rest[len..];
        }
        Some(items)
    }

    fn host_error(reason: impl Into<String>) -> wasmtime::Error {
        Failed(Error::Guest(reason.into())).into()
    }

    /// The guest's memory as seen from an import.
    fn caller_memory(caller: &mut Caller<'_, Run>) -> wasmtime::Result<Memory> {
        caller
            .get_export("memory")
            .and_then(|e| e.into_memory())
            .ok_or_else(|| host_error("the module exports no memory 'memory'"))
    }

    fn range(ptr: i32, len: i32) -> std::ops::Range<usize> {
        let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
        ptr..ptr + len
    }

    fn bytes(data: &[u8], ptr: i32, len: i32) -> wasmtime::Result<&[u8]> {
        data.get(range(ptr, len))
            .ok_or_else(|| host_error(format!("pointer {ptr}+{len} is outside its memory")))
    }

    fn encode_values(values: &[Option<Vec<u8>>]) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            values
                .iter()
                .map(|v| 4 + v.as_ref().map_or(0, Vec::len))
                .sum(),
        );
        for v in values {
            match v {
                None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
                Some(v) => {
                    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    out.extend_from_slice(v);
                }
            }
        }
        out
    }

    fn nondeterministic(at: usize) -> wasmtime::Error {
        host_error(format!(
            "not deterministic: store operation {at} differs from an earlier run's"
        ))
    }

    fn read(
        mut caller: Caller<'_, Run>,
        keys_ptr: i32,
        keys_len: i32,
        out_ptr: i32,
        out_cap: i32,
    ) -> wasmtime::Result<i32> {
        let memory = caller_memory(&mut caller)?;
        let (data, run) = memory.data_and_store_mut(&mut caller);
        let keys = get_list(bytes(data, keys_ptr, keys_len)?)
            .ok_or_else(|| host_error("read: malformed key list"))?;
        let at = run.cursor;
        let encoded = match run.journal.ops.get(at) {
            None => {
                run.pending = Some(keys);
                return Err(Suspend.into());
            }
            Some(Op::Read(k, values)) if *k == keys => encode_values(values),
            Some(_) => return Err(nondeterministic(at)),
        };
        run.cursor += 1;
        let len = i32::try_from(encoded.len())
            .map_err(|_| host_error("read: values larger than 2 GiB"))?;
        if encoded.len() <= out_cap as u32 as usize {
            data.get_mut(range(out_ptr, len))
                .ok_or_else(|| host_error("read: output buffer outside its memory"))?
                .copy_from_slice(&encoded);
        } else {
            run.taken = encoded;
        }
        Ok(len)
    }

    fn take(mut caller: Caller<'_, Run>, out_ptr: i32, out_cap: i32) -> wasmtime::Result<i32> {
        let memory = caller_memory(&mut caller)?;
        let (data, run) = memory.data_and_store_mut(&mut caller);
        let taken = std::mem::take(&mut run.taken);
        if taken.len() > out_cap as u32 as usize {
            return Err(host_error("take: buffer smaller than the read's result"));
        }
        data.get_mut(range(out_ptr, taken.len() as i32))
            .ok_or_else(|| host_error("take: buffer outside its memory"))?
            .copy_from_slice(&taken);
        Ok(taken.len() as i32)
    }

    fn write(
        mut caller: Caller<'_, Run>,
        key_ptr: i32,
        key_len: i32,
        value_ptr: i32,
        value_len: i32,
    ) -> wasmtime::Result<()> {
        let memory = caller_memory(&mut caller)?;
        let (data, run) = memory.data_and_store_mut(&mut caller);
        let key = bytes(data, key_ptr, key_len)?;
        let value = bytes(data, value_ptr, value_len)?;
        let at = run.cursor;
        match run.journal.ops.get(at) {
            None => run
                .journal
                .ops
                .push(Op::Write(key.to_vec(), value.to_vec(), false)),
            Some(Op::Write(k, v, _)) if k == key && v == value => {}
            Some(_) => return Err(nondeterministic(at)),
        }
        run.cursor += 1;
        Ok(())
    }

    /// Wires the store ABI into `linker`; nothing else is importable.
    pub(super) fn link(linker: &mut Linker<Run>) -> wasmtime::Result<()> {
        linker.func_wrap("autoloc", "read", read)?;
        linker.func_wrap("autoloc", "take", take)?;
        linker.func_wrap("autoloc", "write", write)?;
        // CPU is bounded by the epoch deadline, so a checkpoint has nothing left to do.
        linker.func_wrap("autoloc", "checkpoint", |_: Caller<'_, Run>| {})?;
        Ok(())
    }
}
