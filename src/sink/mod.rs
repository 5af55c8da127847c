//! Sink: where formatted lines go, written by the writer thread (queue.rs),
//! buffered and flushed whenever the queue runs empty (at least every 100 ms).
pub mod queue;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub enum Sink {
    Stdout(BufWriter<io::Stdout>),
    File { path: PathBuf, out: BufWriter<File> },
}

fn open_append(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("cannot open output file {}", path.display()))
}

impl Sink {
    pub fn stdout() -> Self {
        Sink::Stdout(BufWriter::new(io::stdout()))
    }

    /// Appends to `path`, creating it (mode 0640) if needed.
    pub fn file(path: &Path) -> Result<Self> {
        Ok(Sink::File { path: path.to_path_buf(), out: BufWriter::new(open_append(path)?) })
    }

    pub fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Stdout(w) => w,
            Sink::File { out, .. } => out,
        }
    }

    /// One formatted event (it ends with its newline).
    pub fn write_line(&mut self, line: &[u8]) -> Result<()> {
        self.writer().write_all(line).context("writing event")
    }

    pub fn flush(&mut self) -> Result<()> {
        self.writer().flush().context("flushing output")
    }

    /// After logrotate moved the file away (SIGHUP): flush to the old one,
    /// continue in a new file at the same path.
    pub fn reopen(&mut self) -> Result<()> {
        if let Sink::File { path, out } = self {
            out.flush().context("flushing output before reopening")?;
            *out = BufWriter::new(open_append(path)?);
            tracing::info!("reopened {}", path.display());
        }
        Ok(())
    }
}
