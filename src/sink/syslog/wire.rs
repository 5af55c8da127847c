//! The bytes on the wire, as pure functions.
//!
//! Local (what glibc's `syslog(3)` writes to `/dev/log`, glibc 2.36 `misc/syslog.c`):
//! `<PRI>` then `strftime("%h %e %T ")` of the local time in the C locale, then
//! the ident, `[pid]` only with `LOG_PID`, `": "` and the message as given: no
//! hostname, no added newline. On a stream socket the record ends with the
//! string's NUL; a datagram carries no terminator.
//!
//! Remote, RFC 3164 (the default): what rsyslog's `omfwd` sends when it
//! forwards Sysmon's lines (its `RSYSLOG_TraditionalForwardFormat`): the local
//! form with the host name after the stamp, `<PRI>Mmm dd hh:mm:ss HOST
//! IDENT: MSG` (`IDENT[PID]:` with `--syslog-pid`), the stamp in local time.
//!
//! Remote, RFC 5424 (section 6): `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID
//! MSGID SD MSG`, TIMESTAMP in UTC with a numeric offset (`+00:00`: some
//! parsers, Wazuh's among them, take no `Z`), header fields printable
//! US-ASCII with their RFC length limits, `-` when empty. No BOM before MSG:
//! receivers take it as MSG-ANY, and many would show a BOM as garbage.
//!
//! Over TCP either form is framed by a newline after each message (RFC 6587
//! non-transparent framing, what `omfwd` does by default) or `LEN SP MSG`
//! (RFC 6587 octet counting).

use std::io::Write as _;

use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use super::PRI_USER_INFO;

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// RFC 5424 limits (section 6, ABNF).
pub(super) const HOSTNAME_MAX: usize = 255;
pub(super) const APP_NAME_MAX: usize = 48;
pub(super) const PROCID_MAX: usize = 128;
pub(super) const MSGID_MAX: usize = 32;

const RFC3339_MICROS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00");

/// glibc's `"%h %e %T"` for `unix_secs` in local time, C locale:
/// `Nov  9 08:05:03` (day padded with a space).
pub(super) fn local_stamp(unix_secs: i64) -> String {
    let (mon, mday, hour, min, sec) = local_tm(unix_secs);
    format!("{} {:>2} {:02}:{:02}:{:02}", MONTHS[mon], mday, hour, min, sec)
}

/// (month 0-11, day, hour, minute, second) in local time, as glibc's
/// `localtime_r` gives it (same TZ rules as `syslog(3)`); UTC if it fails.
fn local_tm(unix_secs: i64) -> (usize, i32, i32, i32, i32) {
    let t = unix_secs as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value; localtime_r only writes into it
    // and reads `t`, both live for the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok && (0..12).contains(&tm.tm_mon) {
        return (tm.tm_mon as usize, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    }
    let utc = OffsetDateTime::from_unix_timestamp(unix_secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    (utc.month() as usize - 1, utc.day().into(), utc.hour().into(), utc.minute().into(), utc.second().into())
}

/// One local message without terminator: `<14>Nov  9 08:05:03 sysmon: LINE`
/// (`sysmon[PID]: ` when `pid` is given, glibc's `LOG_PID`).
pub(super) fn local_message(stamp: &str, ident: &str, pid: Option<u32>, line: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + stamp.len() + ident.len() + 20);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "<{PRI_USER_INFO}>{stamp} {ident}");
    if let Some(pid) = pid {
        let _ = write!(out, "[{pid}]");
    }
    out.extend_from_slice(b": ");
    out.extend_from_slice(line.as_bytes());
    out
}

/// Why an ident is refused for the local format: it is the TAG that receivers
/// split on (`ident[pid]: `), so it must be one printable token.
pub(super) fn check_ident(ident: &str) -> Result<(), &'static str> {
    if ident.is_empty() {
        return Err("is empty");
    }
    if ident.len() > APP_NAME_MAX {
        return Err("is longer than 48 bytes");
    }
    if !ident.bytes().all(|b| b.is_ascii_graphic() && b != b':' && b != b'[' && b != b']') {
        return Err("must be printable ASCII without spaces, ':', '[' or ']'");
    }
    Ok(())
}

/// An RFC 5424 header field: printable US-ASCII (others become `_`), at most
/// `max` bytes, `-` (NILVALUE) when empty.
pub(super) fn header_field(value: &str, max: usize) -> String {
    let field: String = value.chars().map(|c| if c.is_ascii_graphic() { c } else { '_' }).take(max).collect();
    if field.is_empty() {
        "-".to_owned()
    } else {
        field
    }
}

