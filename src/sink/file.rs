//! The output file: written whole lines at a time, and kept going through
//! faults. A write that fails (disk full, EIO) is undone to the last whole
//! line, its lines are counted as dropped and the sensor goes on; the file
//! is retried (and, when it cannot be written or was never reopened,
//! reopened) with backoff. Drops are published (OutputDropped in event 250)
//! once the file is writable again, so the loss event itself gets out.
//! A file that ends in a fragment (the sensor killed mid-write) is cut back
//! to its last whole line before anything is appended.
//!
//! Opened as a regular file only, never through a symlink (O_NOFOLLOW), not
//! on procfs/sysfs, and with mode 0640 enforced.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Lines held between flushes; beyond this they are written at once.
const BUFFER: usize = 64 * 1024;
/// Retry delays while the file cannot be written: doubling up to the max.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How far back a fragment is looked for (the longest line the sensor writes
/// is well under this).
const FRAGMENT_LOOKBACK: u64 = 1 << 20;
const MODE: u32 = 0o640;

pub struct FileSink {
    /// None: stdout.
    path: Option<PathBuf>,
    file: Option<File>,
    /// Whole lines not yet written.
    pending: Vec<u8>,
    pending_lines: u64,
    /// Lines that could not be written, in all.
    dropped: u64,
    /// What `dropped` was when the file was last writable: what is published.
    dropped_published: u64,
    /// While failing: the first error, when to try again, and the delay.
    failing: Option<Failing>,
}

struct Failing {
    retry_at: Instant,
    delay: Duration,
}

/// Opens `path` for appending, as the sensor's output must be: a regular
/// file (created 0640 if missing), not a symlink, not on procfs or sysfs;
/// an existing file is set to 0640 and a trailing fragment cut off.
pub fn open_output(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .with_context(|| match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                format!("cannot open output file {}: it is a symlink (refused)", path.display())
            }
            _ => format!("cannot open output file {}", path.display()),
        })?;
    let meta = file.metadata().with_context(|| format!("output file {}", path.display()))?;
    if !meta.file_type().is_file() {
        bail!("output file {}: not a regular file (refused)", path.display());
    }
    // SAFETY: fstatfs fills the struct it is given.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } == 0 {
        const PROC: i64 = 0x9fa0;
        const SYSFS: i64 = 0x6265_6572;
        #[allow(clippy::unnecessary_cast)]
        let kind = fs.f_type as i64;
        if kind == PROC || kind == SYSFS {
            bail!("output file {}: on procfs/sysfs (refused)", path.display());
        }
    }
    // Back to blocking writes: O_NONBLOCK only kept the open from waiting.
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    if meta.permissions().mode() & 0o7777 != MODE {
        match file.set_permissions(std::fs::Permissions::from_mode(MODE)) {
            Ok(()) => tracing::info!("output file {}: mode set to 0640", path.display()),
            // Not ours to change (another owner, and no CAP_FOWNER): said, not fatal.
            Err(e) => tracing::warn!("output file {}: cannot set mode 0640: {e}", path.display()),
        }
    }
    cut_fragment(&file, path)?;
    Ok(file)
}

/// Standard output as a file of its own (a duplicate descriptor).
fn stdout_file() -> Result<File> {
    use std::os::fd::AsFd;
    let fd = std::io::stdout().as_fd().try_clone_to_owned().context("standard output")?;
    Ok(File::from(fd))
}

/// A file not ending in a newline ends in a fragment of a line (a write
/// the sensor never finished): cut back to its last whole line.
fn cut_fragment(mut file: &File, path: &Path) -> Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let from = len.saturating_sub(FRAGMENT_LOOKBACK);
    file.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    file.take(len - from).read_to_end(&mut tail)?;
    if tail.last() == Some(&b'\n') {
        return Ok(());
    }
    match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => {
            let keep = from + i as u64 + 1;
            file.set_len(keep).with_context(|| format!("cutting a partial line off {}", path.display()))?;
            tracing::warn!("output file {}: cut off a partial last line of {} bytes", path.display(), len - keep);
        }
        None if from == 0 => {
            file.set_len(0).with_context(|| format!("cutting a partial line off {}", path.display()))?;
            tracing::warn!("output file {}: cut off a partial line of {len} bytes", path.display());
        }
        None => {
            // No line end within reach: end the fragment rather than lose more.
            file.write_all(b"\n")?;
            tracing::warn!("output file {}: ended an overlong partial last line", path.display());
        }
    }
    Ok(())
}

