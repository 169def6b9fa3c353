//! Key names as module strings: [`key_name`], with a small cache per thread of the short ones.

use redis_module::{Context, RedisString};

/// A key's name as a Redis string, byte for byte (a name may hold any byte, NUL too; the
/// `redis-module` crate's `create_string` goes through a C string, which refuses NUL). Called
/// under Redis's lock (the strings are reference-counted without atomics).
///
/// Short names come from a small cache per thread: most reads name keys read before, and making
/// a module string costs an allocation and a free in Redis's allocator, each with a locked
/// instruction that waits for every store still in flight (such as the reply just written to a
/// ring that another core polls). A cached string is shared by reference count: Redis never
/// changes a string it does not own alone, and keeps a reference of its own to any it holds on
/// to (an open key, a propagated command).
pub fn key_name(ctx: &Context, name: &[u8]) -> RedisString {
    if name.len() > cache::LONGEST {
        return RedisString::create_from_slice(ctx.ctx, name);
    }
    cache::get(name)
}

mod cache {
    use std::cell::RefCell;
    use std::ptr::null_mut;

    use redis_module::{raw, RedisString};

    /// Cached names per thread, and the longest name cached.
    const SLOTS: usize = 256;
    pub(super) const LONGEST: usize = 128;

    thread_local! {
        /// A direct-mapped cache: each slot holds one reference to its string, or null. Never
        /// freed (at most `SLOTS` short strings per thread, and the threads live as long as
        /// redis-server).
        static CACHE: RefCell<[*mut raw::RedisModuleString; SLOTS]> =
            const { RefCell::new([null_mut(); SLOTS]) };
    }

    /// FNV-1a, folded: names are short and chosen by clients, but a collision only costs a miss.
    fn slot(name: &[u8]) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in name {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h ^ (h >> 29)) as usize % SLOTS
    }

    pub(super) fn get(name: &[u8]) -> RedisString {
        let i = slot(name);
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            let held = cache[i];
            if !held.is_null() && RedisString::string_as_slice(held) == name {
                // Another reference to the cached string, given back when the handle drops.
                return RedisString::new(None, held);
            }
            let made = RedisString::create_from_slice(null_mut(), name);
            if !held.is_null() {
                if let Ok(free) = crate::api::module_api!(RedisModule_FreeString) {
                    // SAFETY: `held` is the cache's own reference, made with no context (so no
                    // auto-memory pool holds it) and given back exactly once, here, as it leaves
                    // the cache; Redis's lock is held (`key_name`'s contract).
                    unsafe { free(null_mut(), held) };
                }
            }
            // The handle returned keeps a reference of its own; the cache keeps `made`'s.
            let handle = RedisString::new(None, made.inner);
            cache[i] = made.inner;
            std::mem::forget(made);
            handle
        })
    }
}
