//! The guest's allocator: `dlmalloc` over a static arena first, then `memory.grow`.
//!
//! Rust's own allocator for `wasm32-unknown-unknown` takes its first block with `memory.grow`,
//! so every new instance grows its memory before it runs a line of the guest. With the host's
//! `wasm-traps signals`, a pooled slot's pages past the memory's size are inaccessible (that is
//! what makes an access past the end a trap), so that growth is an `mprotect`, and the reset of
//! the slot for its next instance another one: two system calls that shoot down TLB entries on
//! every core, several microseconds of a call that otherwise costs five. This allocator hands
//! out [`ARENA`] bytes of the module's own zeroed data (`.bss`, part of the initial memory,
//! mapped copy-on-write and never written until used) before it grows the memory, so an
//! invocation that allocates less than that never grows it.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::UnsafeCell;
use core::ptr;

/// Bytes allocated before the memory first grows.
pub const ARENA: usize = 256 << 10;

/// WebAssembly's page.
const PAGE: usize = 64 << 10;

/// The arena: zeroed static memory, handed to `dlmalloc` once, as its first segment (aligned as
/// `dlmalloc` aligns its chunks; a page's alignment would only pad the initial memory).
#[repr(C, align(16))]
struct Arena(UnsafeCell<[u8; ARENA]>);

/// The system side of `dlmalloc`: the arena once, then pages from `memory.grow`.
struct System {
    arena_given: UnsafeCell<bool>,
}

/// The heap `#[global_allocator]` serves from.
struct Heap {
    dlmalloc: UnsafeCell<dlmalloc::Dlmalloc<System>>,
}

// A build with threads would need a lock around the heap (see the `Sync` below).
#[cfg(target_feature = "atomics")]
compile_error!("autoloc-guest's `heap` assumes one thread: build without `atomics`");

// SAFETY: `wasm32-unknown-unknown` without the `atomics` feature (checked above) has one thread:
// the arena, the flag and the heap are never reached from two threads.
unsafe impl Sync for Arena {}
// SAFETY: as above, one thread.
unsafe impl Sync for Heap {}

static ARENA_BYTES: Arena = Arena(UnsafeCell::new([0; ARENA]));

// SAFETY: every region `alloc` returns is memory of this module's own, zeroed, given out once and
// never freed (`free` and `free_part` refuse): the arena, or pages just added by `memory.grow`.
unsafe impl dlmalloc::Allocator for System {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        // SAFETY: one thread (see `Sync for Heap`), and `dlmalloc` does not reenter `alloc`.
        let given = unsafe { &mut *self.arena_given.get() };
        if !*given && size <= ARENA {
            *given = true;
            return (ARENA_BYTES.0.get().cast(), ARENA, 0);
        }
        let pages = size.div_ceil(PAGE);
        let previous = wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return (ptr::null_mut(), 0, 0);
        }
        let (base, len) = (previous * PAGE, pages * PAGE);
        // The last page of the 4 GiB space: a segment's end would wrap to address 0, which no
        // pointer may; its last bytes are left out (as `dlmalloc`'s own wasm system does).
        let len = if base.wrapping_add(len) == 0 {
            len - 16
        } else {
            len
        };
        (base as *mut u8, len, 0)
    }

    fn remap(&self, _ptr: *mut u8, _old: usize, _new: usize, _can_move: bool) -> *mut u8 {
        ptr::null_mut()
    }

    fn free_part(&self, _ptr: *mut u8, _old: usize, _new: usize) -> bool {
        false
    }

    fn free(&self, _ptr: *mut u8, _size: usize) -> bool {
        false
    }

    fn can_release_part(&self, _flags: u32) -> bool {
        false
    }

    fn allocates_zeros(&self) -> bool {
        true
    }

    fn page_size(&self) -> usize {
        PAGE
    }
}

#[global_allocator]
static HEAP: Heap = Heap {
    dlmalloc: UnsafeCell::new(dlmalloc::Dlmalloc::new_with_allocator(System {
        arena_given: UnsafeCell::new(false),
    })),
};

// SAFETY: `dlmalloc` implements the `GlobalAlloc` contract (alignment, sizes, realloc's copy);
// the exclusive borrow of the heap is sound because there is one thread and `dlmalloc` never
// calls back into the global allocator.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above; the caller keeps `GlobalAlloc::alloc`'s contract.
        unsafe { (*self.dlmalloc.get()).malloc(layout.size(), layout.align()) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe { (*self.dlmalloc.get()).calloc(layout.size(), layout.align()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above; `ptr` came from this heap with `layout`.
        unsafe { (*self.dlmalloc.get()).free(ptr, layout.size(), layout.align()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above; `ptr` came from this heap with `layout`.
        unsafe { (*self.dlmalloc.get()).realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}
