//! Syslog sinks: each takes one already-formatted event line (no trailing
//! newline), usually Sysmon's one-line `<Event>` XML, and ships it.
//!
//! - [`LocalSyslog`]: RFC 3164 to the local log socket (`/dev/log`), byte for
//!   byte what glibc's `syslog(3)` writes for Sysmon for Linux
//!   (`openlog("sysmon", LOG_NOWAIT, LOG_USER)`, `syslog(LOG_USER|LOG_INFO, ..)`).
//!   Non-blocking: a bounded backlog absorbs a slow receiver, the rest is dropped
//!   and counted.
//! - [`RemoteSyslog`]: RFC 3164 with the host name, as rsyslog forwards
//!   Sysmon's lines (default), or RFC 5424, over UDP (one datagram per
//!   message) or TCP (RFC 6587: newline framing or octet counting), written by
//!   its own thread from a bounded queue.
//!
//! Neither ever blocks the event path; what cannot be delivered is counted in
//! [`SyslogStats`].

mod local;
mod remote;
mod wire;

#[cfg(test)]
mod rsyslog;

#[cfg(test)]
pub use local::LocalSocketKind;
pub use local::LocalSyslog;
pub use remote::Proto;
pub use remote::{Framing, RemoteConfig, RemoteFormat, RemoteSyslog, RemoteTarget};

/// syslog priority of every event: facility user (1) * 8 + severity info (6),
/// what Sysmon for Linux passes to `syslog(3)`.
pub const PRI_USER_INFO: u8 = 14;

/// Sysmon for Linux's ident.
pub const DEFAULT_IDENT: &str = "sysmon";

/// Where glibc's `syslog(3)` writes.
pub const DEFAULT_LOCAL_PATH: &str = "/dev/log";

/// Counters of one sink since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyslogStats {
    /// Messages handed completely to the kernel (not a proof of delivery).
    pub sent: u64,
    /// Messages given up: queue or backlog full, receiver gone for good, too
    /// large for the socket, or still queued when the sink stopped.
    pub dropped: u64,
    /// Connections re-established after one was lost (the first is not counted).
    pub reconnects: u64,
    /// UDP messages cut to the datagram size limit (and sent).
    pub truncated: u64,
}
