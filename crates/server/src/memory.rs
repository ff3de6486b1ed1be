//! Giving freed heap memory back to the operating system.
//!
//! glibc keeps what many short-lived allocations freed in its arenas: after 19,000 device
//! connections closed, a node measured 334 MB resident against 36 MB before, although the memory
//! was free; one `malloc_trim(0)` brought it to 38 MB (mimalloc and a single arena did no better
//! than glibc, see ARCHITECTURE.md "The allocator"). The accept loops call [`trim`] after many
//! connections ended, at most every few seconds.

/// Returns freed heap memory to the system (glibc); nothing on other C libraries.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn trim() {
    // SAFETY: malloc_trim has no preconditions; it only walks glibc's own free lists, under
    // glibc's arena locks, and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Returns freed heap memory to the system (glibc); nothing on other C libraries.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn trim() {}

/// Connections that must have ended since the last trim before the next one.
pub(crate) const TRIM_AFTER_ENDED: u64 = 1024;
