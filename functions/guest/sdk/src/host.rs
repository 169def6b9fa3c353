//! The host's six imports (module `autoloc`), behind safe functions over slices.
//!
//! On `wasm32` these are the real imports and, with the allocator (`heap`), the only `unsafe` of
//! the crate. Elsewhere (a native
//! `cargo test`) they are served by [`crate::mock`], an in-memory host, so a guest's logic can be
//! tested without a WebAssembly runtime.

#[cfg(target_arch = "wasm32")]
mod imp {
    #[link(wasm_import_module = "autoloc")]
    unsafe extern "C" {
        #[link_name = "read"]
        fn autoloc_read(keys_ptr: i32, keys_len: i32, out_ptr: i32, out_cap: i32) -> i32;
        #[link_name = "neighbours"]
        fn autoloc_neighbours(keys_ptr: i32, keys_len: i32, out_ptr: i32, out_cap: i32) -> i32;
        #[link_name = "take"]
        fn autoloc_take(out_ptr: i32, out_cap: i32) -> i32;
        #[link_name = "args"]
        fn autoloc_args(out_ptr: i32, out_cap: i32) -> i32;
        #[link_name = "write"]
        fn autoloc_write(key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32);
        // No pointers, nothing the host can do to this module's memory: safe to call.
        #[link_name = "checkpoint"]
        safe fn autoloc_checkpoint();
    }

    /// A pointer or length as the ABI's `i32` (read back by the host as unsigned).
    fn abi(n: usize) -> i32 {
        n as u32 as i32
    }

    /// A store access of the ABI's shape `(keys, out) -> length`: `read` or `neighbours`.
    type Access = unsafe extern "C" fn(i32, i32, i32, i32) -> i32;

    fn access(import: Access, keys: &[u8], out: &mut [u8]) -> usize {
        // SAFETY: `import` is `read` or `neighbours`. `keys` is readable for `keys.len()` bytes
        // and `out` writable for `out.len()` bytes (initialised, exclusively borrowed) for the
        // whole call; by the ABI the host reads only the former, writes only within the latter
        // and keeps neither pointer.
        let n = unsafe {
            import(
                abi(keys.as_ptr() as usize),
                abi(keys.len()),
                abi(out.as_mut_ptr() as usize),
                abi(out.len()),
            )
        };
        n as u32 as usize
    }

    pub(crate) fn read(keys: &[u8], out: &mut [u8]) -> usize {
        access(autoloc_read, keys, out)
    }

    pub(crate) fn neighbours(keys: &[u8], out: &mut [u8]) -> usize {
        access(autoloc_neighbours, keys, out)
    }

    pub(crate) fn take(out: &mut [u8]) -> usize {
        // SAFETY: `out` is writable for `out.len()` bytes (initialised, exclusively borrowed) for
        // the whole call; the host writes only within it and keeps no pointer.
        let n = unsafe { autoloc_take(abi(out.as_mut_ptr() as usize), abi(out.len())) };
        n as u32 as usize
    }

    pub(crate) fn args(out: &mut [u8]) -> usize {
        // SAFETY: `out` is writable for `out.len()` bytes (initialised, exclusively borrowed) for
        // the whole call; the host writes only within it and keeps no pointer.
        let n = unsafe { autoloc_args(abi(out.as_mut_ptr() as usize), abi(out.len())) };
        n as u32 as usize
    }

    pub(crate) fn write(key: &[u8], value: &[u8]) {
        // SAFETY: both slices are readable for their lengths for the whole call; the host only
        // reads them and keeps neither pointer.
        unsafe {
            autoloc_write(
                abi(key.as_ptr() as usize),
                abi(key.len()),
                abi(value.as_ptr() as usize),
                abi(value.len()),
            )
        }
    }

    pub(crate) fn checkpoint() {
        autoloc_checkpoint()
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    pub(crate) use crate::mock::{args, checkpoint, neighbours, read, take, write};
}

pub(crate) use imp::{args, checkpoint, neighbours, read, take, write};
