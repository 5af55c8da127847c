//! EventRecordID: increases across events and across restarts, and is never
//! handed out twice, even after a crash.
//!
//! The state file holds one decimal number and a newline: the lowest id that
//! no run has been allowed to hand out yet. Ids are reserved in blocks: before
//! the first id of a block is handed out, the end of the block is written to
//! the file (write to a temporary file, fsync, rename, fsync the directory),
//! so a crash can only skip the rest of a block, never reuse an id. One file
//! write per block keeps it cheap. A clean [`RecordIds::close`] writes back
//! the next unused id, so a normal restart leaves no gap.
//!
//! One writer per state file: two sensors sharing a file would hand out the
//! same ids.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Ids reserved per state-file write.
pub const DEFAULT_BLOCK: u64 = 1024;

/// The first id of a state file that does not exist yet (Windows event logs
/// also start at 1).
const FIRST_ID: u64 = 1;

#[derive(Debug)]
pub struct RecordIds {
    path: PathBuf,
    block: u64,
    /// The id the next call hands out.
    next: u64,
    /// First id not covered by the reservation on disk.
    reserved_end: u64,
    /// What was done about a corrupt state file, to be said in an event.
    pub recovered: Option<String>,
}

impl RecordIds {
    /// Loads the state file at `path` (a missing file starts at 1) and
    /// reserves the first block. `block` is how many ids one file write
    /// covers; it must be at least 1.
    pub fn open(path: impl Into<PathBuf>, block: u64) -> Result<Self> {
        let path = path.into();
        if block == 0 {
            bail!("record id block size must be at least 1");
        }
        let (next, recovered) = match load(&path) {
            Ok(Some(n)) => (n, None),
            Ok(None) => (FIRST_ID, None),
            Err(Load::Io(e)) => return Err(e),
            Err(Load::Corrupt(why)) => {
                let (base, said) = set_aside(&path, &why)?;
                tracing::warn!("{said}");
                (base, Some(said))
            }
        };
        let mut ids = Self { path, block, next, reserved_end: next, recovered };
        ids.reserve()?;
        Ok(ids)
    }

    /// The next EventRecordID. Writes the state file once per block.
    pub fn next_id(&mut self) -> Result<u64> {
        if self.next >= self.reserved_end {
            self.reserve()?;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }

    /// Clean shutdown: gives the unused rest of the block back, so the next
    /// run continues right after the last id handed out.
    pub fn close(self) -> Result<()> {
        store(&self.path, self.next)
    }

    fn reserve(&mut self) -> Result<()> {
        let end = self
            .next
            .checked_add(self.block)
            .with_context(|| format!("record ids exhausted in {} (next id {})", self.path.display(), self.next))?;
        store(&self.path, end)?;
        self.reserved_end = end;
        Ok(())
    }
}

enum Load {
    Io(anyhow::Error),
    /// The file is there but holds no id: why.
    Corrupt(String),
}

fn load(path: &Path) -> std::result::Result<Option<u64>, Load> {
    let bytes = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Load::Io(
                anyhow::Error::new(e).context(format!("reading record id state file {}", path.display())),
            ))
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    match text.strip_suffix('\n').unwrap_or(&text).parse::<u64>() {
        Ok(n) => Ok(Some(n)),
        Err(_) => Err(Load::Corrupt(format!(
            "expected one decimal number, found {:?}",
            text.chars().take(40).collect::<String>()
        ))),
    }
}

/// A corrupt state file is kept aside (`NAME.corrupt-SECONDS`) and the ids
/// go on from a fresh base above any the file can have held in practice:
/// the wall clock in microseconds (ids would have to have been handed out
/// faster than a million a second since 1970 to meet it). Returns the base
/// and what to say.
fn set_aside(path: &Path, why: &str) -> Result<(u64, String)> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut aside = path.as_os_str().to_os_string();
    aside.push(format!(".corrupt-{}", now.as_secs()));
    let aside = PathBuf::from(aside);
    fs::rename(path, &aside)
        .with_context(|| format!("moving corrupt record id state file {} aside", path.display()))?;
    let base = u64::try_from(now.as_micros()).unwrap_or(u64::MAX / 2).max(FIRST_ID);
    Ok((
        base,
        format!(
            "record id state file {} was corrupt ({why}); kept as {}, EventRecordIDs go on from a fresh base {base}",
            path.display(),
            aside.display()
        ),
    ))
}

