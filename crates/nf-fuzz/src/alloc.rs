//! An allocator that counts: live bytes, the peak since the last reset, and the largest
//! single request. A fuzz binary installs it with `#[global_allocator]`; the runner reads
//! it around each input to show that memory stays bounded.
//!
//! Requests above a hard cap are refused, which makes Rust abort the process: an input
//! that asks for gigabytes is a failure to find, not to survive by luck of overcommit.
//! The refusal first writes which target and input asked, without allocating (the
//! allocator cannot call back into itself).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The counting allocator; install with `#[global_allocator] static A: Counting = Counting;`.
#[derive(Debug)]
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static CAP: AtomicUsize = AtomicUsize::new(usize::MAX);
/// What is running, for the refusal message: a target number and the input's index.
static TARGET: AtomicUsize = AtomicUsize::new(usize::MAX);
static INPUT: AtomicUsize = AtomicUsize::new(0);

/// Refuse single requests above `bytes` from now on.
pub fn set_cap(bytes: usize) {
    CAP.store(bytes, Relaxed);
}

/// Names the input now running, for the message printed if it asks for too much.
pub fn set_running(target: usize, input: usize) {
    TARGET.store(target, Relaxed);
    INPUT.store(input, Relaxed);
}

/// Starts a new measurement: the peak becomes what is live now, the largest request 0.
/// Returns the live bytes.
pub fn reset() -> usize {
    let live = LIVE.load(Relaxed);
    PEAK.store(live, Relaxed);
    LARGEST.store(0, Relaxed);
    live
}

/// `(peak, largest)` since the last [`reset`]: the most bytes live at once (all threads)
/// and the largest single request.
pub fn measured() -> (usize, usize) {
    (PEAK.load(Relaxed), LARGEST.load(Relaxed))
}

/// Whether the counting allocator is the one in use (a binary that forgot to install it
/// would report zeros and prove nothing).
pub fn is_installed() -> bool {
    // The largest request, not the live bytes: other threads may free memory meanwhile.
    reset();
    let probe = std::hint::black_box(vec![0u8; 1 << 16]);
    let seen = LARGEST.load(Relaxed) >= probe.len();
    drop(probe);
    seen
}

fn grew(size: usize) {
    let now = LIVE.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(now, Relaxed);
    LARGEST.fetch_max(size, Relaxed);
}

fn refuse(size: usize) {
    let mut buf = [0u8; 160];
    let mut w = &mut buf[..];
    let _ = writeln!(
        w,
        "nf-fuzz: target #{} input #{} asked for {size} bytes at once (cap {}); aborting",
        TARGET.load(Relaxed),
        INPUT.load(Relaxed),
        CAP.load(Relaxed)
    );
    let len = 160 - w.len();
    let _ = std::io::stderr().write_all(&buf[..len]);
    // Where the request came from, when asked: capturing allocates, but only small
    // amounts, which this allocator serves without coming back here.
    if std::env::var_os("NF_FUZZ_BACKTRACE").is_some() {
        let _ = writeln!(
            std::io::stderr(),
            "{}",
            std::backtrace::Backtrace::force_capture()
        );
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and only
// adds counting, so `System`'s guarantees carry over.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP.load(Relaxed) {
            refuse(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged (see the impl's comment).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP.load(Relaxed) {
            refuse(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > CAP.load(Relaxed) {
            refuse(new_size);
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}
