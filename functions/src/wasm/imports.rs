//! The store ABI's imports, all a guest may import (`functions/guest/ABI.md`): `read`,
//! `neighbours`, `take`, `args`, `write` and `checkpoint`. An import that needs the store leaves
//! its [`Request`] in the invocation's exchange and suspends the guest until it is answered.

use wasmtime::{Caller, Linker, Memory};

use super::abi::get_list;
use super::abi_v1::IMPORT_MODULE;
use super::instance::{lock, Failed, Request, Run, Shared};
use crate::Error;

/// The most keys one `read` of a guest may name: a larger read is a `TOOLARGE` error, so that
/// one store access cannot hold Redis's lock for long (a read opens all its keys at once).
pub const MAX_READ_KEYS: usize = 1 << 18;

fn host_error(reason: impl Into<String>) -> wasmtime::Error {
    Failed(Error::Guest(reason.into())).into()
}

/// The guest's memory as seen from an import.
fn caller_memory(caller: &Caller<'_, Run>) -> wasmtime::Result<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| host_error("a store import called before its instance was ready"))
}

fn range(ptr: i32, len: i32) -> std::ops::Range<usize> {
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    ptr..ptr + len
}

fn bytes(data: &[u8], ptr: i32, len: i32) -> wasmtime::Result<&[u8]> {
    data.get(range(ptr, len))
        .ok_or_else(|| host_error(format!("pointer {ptr}+{len} is outside its memory")))
}

/// Suspends the guest until its request is answered.
async fn answer(exchange: &Shared, request: Request) -> wasmtime::Result<Vec<u8>> {
    lock(exchange).request = Some(request);
    let answer = std::future::poll_fn(|cx| match lock(exchange).answer.take() {
        Some(a) => std::task::Poll::Ready(a),
        None => {
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
    answer.map_err(|e| Failed(e).into())
}

type Reply<'a> = Box<dyn std::future::Future<Output = wasmtime::Result<i32>> + Send + 'a>;

fn read(caller: Caller<'_, Run>, args: (i32, i32, i32, i32)) -> Reply<'_> {
    fetch(caller, args, "read", Request::Read)
}

fn neighbours(caller: Caller<'_, Run>, args: (i32, i32, i32, i32)) -> Reply<'_> {
    fetch(caller, args, "neighbours", Request::Neighbours)
}

/// `read` and `neighbours`: a list of keys in, one store access, the encoded reply copied
/// into the guest's buffer if it fits (else kept for `take`), its length returned.
fn fetch<'a>(
    mut caller: Caller<'a, Run>,
    (keys_ptr, keys_len, out_ptr, out_cap): (i32, i32, i32, i32),
    what: &'static str,
    request: fn(Vec<Vec<u8>>) -> Request,
) -> Reply<'a> {
    Box::new(async move {
        let memory = caller_memory(&caller)?;
        let list = bytes(memory.data(&caller), keys_ptr, keys_len)?;
        let malformed = || host_error(format!("{what}: malformed key list"));
        let keys = get_list(list, MAX_READ_KEYS).ok_or_else(malformed)?;
        let keys = keys.map_err(|len| {
            Failed(Error::TooLarge {
                len,
                max: MAX_READ_KEYS,
            })
        })?;
        let exchange = caller.data().exchange.clone();
        let encoded = answer(&exchange, request(keys)).await?;
        let len = i32::try_from(encoded.len())
            .map_err(|_| host_error(format!("{what}: reply larger than 2 GiB")))?;
        let (data, run) = memory.data_and_store_mut(&mut caller);
        if encoded.len() <= out_cap as u32 as usize {
            data.get_mut(range(out_ptr, len))
                .ok_or_else(|| host_error(format!("{what}: output buffer outside its memory")))?
                .copy_from_slice(&encoded);
            lock(&run.exchange).give_back(encoded);
        } else {
            run.taken = encoded;
        }
        Ok(len)
    })
}

fn take(mut caller: Caller<'_, Run>, out_ptr: i32, out_cap: i32) -> wasmtime::Result<i32> {
    let memory = caller_memory(&caller)?;
    let (data, run) = memory.data_and_store_mut(&mut caller);
    let taken = std::mem::take(&mut run.taken);
    if taken.len() > out_cap as u32 as usize {
        return Err(host_error("take: buffer smaller than the read's result"));
    }
    data.get_mut(range(out_ptr, taken.len() as i32))
        .ok_or_else(|| host_error("take: buffer outside its memory"))?
        .copy_from_slice(&taken);
    let len = taken.len() as i32;
    lock(&run.exchange).give_back(taken);
    Ok(len)
}

/// `args`: copies the invocation's arguments (a list, as `autoloc_alloc`'s buffer gets them)
/// to the guest's buffer, which must hold them; their length. None outside an invocation.
fn args(mut caller: Caller<'_, Run>, out_ptr: i32, out_cap: i32) -> wasmtime::Result<i32> {
    let memory = caller_memory(&caller)?;
    let (data, run) = memory.data_and_store_mut(&mut caller);
    let len = run.args.len();
    if len > out_cap as u32 as usize {
        return Err(host_error(format!(
            "args: a buffer of {} bytes for {len} bytes of arguments",
            out_cap as u32
        )));
    }
    data.get_mut(range(out_ptr, len as i32))
        .ok_or_else(|| host_error("args: buffer outside its memory"))?
        .copy_from_slice(&run.args);
    Ok(len as i32)
}

fn write(
    caller: Caller<'_, Run>,
    (key_ptr, key_len, value_ptr, value_len): (i32, i32, i32, i32),
) -> Box<dyn std::future::Future<Output = wasmtime::Result<()>> + Send + '_> {
    Box::new(async move {
        let memory = caller_memory(&caller)?;
        let data = memory.data(&caller);
        let key = bytes(data, key_ptr, key_len)?.to_vec();
        let value = bytes(data, value_ptr, value_len)?.to_vec();
        let exchange = caller.data().exchange.clone();
        answer(&exchange, Request::Write(key, value)).await?;
        Ok(())
    })
}

/// Wires the store ABI into `linker`; nothing else is importable.
pub(super) fn link(linker: &mut Linker<Run>) -> wasmtime::Result<()> {
    linker.func_wrap_async(IMPORT_MODULE, "read", read)?;
    linker.func_wrap_async(IMPORT_MODULE, "neighbours", neighbours)?;
    linker.func_wrap(IMPORT_MODULE, "take", take)?;
    linker.func_wrap(IMPORT_MODULE, "args", args)?;
    linker.func_wrap_async(IMPORT_MODULE, "write", write)?;
    // CPU is bounded by the epoch deadline, so a checkpoint has nothing left to do.
    linker.func_wrap(IMPORT_MODULE, "checkpoint", |_: Caller<'_, Run>| {})?;
    Ok(())
}