/// Atomic replace: readers (and a restart after a crash) see the old or the
/// new number, never a torn write.
fn store(path: &Path, value: u64) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().with_context(|| format!("record id state path {} has no file name", path.display()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(format!("{value}\n").as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory is.
        File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("writing record id state file {} (via {})", path.display(), tmp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_file_starts_at_one_and_increases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("record_id");
        let mut ids = RecordIds::open(&path, 4).expect("open");
        let got: Vec<u64> = (0..10).map(|_| ids.next_id().expect("id")).collect();
        assert_eq!(got, (1..=10).collect::<Vec<u64>>());
        // Three blocks of four reserved: 1..=12 covered on disk.
        assert_eq!(fs::read_to_string(&path).expect("read"), "13\n");
    }

    #[test]
    fn crash_skips_the_block_but_never_reuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("record_id");
        let mut a = RecordIds::open(&path, 100).expect("open");
        let last = (0..5).map(|_| a.next_id().expect("id")).last().expect("ids");
        drop(a); // no close(): as if the sensor crashed
        let mut b = RecordIds::open(&path, 100).expect("reopen");
        let first = b.next_id().expect("id");
        assert!(first > last, "{first} after {last}");
        assert_eq!(first, 101);
    }

    #[test]
    fn clean_close_continues_without_gap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("record_id");
        let mut a = RecordIds::open(&path, 100).expect("open");
        for _ in 0..5 {
            a.next_id().expect("id");
        }
        a.close().expect("close");
        let mut b = RecordIds::open(&path, 100).expect("reopen");
        assert_eq!(b.next_id().expect("id"), 6);
    }

    #[test]
    fn corrupt_file_is_kept_aside_and_ids_go_on_from_a_fresh_base() {
        let now_us =
            || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_micros() as u64;
        for bad in ["", "banana\n", "-3\n", "12 13\n", "99999999999999999999999\n", "\u{0}\u{0}"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("record_id");
            fs::write(&path, bad).expect("write");
            let before = now_us();
            let mut ids = RecordIds::open(&path, 10).unwrap_or_else(|e| panic!("{bad:?}: {e:#}"));
            let said = ids.recovered.clone().expect("said");
            assert!(said.contains("corrupt") && said.contains("record_id"), "{bad:?}: {said}");
            let first = ids.next_id().expect("id");
            assert!(first >= before && first <= now_us(), "{bad:?}: fresh base {first}");
            let aside: Vec<_> = fs::read_dir(dir.path())
                .expect("dir")
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("record_id.corrupt-"))
                .collect();
            assert_eq!(aside.len(), 1, "{bad:?}: kept aside");
            assert_eq!(fs::read(aside[0].path()).expect("read"), bad.as_bytes());
            ids.close().expect("close");
            let mut again = RecordIds::open(&path, 10).expect("reopen");
            assert!(again.recovered.is_none());
            assert_eq!(again.next_id().expect("id"), first + 1, "{bad:?}: goes on from there");
        }
    }

    #[test]
    fn unreadable_path_is_an_error_with_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: reading it fails.
        let err = RecordIds::open(dir.path(), 10).expect_err("a directory is not a state file");
        assert!(format!("{err:#}").contains(&dir.path().display().to_string()), "{err:#}");
        // A parent that does not exist: the reservation cannot be written.
        let missing = dir.path().join("no/such/dir/record_id");
        let err = RecordIds::open(&missing, 10).expect_err("missing parent");
        assert!(format!("{err:#}").contains("writing record id state file"), "{err:#}");
    }

    #[test]
    fn exhaustion_is_an_error_not_a_wrap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("record_id");
        fs::write(&path, format!("{}\n", u64::MAX - 2)).expect("write");
        let mut ids = RecordIds::open(&path, 2).expect("open");
        assert_eq!(ids.next_id().expect("id"), u64::MAX - 2);
        assert_eq!(ids.next_id().expect("id"), u64::MAX - 1);
        let err = ids.next_id().expect_err("exhausted");
        assert!(format!("{err:#}").contains("exhausted"), "{err:#}");
        assert!(RecordIds::open(&path, 0).is_err(), "block 0 refused");
    }
}
