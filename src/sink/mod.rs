//! Sink: where formatted lines go, written by the writer thread (queue.rs)
//! in batches, flushed whenever the queue runs empty (at least every 100 ms).
pub mod queue;
pub mod syslog;

/// A formatted line as syslog message text: no newline (events are valid
/// UTF-8: every field went through text.rs escaping).
fn syslog_text(line: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line))
}

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub enum Sink {
    Stdout(BufWriter<io::Stdout>),
    File {
        path: PathBuf,
        out: BufWriter<File>,
    },
    /// RFC 3164 to the local log socket, as Sysmon for Linux writes.
    LocalSyslog(Box<syslog::LocalSyslog>),
    /// RFC 3164 (as rsyslog forwards) or RFC 5424 over UDP or TCP, from its own sender thread.
    RemoteSyslog(syslog::RemoteSyslog),
}

/// How long shutdown waits for a syslog receiver to take what is queued.
const SYSLOG_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn open_append(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("cannot open output file {}", path.display()))
}

/// Output buffer: a batch of lines goes out in few write(2) calls.
const OUT_BUFFER: usize = 64 * 1024;

impl Sink {
    pub fn stdout() -> Self {
        Sink::Stdout(BufWriter::with_capacity(OUT_BUFFER, io::stdout()))
    }

    /// Appends to `path`, creating it (mode 0640) if needed.
    pub fn file(path: &Path) -> Result<Self> {
        Ok(Sink::File { path: path.to_path_buf(), out: BufWriter::with_capacity(OUT_BUFFER, open_append(path)?) })
    }

    /// A batch of lines: streams take it in one write, syslog one message
    /// per line.
    pub fn write_batch(&mut self, batch: &queue::Batch) -> Result<()> {
        match self {
            Sink::Stdout(w) => w.write_all(batch.text()).context("writing events"),
            Sink::File { out, .. } => out.write_all(batch.text()).context("writing events"),
            Sink::LocalSyslog(s) => {
                batch.lines().for_each(|line| s.send(&syslog_text(line)));
                Ok(())
            }
            Sink::RemoteSyslog(s) => {
                batch.lines().for_each(|line| s.send(&syslog_text(line)));
                Ok(())
            }
        }
    }

    /// Pushes out what is buffered; syslog sinks only try, without waiting.
    pub fn flush(&mut self) -> Result<()> {
        match self {
            Sink::Stdout(w) => w.flush().context("flushing output"),
            Sink::File { out, .. } => out.flush().context("flushing output"),
            Sink::LocalSyslog(s) => {
                s.flush(std::time::Duration::ZERO);
                Ok(())
            }
            Sink::RemoteSyslog(_) => Ok(()),
        }
    }

    /// Final flush at shutdown: syslog sinks get a bounded wait.
    pub fn close(&mut self) -> Result<()> {
        match self {
            Sink::LocalSyslog(s) => {
                s.flush(SYSLOG_CLOSE_WAIT);
                Ok(())
            }
            Sink::RemoteSyslog(s) => {
                s.flush(SYSLOG_CLOSE_WAIT);
                Ok(())
            }
            other => other.flush(),
        }
    }

    /// Messages this sink gave up on (syslog receivers gone or slow).
    pub fn dropped(&self) -> u64 {
        match self {
            Sink::LocalSyslog(s) => s.stats().dropped,
            Sink::RemoteSyslog(s) => s.stats().dropped,
            _ => 0,
        }
    }

    /// After logrotate moved the file away (SIGHUP): flush to the old one,
    /// continue in a new file at the same path.
    pub fn reopen(&mut self) -> Result<()> {
        if let Sink::File { path, out } = self {
            out.flush().context("flushing output before reopening")?;
            *out = BufWriter::with_capacity(OUT_BUFFER, open_append(path)?);
            tracing::info!("reopened {}", path.display());
        }
        Ok(())
    }
}
