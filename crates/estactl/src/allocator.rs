//! The process's global allocator: mimalloc, asked for alignment only when
//! a layout needs more than every mimalloc block has.
//!
//! The `mimalloc` crate's allocator passes every layout's alignment to
//! `mi_malloc_aligned`, whose fast path covers only small blocks whose
//! free-list head happens to be aligned: a larger block (a Wasmtime store,
//! a boxed process future) takes the generic path, which over-allocates by
//! the alignment. Every mimalloc block is aligned to a machine word, so a
//! layout whose alignment is at most a word is served by plain `mi_malloc`
//! (what Rust's own `System` allocator does with `malloc`): about 950
//! instructions fewer per spawned process (BENCHMARKS.md, log step 37).

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// Alignment every block `mi_malloc` returns has: blocks are whole words,
/// in pages aligned far beyond a word.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc, with plain calls for word-aligned layouts.
pub struct Allocator;

/// True if `mi_malloc(size)` (or `mi_realloc` to `size`) already meets
/// `align`. Rust never asks for zero bytes through a global allocator.
fn plain(align: usize, size: usize) -> bool {
    align <= WORD && align <= size
}

// SAFETY: every method returns memory from mimalloc (or null on failure),
// valid for `layout.size()` bytes and aligned to `layout.align()`: the
// plain calls only when the alignment is at most a word, which every
// mimalloc block has; the aligned calls otherwise. `dealloc` and `realloc`
// get pointers this allocator returned, and `mi_free` / `mi_realloc*`
// accept a block from any of mimalloc's allocation functions.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions accept any size and any
        // power-of-two alignment (a `Layout`'s always is).
        unsafe {
            if plain(layout.align(), layout.size()) {
                libmimalloc_sys::mi_malloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.align(), layout.size()) {
                libmimalloc_sys::mi_zalloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { libmimalloc_sys::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new
        // block keeps the layout's alignment by the same rule as `alloc`.
        unsafe {
            if plain(layout.align(), new_size) {
                libmimalloc_sys::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align())
                    .cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every block is aligned as asked and holds what was written,
        /// through a reallocation to any size and back.
        #[test]
        fn blocks_are_aligned_and_keep_their_bytes(
            size in 1usize..70_000,
            align_log in 0u32..13,
            new_size in 1usize..70_000,
            zeroed in any::<bool>(),
        ) {
            let align = 1usize << align_log;
            let size = size.next_multiple_of(align);
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a non-zero size; the block is used within its
            // layout and freed once, with the layout it has at the time.
            unsafe {
                let block = if zeroed { Allocator.alloc_zeroed(layout) } else { Allocator.alloc(layout) };
                prop_assert!(!block.is_null());
                prop_assert_eq!(block as usize % align, 0);
                if zeroed {
                    prop_assert!(std::slice::from_raw_parts(block, size).iter().all(|&b| b == 0));
                }
                for i in 0..size {
                    *block.add(i) = (i % 251) as u8;
                }
                let grown = Allocator.realloc(block, layout, new_size);
                prop_assert!(!grown.is_null());
                prop_assert_eq!(grown as usize % align, 0);
                for i in 0..size.min(new_size) {
                    prop_assert_eq!(*grown.add(i), (i % 251) as u8);
                }
                Allocator.dealloc(grown, Layout::from_size_align(new_size, align).unwrap());
            }
        }
    }

    #[test]
    fn only_word_aligned_layouts_take_the_plain_calls() {
        assert!(plain(1, 1));
        assert!(plain(8, 8));
        assert!(plain(8, 4096));
        assert!(!plain(8, 4), "alignment above the size");
        assert!(!plain(16, 32));
        assert!(!plain(4096, 4096));
    }
}
