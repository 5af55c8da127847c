//! The writer thread: formatted lines go through a bounded queue to the sink,
//! so a slow sink (a stalled pipe, a remote receiver) never stalls the
//! ring-buffer reader. Under pressure UDP lines are shed first, so TCP events
//! keep the room; everything dropped is counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use super::Sink;

/// What a line carries, for the shedding policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Tcp,
    Udp,
    /// The sensor's own events (service state, config, loss, stats).
    Sensor,
}

/// Lines handed off together, back to back in one buffer: one allocation
/// per batch instead of one per line, and the writer sends emptied batches
/// back for reuse (lines allocated in one thread and freed in another kept
/// the allocator returning and re-faulting pages).
#[derive(Debug, Default)]
pub struct Batch {
    text: Vec<u8>,
    /// Where each line ends in `text` (each line ends with its newline).
    ends: Vec<usize>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Every line, back to back.
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let line = &self.text[start..end];
            start = end;
            line
        })
    }

    fn with_capacity(bytes: usize) -> Self {
        Self { text: Vec::with_capacity(bytes), ends: Vec::with_capacity(BATCH_MAX) }
    }

    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }
}

enum Msg {
    /// A batch of lines: one hand-off per batch, not per line.
    Lines(Batch),
    Reopen,
}

/// Room a new batch starts with: BATCH_MAX lines of ~1 KiB. Growing from
/// nothing cost a dozen reallocations per batch, each copying the lines so far.
const BATCH_TEXT: usize = 256 * 1024;

#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Lines taken by `send` (batched or handed off).
    pub accepted: AtomicU64,
    pub written: AtomicU64,
    /// Accepted lines dropped at hand-off (also counted in `dropped`).
    pub dropped_at_handoff: AtomicU64,
    /// UDP lines shed because the queue was past its high-water mark.
    pub udp_shed: AtomicU64,
    /// Lines dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Lines a sink gave up on (a syslog receiver gone or too slow).
    pub sink_dropped: AtomicU64,
    /// Rounds of the writer's loop (at least one per FLUSH_EVERY while it runs).
    pub writer_rounds: crate::backpressure::Heartbeat,
    /// Notified each time the writer has written a batch (`wait_for_room`).
    written_batch: (Mutex<()>, Condvar),
}

/// The queue's backlog as seen from another thread (see `crate::pace`).
pub struct BacklogGauge(Arc<QueueCounters>);

impl BacklogGauge {
    pub fn read(&self) -> crate::backpressure::Backlog {
        self.0.backlog()
    }
}

impl QueueCounters {
    /// Lines out (written, or dropped at hand-off) and lines still waiting
    /// (batched or queued).
    fn backlog(&self) -> crate::backpressure::Backlog {
        // Read what settled before what was accepted, so pending never
        // comes out negative for a line in flight.
        let done = self.written.load(Ordering::Acquire) + self.dropped_at_handoff.load(Ordering::Acquire);
        let accepted = self.accepted.load(Ordering::Acquire);
        crate::backpressure::Backlog { done, pending: accepted.saturating_sub(done) }
    }
}

/// Counters as plain numbers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub written: u64,
    pub udp_shed: u64,
    pub dropped: u64,
    pub sink_dropped: u64,
}

pub struct SinkQueue {
    tx: Option<SyncSender<Msg>>,
    /// Lines accepted since the last `commit`.
    batch: Batch,
    /// Batches the writer is done with, for reuse.
    spare: Receiver<Batch>,
    /// When the first line of `batch` came.
    batch_since: Option<Instant>,
    capacity: usize,
    counters: Arc<QueueCounters>,
    error: Arc<Mutex<Option<String>>>,
    writer: Option<JoinHandle<()>>,
}

/// Lines per hand-off at most: a long poll still feeds the writer as it goes.
const BATCH_MAX: usize = 256;

/// Emptied batches kept for reuse: as many full ones as the queue can hold
/// (and the two being filled and written), up to the default queue's 64 (16
/// MiB of 1 KiB lines): a huge `--queue-capacity` should not keep its peak for
/// good. Memory freed after a burst came back as fresh pages (page faults,
/// zeroing) for the next: ~5% of the CPU.
fn spare_slots(capacity: usize) -> usize {
    capacity.div_ceil(BATCH_MAX).min(64) + 2
}