/// RFC 3339 with microseconds in UTC, numeric offset:
/// `2026-11-29T16:37:54.638341+00:00`.
pub(super) fn rfc3339_micros(t: OffsetDateTime) -> String {
    let utc = t.to_offset(time::UtcOffset::UTC);
    // Only fails for years outside 0..=9999, which `now` never is.
    utc.format(RFC3339_MICROS).unwrap_or_else(|_| "-".to_owned())
}

/// The parts of an RFC 5424 message that do not change: everything after the
/// timestamp up to MSG, `" HOSTNAME APP-NAME PROCID MSGID - "`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rfc5424Header {
    after_stamp: String,
}

impl Rfc5424Header {
    pub(super) fn new(hostname: &str, app_name: &str, procid: u32, msgid: Option<&str>) -> Self {
        let after_stamp = format!(
            " {} {} {} {} - ",
            header_field(hostname, HOSTNAME_MAX),
            header_field(app_name, APP_NAME_MAX),
            header_field(&procid.to_string(), PROCID_MAX),
            header_field(msgid.unwrap_or(""), MSGID_MAX),
        );
        Rfc5424Header { after_stamp }
    }

    /// `<14>1 2026-11-29T16:37:54.638341+00:00 host sysmon 4242 - - LINE`.
    pub(super) fn message(&self, now: OffsetDateTime, line: &str) -> Vec<u8> {
        let stamp = rfc3339_micros(now);
        let mut out = Vec::with_capacity(8 + stamp.len() + self.after_stamp.len() + line.len());
        let _ = write!(out, "<{PRI_USER_INFO}>1 {stamp}{}", self.after_stamp);
        out.extend_from_slice(line.as_bytes());
        out
    }
}

/// The remote RFC 3164 header after the stamp: `" HOST IDENT: "` (or
/// `" HOST IDENT[PID]: "`). HOST is printable US-ASCII (others become `_`),
/// `-` when empty; IDENT was checked by [`check_ident`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rfc3164Header {
    after_stamp: String,
}

impl Rfc3164Header {
    pub(super) fn new(hostname: &str, ident: &str, pid: Option<u32>) -> Self {
        let mut after_stamp = format!(" {} {ident}", header_field(hostname, HOSTNAME_MAX));
        if let Some(pid) = pid {
            after_stamp += &format!("[{pid}]");
        }
        after_stamp += ": ";
        Rfc3164Header { after_stamp }
    }

    /// `<14>Nov  9 08:05:03 host sysmon: LINE`, `stamp` from [`local_stamp`].
    pub(super) fn message(&self, stamp: &str, line: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + stamp.len() + self.after_stamp.len() + line.len() + 2);
        let _ = write!(out, "<{PRI_USER_INFO}>{stamp}{}", self.after_stamp);
        out.extend_from_slice(line.as_bytes());
        out
    }
}

/// RFC 6587 non-transparent framing: MSG then LF. A LF inside MSG would end
/// the message early, so one becomes a space (event lines never hold one:
/// every format escapes control characters).
pub(super) fn newline_frame(mut msg: Vec<u8>) -> Vec<u8> {
    for b in msg.iter_mut().filter(|b| **b == b'\n') {
        *b = b' ';
    }
    msg.push(b'\n');
    msg
}

/// RFC 6587 octet counting: `LEN SP MSG`, LEN the byte length of MSG.
pub(super) fn octet_frame(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 8);
    let _ = write!(out, "{} ", msg.len());
    out.extend_from_slice(msg);
    out
}

