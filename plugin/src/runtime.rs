//! What `std` gave the component and `core` does not: an allocator, the
//! canonical ABI's `cabi_realloc`, and a panic handler.
//!
//! The allocator is wasi-libc's `malloc`, the one `std` used (the target
//! links wasi-libc either way): the same code, without `std` around it. A
//! panic still says why on stderr, as `std`'s hook did, then traps.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, Ordering};

// `std` asked for wasi-libc; without it, this does.
#[link(name = "c")]
unsafe extern "C" {
    fn malloc(size: usize) -> *mut u8;
    fn calloc(count: usize, size: usize) -> *mut u8;
    fn aligned_alloc(align: usize, size: usize) -> *mut u8;
    fn realloc(ptr: *mut u8, size: usize) -> *mut u8;
    fn free(ptr: *mut u8);
}

/// `malloc` aligns to 16 bytes on wasm32: larger alignments go to
/// `aligned_alloc`, as `std`'s allocator on WASI does.
const MIN_ALIGN: usize = 16;

struct LibcMalloc;

// SAFETY: each call forwards to wasi-libc's allocator with a size and an
// alignment it supports, and `dealloc`/`realloc` get pointers it returned.
unsafe impl GlobalAlloc for LibcMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match layout.align() <= MIN_ALIGN && layout.align() <= layout.size() {
            // SAFETY: see the impl.
            true => unsafe { malloc(layout.size()) },
            // SAFETY: see the impl; a power of two, at least a word.
            false => unsafe { aligned_alloc(layout.align().max(4), layout.size()) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match layout.align() <= MIN_ALIGN && layout.align() <= layout.size() {
            // SAFETY: see the impl.
            true => unsafe { calloc(layout.size(), 1) },
            false => {
                // SAFETY: see the impl.
                let ptr = unsafe { self.alloc(layout) };
                if !ptr.is_null() {
                    // SAFETY: `ptr` holds `layout.size()` bytes.
                    unsafe { core::ptr::write_bytes(ptr, 0, layout.size()) };
                }
                ptr
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: Layout) {
        // SAFETY: see the impl.
        unsafe { free(ptr) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match layout.align() <= MIN_ALIGN && layout.align() <= new_size {
            // SAFETY: see the impl.
            true => unsafe { realloc(ptr, new_size) },
            false => {
                // SAFETY: see the impl; the new layout is valid, as the
                // caller promises.
                let new = unsafe {
                    self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()))
                };
                if !new.is_null() {
                    // SAFETY: both hold at least the smaller size.
                    unsafe {
                        core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        free(ptr);
                    }
                }
                new
            }
        }
    }
}

#[global_allocator]
static ALLOCATOR: LibcMalloc = LibcMalloc;

/// The canonical ABI's allocator: where the host writes the strings and
/// lists it hands the component. `std` exports it on this target (and
/// wit-bindgen leaves it to `std` there); this is `std`'s, on the global
/// allocator.
///
/// # Safety
///
/// Called by the host as the canonical ABI says: `old_ptr` and `old_len`
/// from an earlier call (or null and 0), `align` a power of two.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    if new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: the host follows the canonical ABI (see above).
    let ptr = unsafe {
        match old_len {
            0 => alloc::alloc::alloc(Layout::from_size_align_unchecked(new_len, align)),
            _ => alloc::alloc::realloc(
                old_ptr,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            ),
        }
    };
    if ptr.is_null() {
        core::arch::wasm32::unreachable();
    }
    ptr
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // Saying why allocates: a panic while saying it (out of memory) traps at
    // once instead of recursing.
    static PANICKED: AtomicBool = AtomicBool::new(false);
    if !PANICKED.swap(true, Ordering::Relaxed) {
        crate::ambient::warn(format_args!("usage-sync: the component panicked: {info}"));
    }
    core::arch::wasm32::unreachable()
}