/// A batch is handed off once it is this old (or the reader has nothing more
/// to read): each hand-off wakes the writer and costs a write(2), so handing
/// off every line of a steady trickle cost more than formatting it.
const BATCH_AGE: Duration = Duration::from_millis(10);

/// The writer flushes at least this often, so a line is out within it.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

impl SinkQueue {
    /// Every line goes to each of `sinks`.
    pub fn start(mut sinks: Vec<Sink>, capacity: usize) -> Result<Self> {
        let capacity = capacity.max(16);
        let (tx, rx) = sync_channel::<Msg>(capacity);
        let (spare_tx, spare) = sync_channel::<Batch>(spare_slots(capacity));
        let counters = Arc::new(QueueCounters::default());
        let error = Arc::new(Mutex::new(None));
        let (c, e) = (Arc::clone(&counters), Arc::clone(&error));
        let writer = std::thread::Builder::new()
            .name("sockscope-sink".into())
            .spawn(move || {
                if let Err(err) = write_loop(&mut sinks, &rx, &spare_tx, &c) {
                    if let Ok(mut slot) = e.lock() {
                        *slot = Some(format!("{err:#}"));
                    }
                }
            })
            .context("starting the writer thread")?;
        Ok(Self {
            tx: Some(tx),
            batch: Batch::default(),
            spare,
            batch_since: None,
            capacity,
            counters,
            error,
            writer: Some(writer),
        })
    }

