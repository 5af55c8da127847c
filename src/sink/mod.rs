//! Sink: where formatted lines go, written by the writer thread (queue.rs)
//! in batches, flushed whenever the queue runs empty (at least every 100 ms).
pub mod file;
pub mod queue;
pub mod syslog;

/// A formatted line as syslog message text: no newline (events are valid
/// UTF-8: every field went through text.rs escaping).
fn syslog_text(line: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line))
}

use std::path::Path;

use anyhow::Result;

pub enum Sink {
    /// The output file or stdout: faults counted, never fatal (file.rs).
    File(file::FileSink),
    /// RFC 3164 to the local log socket, as Sysmon for Linux writes.
    LocalSyslog(Box<syslog::LocalSyslog>),
    /// RFC 3164 (as rsyslog forwards) or RFC 5424 over UDP or TCP, from its own sender thread.
    RemoteSyslog(syslog::RemoteSyslog),
}

/// How long shutdown waits for a syslog receiver to take what is queued.
const SYSLOG_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Sink {
    pub fn stdout() -> Result<Self> {
        Ok(Sink::File(file::FileSink::stdout()?))
    }

    /// Appends to `path`, creating it (mode 0640) if needed.
    pub fn file(path: &Path) -> Result<Self> {
        Ok(Sink::File(file::FileSink::open(path)?))
    }

    /// A batch of lines: streams take it in one write, syslog one message
    /// per line.
    pub fn write_batch(&mut self, batch: &queue::Batch) -> Result<()> {
        match self {
            Sink::File(f) => {
                f.write_lines(batch.text(), batch.len() as u64);
                Ok(())
            }
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
            Sink::File(f) => {
                f.flush();
                Ok(())
            }
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
            Sink::File(f) => f.announced_drops(),
        }
    }

    /// After logrotate moved the file away (SIGHUP): flush to the old one,
    /// continue in a new file at the same path.
    pub fn reopen(&mut self) -> Result<()> {
        if let Sink::File(f) = self {
            f.reopen();
        }
        Ok(())
    }
}