/// Cuts `msg` (valid UTF-8) to at most `max` bytes at a character boundary,
/// so a receiver never sees half a character. True if it cut.
pub(super) fn truncate_utf8(msg: &mut Vec<u8>, max: usize) -> bool {
    if msg.len() <= max {
        return false;
    }
    let mut end = max;
    // Continuation bytes are 0b10xx_xxxx: back off to the start of a character.
    while end > 0 && (msg[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    msg.truncate(end);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    /// Our stamp against the C library's own strftime("%h %e %T") on localtime_r
    /// (the program never calls setlocale, so it is the C locale, like glibc's
    /// syslog which forces it).
    fn libc_stamp(secs: i64) -> String {
        let t = secs as libc::time_t;
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let mut buf = [0u8; 64];
        unsafe {
            assert!(!libc::localtime_r(&t, &mut tm).is_null());
            let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), c"%h %e %T".as_ptr(), &tm);
            assert!(n > 0);
            CStr::from_ptr(buf.as_ptr().cast()).to_str().unwrap().to_owned()
        }
    }

    #[test]
    fn local_stamp_matches_strftime() {
        // A single-digit day, a double-digit day, midnight, end of year, now.
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for secs in [0, 1_762_675_503, 1_767_225_599, 1_700_000_000, 951_782_400, now] {
            assert_eq!(local_stamp(secs), libc_stamp(secs), "at {secs}");
        }
        assert_eq!(local_stamp(1_762_675_503).len(), 15);
    }

    #[test]
    fn local_message_is_glibc_layout() {
        let m = local_message("Nov  9 08:05:03", "sysmon", None, "<Event>&amp;</Event>");
        assert_eq!(m, b"<14>Nov  9 08:05:03 sysmon: <Event>&amp;</Event>");
        let m = local_message("Nov 19 08:05:03", "sysmon", Some(4242), "x");
        assert_eq!(m, b"<14>Nov 19 08:05:03 sysmon[4242]: x");
    }

    #[test]
    fn idents() {
        assert!(check_ident("sysmon").is_ok());
        assert!(check_ident("sock-scope_1.2").is_ok());
        for bad in ["", "a b", "a:b", "a[1]", "é", &"x".repeat(49), "a\nb"] {
            assert!(check_ident(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rfc5424_layout() {
        let h = Rfc5424Header::new("vm", "sysmon", 4242, None);
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_764_434_274_638_341_999).unwrap();
        let m = h.message(t, "<Event>é</Event>");
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "<14>1 2025-11-29T16:37:54.638341+00:00 vm sysmon 4242 - - <Event>é</Event>"
        );
        let h = Rfc5424Header::new("", "my app", 1, Some("NET"));
        assert_eq!(h.after_stamp, " - my_app 1 NET - ");
        let h = Rfc5424Header::new("héllo", "a", 1, Some(&"m".repeat(40)));
        assert_eq!(h.after_stamp, format!(" h_llo a 1 {} - ", "m".repeat(32)));
        let long = "h".repeat(300);
        assert_eq!(header_field(&long, HOSTNAME_MAX).len(), 255);
    }

    #[test]
    fn rfc3339_is_utc_micros() {
        let t = OffsetDateTime::from_unix_timestamp(0).unwrap().to_offset(time::macros::offset!(+2));
        assert_eq!(rfc3339_micros(t), "1970-01-01T00:00:00.000000+00:00");
    }

    #[test]
    fn rfc3164_remote_layout() {
        let h = Rfc3164Header::new("vm", "sysmon", None);
        assert_eq!(
            h.message("Nov  9 08:05:03", "<Event>é</Event>"),
            "<14>Nov  9 08:05:03 vm sysmon: <Event>é</Event>".as_bytes()
        );
        // The local form plus the host: what rsyslog forwards of it.
        let local = local_message("Dec 19 23:59:59", "sysmon", Some(7), "x");
        let remote = Rfc3164Header::new("host.example", "sysmon", Some(7)).message("Dec 19 23:59:59", "x");
        assert_eq!(
            String::from_utf8(remote).unwrap(),
            String::from_utf8(local).unwrap().replace("59 sysmon", "59 host.example sysmon")
        );
        assert_eq!(Rfc3164Header::new("", "s", None).after_stamp, " - s: ");
        assert_eq!(Rfc3164Header::new("my host\n", "s", None).after_stamp, " my_host_ s: ");
    }

    #[test]
    fn newline_framing() {
        assert_eq!(newline_frame(b"<14>x".to_vec()), b"<14>x\n");
        assert_eq!(newline_frame(b"a\nb\n".to_vec()), b"a b \n");
        assert_eq!(newline_frame(Vec::new()), b"\n");
    }

    #[test]
    fn octet_counting() {
        assert_eq!(octet_frame(b"<14>1 x"), b"7 <14>1 x");
        assert_eq!(octet_frame("é".as_bytes()), "2 é".as_bytes());
        assert_eq!(octet_frame(b""), b"0 ");
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        let mut m = b"abcdef".to_vec();
        assert!(!truncate_utf8(&mut m, 6));
        assert!(truncate_utf8(&mut m, 4));
        assert_eq!(m, b"abcd");
        // "aé€" = 61 | c3 a9 | e2 82 ac
        for (max, want) in [(1, "a"), (2, "a"), (3, "aé"), (4, "aé"), (5, "aé"), (6, "aé€")] {
            let mut m = "aé€".as_bytes().to_vec();
            truncate_utf8(&mut m, max);
            assert_eq!(std::str::from_utf8(&m).unwrap(), want, "max {max}");
        }
    }
}