    /// Takes a line for the next `commit`. Never blocks. Returns false if the
    /// line was dropped (counted): the queue counts lines, batches or not.
    pub fn send(&mut self, kind: LineKind, line: &[u8]) -> bool {
        self.send_with(kind, |buf| {
            buf.extend_from_slice(line);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or(false)
    }

    /// Like `send`, but `write` puts the line (with its newline) straight
    /// into the batch; it is not called when the line would be shed or
    /// dropped. An error from `write` leaves the batch as it was.
    pub fn send_with<E>(
        &mut self,
        kind: LineKind,
        write: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), E>,
    ) -> std::result::Result<bool, E> {
        if self.tx.is_none() {
            return Ok(false);
        }
        let queued = self.pending();
        // Past three quarters full, UDP gives way to TCP and the sensor's own.
        if kind == LineKind::Udp && queued >= self.capacity * 3 / 4 {
            self.counters.udp_shed.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        if queued >= self.capacity {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let start = self.batch.text.len();
        if let Err(e) = write(&mut self.batch.text) {
            self.batch.text.truncate(start);
            return Err(e);
        }
        if self.batch.is_empty() {
            self.batch_since = Some(Instant::now());
        }
        self.batch.ends.push(self.batch.text.len());
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        if self.batch.len() >= BATCH_MAX {
            self.commit();
        }
        Ok(true)
    }

    /// Hands the batch off if it is due: the reader is idle (`idle`), or the
    /// batch is `BATCH_AGE` old.
    pub fn commit_if_due(&mut self, idle: bool) {
        self.commit_if_due_at(idle, Instant::now());
    }

    /// `commit_if_due` with the clock read by the caller (tests pass their own).
    fn commit_if_due_at(&mut self, idle: bool, now: Instant) {
        if idle || self.batch_since.is_some_and(|t| now.saturating_duration_since(t) >= BATCH_AGE) {
            self.commit();
        }
    }

    /// Hands the batch to the writer now.
    pub fn commit(&mut self) {
        self.batch_since = None;
        if self.batch.is_empty() {
            return;
        }
        let Some(tx) = self.tx.as_ref() else {
            return;
        };
        let next = self.spare.try_recv().unwrap_or_else(|_| Batch::with_capacity(BATCH_TEXT));
        let lines = std::mem::replace(&mut self.batch, next);
        let n = lines.len();
        // The line count (`pending`) bounds the queue; the channel's own bound
        // is in batches, so a full channel means the writer is far behind.
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(Msg::Lines(lines)) {
            self.counters.dropped.fetch_add(n as u64, Ordering::Relaxed);
            self.counters.dropped_at_handoff.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Half the queue or more is waiting for the writer.
    pub fn backed_up(&self) -> bool {
        self.pending() >= self.capacity / 2
    }

    /// A quarter of the queue or less is waiting for the writer.
    pub fn has_room(&self) -> bool {
        self.pending() <= self.capacity / 4
    }

    /// Blocks until the queue has room (`has_room`), at most `max`.
    pub fn wait_for_room(&self, max: Duration) {
        let (lock, written) = &self.counters.written_batch;
        let Ok(guard) = lock.lock() else { return };
        let _ = written.wait_timeout_while(guard, max, |_| !self.has_room());
    }

    /// Lines accepted and not yet out: batched or queued.
    fn pending(&self) -> usize {
        usize::try_from(self.counters.backlog().pending).unwrap_or(usize::MAX)
    }

    /// The writer loop's rounds.
    /// Most lines the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn writer_heartbeat(&self) -> crate::backpressure::Heartbeat {
        self.counters.writer_rounds.clone()
    }

    /// Lines not yet out (batched or queued), readable from another thread.
    pub fn backlog_gauge(&self) -> BacklogGauge {
        BacklogGauge(Arc::clone(&self.counters))
    }

    /// Asks the writer to reopen its file (SIGHUP, after logrotate).
    pub fn reopen(&self) {
        if let Some(tx) = self.tx.as_ref() {
            // Blocking is fine here: a signal, not the event path.
            let _ = tx.send(Msg::Reopen);
        }
    }

    pub fn stats(&self) -> QueueStats {
        QueueStats {
            written: self.counters.written.load(Ordering::Relaxed),
            udp_shed: self.counters.udp_shed.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            sink_dropped: self.counters.sink_dropped.load(Ordering::Relaxed),
        }
    }

    /// The writer's error, if it stopped on one (e.g. the output went away).
    pub fn failed(&self) -> Option<anyhow::Error> {
        self.error.lock().ok().and_then(|e| e.clone()).map(|msg| anyhow!(msg))
    }

    /// Writes out everything queued, then stops the writer.
    pub fn close(mut self) -> Result<()> {
        self.commit();
        self.shutdown();
        match self.failed() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn shutdown(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for SinkQueue {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn write_loop(
    sinks: &mut [Sink],
    rx: &Receiver<Msg>,
    spare: &SyncSender<Batch>,
    counters: &QueueCounters,
) -> Result<()> {
    let handle = |sinks: &mut [Sink], msg: Msg| -> Result<()> {
        match msg {
            Msg::Lines(mut batch) => {
                for sink in sinks.iter_mut() {
                    sink.write_batch(&batch)?;
                }
                counters.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                // Taking the lock orders this after a waiter's check of the queue.
                drop(counters.written_batch.0.lock());
                counters.written_batch.1.notify_all();
                batch.clear();
                // Full: more small batches were in flight than full ones fit
                // in the queue; this one is freed.
                let _ = spare.try_send(batch);
            }
            Msg::Reopen => {
                for sink in sinks.iter_mut() {
                    sink.reopen()?;
                }
            }
        }
        Ok(())
    };
    let flush = |sinks: &mut [Sink]| -> Result<()> {
        for sink in sinks.iter_mut() {
            sink.flush()?;
        }
        counters.sink_dropped.store(sinks.iter().map(Sink::dropped).sum(), Ordering::Relaxed);
        Ok(())
    };
    loop {
        counters.writer_rounds.beat();
        match rx.recv_timeout(FLUSH_EVERY) {
            Ok(msg) => {
                handle(sinks, msg)?;
                // Drain what is there, then flush once.
                while let Ok(msg) = rx.try_recv() {
                    handle(sinks, msg)?;
                }
                flush(sinks)?;
            }
            Err(RecvTimeoutError::Timeout) => flush(sinks)?,
            Err(RecvTimeoutError::Disconnected) => {
                for sink in sinks.iter_mut() {
                    sink.close()?;
                }
                counters.sink_dropped.store(sinks.iter().map(Sink::dropped).sum(), Ordering::Relaxed);
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_sink() -> (tempfile::TempDir, std::path::PathBuf, Sink) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let sink = Sink::file(&path).expect("sink");
        (dir, path, sink)
    }

    fn stalled(capacity: usize) -> (SinkQueue, Receiver<Msg>) {
        // A writer that cannot keep up: nothing is consumed while we fill.
        let (tx, rx) = sync_channel::<Msg>(capacity);
        let (_, spare) = sync_channel::<Batch>(1);
        let q = SinkQueue {
            tx: Some(tx),
            batch: Batch::default(),
            spare,
            batch_since: None,
            capacity,
            counters: Arc::new(QueueCounters::default()),
            error: Arc::new(Mutex::new(None)),
            writer: None,
        };
        (q, rx)
    }

    #[test]
    fn lines_arrive_in_order_and_are_flushed_on_close() {
        let (_d, path, sink) = file_sink();
        let mut q = SinkQueue::start(vec![sink], 1024).expect("start");
        for i in 0..500 {
            assert!(q.send(LineKind::Tcp, format!("{i}\n").as_bytes()));
            if i % 7 == 0 {
                q.commit();
            }
        }
        q.close().expect("close");
        let text = std::fs::read_to_string(&path).expect("read");
        let got: Vec<usize> = text.lines().map(|l| l.parse().expect("number")).collect();
        assert_eq!(got, (0..500).collect::<Vec<_>>());
    }

    #[test]
    fn udp_is_shed_first_and_everything_dropped_is_counted() {
        let (mut q, _rx) = stalled(16);
        let mut sent_udp = 0;
        for _ in 0..20 {
            sent_udp += usize::from(q.send(LineKind::Udp, b"u\n"));
        }
        q.commit();
        assert_eq!(sent_udp, 12, "UDP stops at three quarters");
        let mut sent_tcp = 0;
        for _ in 0..10 {
            sent_tcp += usize::from(q.send(LineKind::Tcp, b"t\n"));
        }
        q.commit();
        assert_eq!(sent_tcp, 4, "TCP gets the rest");
        let s = q.stats();
        assert_eq!((s.udp_shed, s.dropped), (8, 6));
    }

    #[test]
    fn a_batch_is_handed_off_when_idle_or_old() {
        let (mut q, rx) = stalled(16);
        assert!(q.send(LineKind::Tcp, b"t\n"));
        let started = q.batch_since.expect("a batch started");
        q.commit_if_due_at(false, started + BATCH_AGE - Duration::from_millis(1));
        assert!(rx.try_recv().is_err(), "a fresh batch waits while the reader is busy");
        q.commit_if_due_at(false, started + BATCH_AGE);
        assert!(matches!(rx.try_recv(), Ok(Msg::Lines(l)) if l.len() == 1), "an old batch goes");
        assert!(q.send(LineKind::Tcp, b"t\n"));
        q.commit_if_due(true);
        assert!(matches!(rx.try_recv(), Ok(Msg::Lines(l)) if l.len() == 1), "an idle reader hands off at once");
    }

    /// Every full batch the queue can hold comes back from the writer with
    /// its room: after a burst, the next one writes into memory it already
    /// has instead of fresh pages.
    #[test]
    fn every_emptied_batch_comes_back_for_reuse() {
        let (_d, _path, sink) = file_sink();
        let capacity = 16 * BATCH_MAX;
        let in_flight = capacity / BATCH_MAX;
        let (tx, rx) = sync_channel::<Msg>(in_flight);
        let (spare_tx, spare_rx) = sync_channel::<Batch>(spare_slots(capacity));
        for _ in 0..in_flight {
            let mut batch = Batch::with_capacity(BATCH_TEXT);
            for _ in 0..BATCH_MAX {
                batch.text.extend_from_slice(&[b'x'; 1023]);
                batch.text.push(b'\n');
                batch.ends.push(batch.text.len());
            }
            tx.send(Msg::Lines(batch)).expect("queued");
        }
        drop(tx);
        let counters = QueueCounters::default();
        write_loop(&mut [sink], &rx, &spare_tx, &counters).expect("written");
        assert_eq!(counters.written.load(Ordering::Relaxed), (in_flight * BATCH_MAX) as u64);
        let back: Vec<Batch> = spare_rx.try_iter().collect();
        assert_eq!(back.len(), in_flight, "every batch comes back");
        assert!(back.iter().all(|b| b.is_empty() && b.text.capacity() >= BATCH_MAX * 1024));
    }

    #[test]
    fn send_never_blocks_on_a_stalled_writer() {
        let (mut q, rx) = stalled(16);
        // On a thread: a send that blocked would show as no answer (bounded
        // wait, generous for any machine) instead of hanging the test.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let sender = std::thread::spawn(move || {
            for _ in 0..10_000 {
                q.send(LineKind::Tcp, b"t\n");
                q.commit();
            }
            let _ = done_tx.send(q.stats().dropped);
            q
        });
        let dropped = done_rx.recv_timeout(Duration::from_secs(120)).expect("sends returned");
        assert_eq!(dropped, 10_000 - 16);
        drop(sender.join().expect("sender"));
        drop(rx);
    }
}
