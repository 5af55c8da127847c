//! Time: the kernel's boot clock (every fact's stamp) and its conversion to
//! the wall clock and to Sysmon's `UtcTime` text. A leaf: every stage may use it.

use anyhow::{Context, Result};
use nix::time::{clock_gettime, ClockId};
use time::{format_description::FormatItem, macros::format_description, OffsetDateTime};

const UTC_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]");

fn clock_ns(id: ClockId) -> Result<i128> {
    let ts = clock_gettime(id).with_context(|| format!("clock_gettime({id})"))?;
    Ok(i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec()))
}

/// Now on the clock of bpf_ktime_get_boot_ns().
pub fn boot_now_ns() -> u64 {
    clock_ns(ClockId::CLOCK_BOOTTIME).map_or(0, |ns| u64::try_from(ns).unwrap_or(0))
}

/// Converts kernel boot-clock timestamps to wall-clock time. The boot clock
/// keeps counting across suspend, so one offset holds; it is re-synced
/// periodically to follow wall-clock adjustments (NTP, settimeofday).
pub struct WallClock {
    offset_ns: i128,
    /// How far the offset can be off: half the boot-clock bracket of the
    /// realtime read it came from.
    skew_bound_ns: i128,
    synced_at_boot_ns: u64,
    resync_ns: u64,
    /// The last second formatted, "YYYY-MM-DD hh:mm:ss": events come many
    /// per second, and only the milliseconds change between them.
    second: Option<(i128, String)>,
}

impl WallClock {
    pub fn new(resync_ns: u64) -> Result<Self> {
        let mut c = Self { offset_ns: 0, skew_bound_ns: 0, synced_at_boot_ns: 0, resync_ns, second: None };
        c.sync()?;
        Ok(c)
    }

    fn sync(&mut self) -> Result<()> {
        // Bracket the realtime read with boot-clock reads to halve the skew.
        let b1 = clock_ns(ClockId::CLOCK_BOOTTIME)?;
        let real = clock_ns(ClockId::CLOCK_REALTIME)?;
        let b2 = clock_ns(ClockId::CLOCK_BOOTTIME)?;
        let boot = (b1 + b2) / 2;
        self.offset_ns = real - boot;
        self.skew_bound_ns = (b2 - b1) / 2 + 1;
        self.synced_at_boot_ns = u64::try_from(boot).unwrap_or(0);
        Ok(())
    }

    pub fn maybe_resync(&mut self, now_boot_ns: u64) {
        if now_boot_ns.saturating_sub(self.synced_at_boot_ns) >= self.resync_ns {
            if let Err(e) = self.sync() {
                tracing::warn!("wall clock resync failed: {e:#}");
            }
        }
    }

    pub fn unix_ns(&self, boot_ns: u64) -> i128 {
        i128::from(boot_ns) + self.offset_ns
    }

    /// UtcTime of a boot-clock instant, as `format_utc` writes it.
    pub fn utc_time(&mut self, boot_ns: u64) -> String {
        let unix_ns = self.unix_ns(boot_ns);
        let (second, ms) = (unix_ns.div_euclid(1_000_000_000), unix_ns.rem_euclid(1_000_000_000) / 1_000_000);
        if self.second.as_ref().is_none_or(|(s, _)| *s != second) {
            let full = format_utc(unix_ns);
            // "-" when out of range: nothing to reuse.
            let Some(prefix) = full.get(..19) else {
                return full;
            };
            self.second = Some((second, prefix.to_string()));
        }
        let prefix = self.second.as_ref().map_or("", |(_, p)| p.as_str());
        let mut out = String::with_capacity(23);
        out.push_str(prefix);
        out.push('.');
        for digit in [ms / 100, ms / 10 % 10, ms % 10] {
            out.push(char::from(b'0' + u8::try_from(digit).unwrap_or(0)));
        }
        out
    }
}

pub fn format_utc(unix_ns: i128) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(unix_ns)
        .ok()
        .and_then(|t| t.format(UTC_TIME).ok())
        .unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_has_millisecond_precision() {
        assert_eq!(format_utc(1_764_434_274_640_999_999), "2025-11-29 16:37:54.640");
        assert_eq!(format_utc(0), "1970-01-01 00:00:00.000");
    }

    #[test]
    fn cached_second_formats_like_format_utc() {
        let mut c = WallClock::new(1_000_000_000).expect("clock");
        let base = boot_now_ns();
        // Within one second, across a second boundary, and far apart.
        for delta in [0, 1_000_000, 999_000_000, 1_000_000_000, 1_001_500_000, 86_400_000_000_000, 7] {
            let boot = base + delta;
            assert_eq!(c.utc_time(boot), format_utc(c.unix_ns(boot)), "delta {delta}");
        }
    }

    #[test]
    fn wall_clock_tracks_realtime() {
        let c = WallClock::new(1_000_000_000).expect("clock");
        // Bracketed by two realtime reads: right within the sync's own
        // uncertainty, however long the reads take on a busy machine.
        let before = clock_ns(ClockId::CLOCK_REALTIME).expect("realtime");
        let converted = c.unix_ns(boot_now_ns());
        let after = clock_ns(ClockId::CLOCK_REALTIME).expect("realtime");
        let skew = c.skew_bound_ns;
        assert!(
            before - skew <= converted && converted <= after + skew,
            "{converted} not within [{before}, {after}] +- {skew} ns"
        );
    }
}
