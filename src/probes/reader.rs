//! Reads every CPU's ring buffer and hands the facts on in kernel order
//! (merge.rs): a round waits for facts, takes at most a budget from each ring
//! (so the caller looks at the rings between rounds: burst.rs), and keeps
//! what another ring may still precede.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapHandle, RingBuffer, RingBufferBuilder};

use super::merge::RingMerge;

pub struct Reader<'a> {
    /// One per CPU's ring: libbpf reads each on its own, so a round can take
    /// a budget from every ring.
    rings: Vec<RingBuffer<'a>>,
    /// Ring i may have more than the last round took.
    more: Vec<Cell<bool>>,
    /// One epoll instance over the rings' own, to wait for any of them.
    epoll: OwnedFd,
    merge: Rc<RefCell<RingMerge>>,
}

impl<'a> Reader<'a> {
    pub fn new(maps: &'a [MapHandle]) -> Result<Self> {
        let merge = Rc::new(RefCell::new(RingMerge::new(maps.len())));
        // SAFETY: epoll_create1 has no preconditions; the result is checked.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            bail!("epoll_create1: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut rings = Vec::with_capacity(maps.len());
        for (i, map) in maps.iter().enumerate() {
            let m = Rc::clone(&merge);
            let mut builder = RingBufferBuilder::new();
            builder
                .add(map, move |data| {
                    m.borrow_mut().push(i, data);
                    0
                })
                .context("setting up the ring buffer reader")?;
            let ring = builder.build().context("setting up the ring buffer reader")?;
            let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
            // SAFETY: both descriptors are open; `event` outlives the call.
            if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, ring.epoll_fd(), &mut event) } < 0 {
                bail!("epoll_ctl: {}", std::io::Error::last_os_error());
            }
            rings.push(ring);
        }
        let more = (0..maps.len()).map(|_| Cell::new(false)).collect();
        Ok(Self { rings, more, epoll, merge })
    }

    /// Waits up to `timeout` for a fact in any ring (not at all if one has
    /// more than the last round took), then takes at most `budget` facts from
    /// each ring.
    pub fn read_round(&self, timeout: Duration, budget: usize) -> Result<()> {
        if !self.more.iter().any(Cell::get) && !timeout.is_zero() {
            let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
            let mut events = [libc::epoll_event { events: 0, u64: 0 }];
            // SAFETY: the epoll descriptor is open and `events` has room for one.
            let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 1, ms) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e).context("waiting for the ring buffers");
                }
            }
        }
        for (ring, more) in self.rings.iter().zip(&self.more) {
            let n = ring.consume_raw_n(budget);
            if n < 0 && n != -libc::EINTR {
                bail!("reading a ring buffer: {}", std::io::Error::from_raw_os_error(-n));
            }
            more.set(usize::try_from(n).is_ok_and(|n| n >= budget));
        }
        Ok(())
    }

    /// Facts read and not yet handed on.
    pub fn held(&self) -> usize {
        self.merge.borrow().held()
    }

    /// Hands on, in kernel order, the facts of the rounds so far that no ring
    /// can still precede (the last round began at `round_start_ns`), while
    /// `take` accepts them. Returns how many.
    pub fn release(&self, round_start_ns: u64, take: impl FnMut(&[u8]) -> bool) -> u64 {
        let mut merge = self.merge.borrow_mut();
        let mark = merge.watermark(round_start_ns, |i| self.more.get(i).is_some_and(Cell::get));
        merge.release(mark, take)
    }

    /// Hands on everything read, in kernel order, while `take` accepts it
    /// (at exit: nothing more will be read).
    pub fn release_all(&self, take: impl FnMut(&[u8]) -> bool) -> u64 {
        self.merge.borrow_mut().release(u64::MAX, take)
    }
}
