//! How far the reader is behind the kernel in the ring buffer, readable from
//! any thread: the ring's consumer and producer positions, mapped read-only.
//! (libbpf-rs does not expose them; the kernel allows any read-only mapping
//! of a ring buffer's first two pages.)

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Result};

pub struct RingPositions {
    base: NonNull<u8>,
    page: usize,
}

// The mapping is read-only kernel memory, read with atomic loads only, from
// any thread (the reader and the CPU priority watchdog share one).
unsafe impl Send for RingPositions {}
unsafe impl Sync for RingPositions {}

impl RingPositions {
    /// Maps the consumer and producer pages of the ring buffer `map`.
    pub fn map(map: BorrowedFd<'_>) -> Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let Ok(page) = usize::try_from(page) else { bail!("page size unknown") };
        // SAFETY: a fresh shared read-only mapping of a file descriptor we
        // hold; the result is checked before use and unmapped in Drop. The
        // mapping keeps the map alive even once the descriptor is closed.
        let addr = unsafe {
            libc::mmap(std::ptr::null_mut(), 2 * page, libc::PROT_READ, libc::MAP_SHARED, map.as_raw_fd(), 0)
        };
        if addr == libc::MAP_FAILED {
            bail!("mapping the ring buffer's positions: {}", std::io::Error::last_os_error());
        }
        let Some(base) = NonNull::new(addr.cast::<u8>()) else { bail!("mapping the ring buffer's positions: null") };
        Ok(Self { base, page })
    }

    fn load(&self, offset: usize) -> u64 {
        // SAFETY: offset is 0 or one page, both inside the two mapped pages;
        // the kernel keeps each position as an aligned u64 at the start of its
        // page and updates it atomically.
        let pos = unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() };
        pos.load(Ordering::Acquire)
    }

    /// Bytes the reader has consumed since the ring was created.
    pub fn consumed(&self) -> u64 {
        self.load(0)
    }

    /// Bytes the kernel has reserved since the ring was created.
    pub fn produced(&self) -> u64 {
        self.load(self.page)
    }

    /// Bytes reserved and not yet consumed.
    pub fn unread(&self) -> u64 {
        let consumed = self.consumed();
        self.produced().saturating_sub(consumed)
    }
}

impl Drop for RingPositions {
    fn drop(&mut self) {
        // SAFETY: exactly the region mapped in `map`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), 2 * self.page);
        }
    }
}