impl FileSink {
    pub fn open(path: &Path) -> Result<Self> {
        let file = open_output(path)?;
        Ok(Self::with(Some(path.to_path_buf()), file))
    }

    /// Standard output, with the same fault handling (no undo of a partial
    /// write is possible there: a pipe keeps what it took).
    pub fn stdout() -> Result<Self> {
        Ok(Self::with(None, stdout_file()?))
    }

    fn with(path: Option<PathBuf>, file: File) -> Self {
        Self {
            path,
            file: Some(file),
            pending: Vec::with_capacity(BUFFER),
            pending_lines: 0,
            dropped: 0,
            dropped_published: 0,
            failing: None,
        }
    }

    fn name(&self) -> String {
        match &self.path {
            Some(p) => format!("output file {}", p.display()),
            None => "standard output".to_string(),
        }
    }

    /// Takes whole lines (each ending in a newline).
    pub fn write_lines(&mut self, text: &[u8], lines: u64) {
        if let Some(f) = &self.failing {
            if Instant::now() < f.retry_at {
                self.dropped += lines;
                return;
            }
        }
        self.pending.extend_from_slice(text);
        self.pending_lines += lines;
        if self.pending.len() >= BUFFER {
            self.flush();
        }
    }

    /// Writes what is pending; on a fault, undoes the partial write, counts
    /// the lines and schedules a retry.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            if self.failing.as_ref().is_some_and(|f| Instant::now() >= f.retry_at) {
                // Nothing to write: see whether the file can be had again.
                // (an open file is tried by the next write)
                if self.file.is_none() {
                    self.try_reopen();
                }
            }
            return;
        }
        if self.failing.as_ref().is_some_and(|f| Instant::now() < f.retry_at) {
            self.drop_pending();
            return;
        }
        if self.file.is_none() && !self.try_reopen() {
            self.drop_pending();
            return;
        }
        let Some(file) = self.file.as_mut() else {
            self.drop_pending();
            return;
        };
        let before = file.metadata().map(|m| m.len()).ok();
        match file.write_all(&self.pending) {
            Ok(()) => {
                self.pending.clear();
                self.pending_lines = 0;
                if self.failing.is_some() {
                    self.recovered();
                }
                self.dropped_published = self.dropped;
            }
            Err(e) => {
                // Undo a partial write: the file keeps whole lines only.
                let undone = before.is_some_and(|len| file.set_len(len).is_ok());
                if !undone {
                    // Cut on reopen instead.
                    self.file = None;
                }
                self.drop_pending();
                self.fail(&e.to_string());
            }
        }
    }

    fn drop_pending(&mut self) {
        self.dropped += self.pending_lines;
        self.pending.clear();
        self.pending_lines = 0;
    }

    fn fail(&mut self, why: &str) {
        match &mut self.failing {
            Some(f) => {
                f.delay = (f.delay * 2).min(RETRY_MAX);
                f.retry_at = Instant::now() + f.delay;
            }
            None => {
                tracing::error!(
                    "{}: {why}; events are counted as dropped (OutputDropped) until it can be written again",
                    self.name()
                );
                self.failing = Some(Failing { retry_at: Instant::now() + RETRY_FIRST, delay: RETRY_FIRST });
            }
        }
    }

    fn recovered(&mut self) {
        if self.failing.take().is_some() {
            tracing::warn!(
                "{} writable again; {} lines could not be written",
                self.name(),
                self.dropped - self.dropped_published
            );
        }
        self.dropped_published = self.dropped;
    }

    fn open_again(&self) -> Result<File> {
        match &self.path {
            Some(p) => open_output(p),
            None => stdout_file(),
        }
    }

    fn try_reopen(&mut self) -> bool {
        match self.open_again() {
            Ok(f) => {
                self.file = Some(f);
                true
            }
            Err(e) => {
                self.file = None;
                self.fail(&format!("{e:#}"));
                false
            }
        }
    }

    /// After logrotate moved the file away (SIGHUP): flush to the old one,
    /// continue in a new file at the same path; a path that cannot be
    /// opened now is retried with backoff.
    pub fn reopen(&mut self) {
        self.flush();
        let Some(path) = &self.path else { return };
        match open_output(path) {
            Ok(f) => {
                self.file = Some(f);
                tracing::info!("reopened {}", path.display());
            }
            Err(e) => {
                self.file = None;
                self.fail(&format!("reopening: {e:#}"));
            }
        }
    }

    /// Lines dropped, as far as announced (see the module comment).
    pub fn announced_drops(&self) -> u64 {
        self.dropped_published
    }
}
