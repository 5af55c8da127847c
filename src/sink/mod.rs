//! Sink: where formatted lines go. Buffered; the main loop flushes after
//! every ring-buffer poll, so an event is out within one poll interval.
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

pub enum Sink {
    Stdout(BufWriter<io::Stdout>),
    File(BufWriter<File>),
}

impl Sink {
    pub fn stdout() -> Self {
        Sink::Stdout(BufWriter::new(io::stdout()))
    }

    /// Appends to `path`, creating it (mode 0640) if needed.
    pub fn file(path: &Path) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .with_context(|| format!("cannot open output file {}", path.display()))?;
        Ok(Sink::File(BufWriter::new(file)))
    }

    pub fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Stdout(w) => w,
            Sink::File(w) => w,
        }
    }

    pub fn flush(&mut self) -> Result<()> {
        self.writer().flush().context("flushing output")
    }
}
