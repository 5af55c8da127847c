//! Whether some network namespace has an IPsec (xfrm) policy. Only then can
//! a UDP datagram leave transformed, out of sight of cgroup_skb/egress, so
//! only then are the cgroup sendmsg hooks worth what they cost every
//! unconnected send (the kernel locks the socket around them).

use std::io::Read;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::netns::{in_namespace, live_namespaces};

const XFRM_MSG_NEWPOLICY: u16 = 0x13;
const XFRM_MSG_GETPOLICY: u16 = 0x15;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;
const NLMSG_HDRLEN: usize = 16;

/// What a part of a policy dump says.
#[derive(Debug, PartialEq, Eq)]
enum Dump {
    /// A policy is there.
    Policy,
    /// The dump ended without one.
    Done,
    /// More to read.
    More,
}

/// Reads one datagram of a netlink dump reply.
fn read_dump(buf: &[u8]) -> Result<Dump> {
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let field = |off: usize, n: usize| &buf[at + off..at + off + n];
        let len = u32::from_ne_bytes(field(0, 4).try_into().context("nlmsg_len")?) as usize;
        let kind = u16::from_ne_bytes(field(4, 2).try_into().context("nlmsg_type")?);
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            bail!("malformed netlink message ({len} bytes at {at} of {})", buf.len());
        }
        match kind {
            XFRM_MSG_NEWPOLICY => return Ok(Dump::Policy),
            NLMSG_DONE => return Ok(Dump::Done),
            NLMSG_ERROR => {
                let code = buf
                    .get(at + NLMSG_HDRLEN..at + NLMSG_HDRLEN + 4)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, i32::from_ne_bytes);
                if code != 0 {
                    return Err(std::io::Error::from_raw_os_error(-code)).context("xfrm policy dump");
                }
            }
            _ => {}
        }
        at += (len + 3) & !3;
    }
    Ok(Dump::More)
}

/// Whether the calling thread's network namespace has an xfrm policy.
fn policy_here() -> Result<bool> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut socket = Socket::new(Domain::from(libc::AF_NETLINK), Type::RAW, Some(Protocol::from(libc::NETLINK_XFRM)))
        .context("socket(AF_NETLINK, NETLINK_XFRM)")?;
    socket.set_read_timeout(Some(Duration::from_secs(1))).context("SO_RCVTIMEO on the xfrm socket")?;
    let mut request = [0u8; NLMSG_HDRLEN];
    request[0..4].copy_from_slice(&(NLMSG_HDRLEN as u32).to_ne_bytes());
    request[4..6].copy_from_slice(&XFRM_MSG_GETPOLICY.to_ne_bytes());
    request[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    request[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // An unconnected netlink socket sends to the kernel.
    socket.send(&request).context("sending the xfrm policy dump request")?;
    let mut buf = vec![0u8; 32 * 1024];
    // Bounded: the kernel ends a dump with NLMSG_DONE, and every read waits 1 s at most.
    for _ in 0..1024 {
        let n = socket.read(&mut buf).context("reading the xfrm policy dump")?;
        match read_dump(&buf[..n])? {
            Dump::Policy => return Ok(true),
            Dump::Done => return Ok(false),
            Dump::More => {}
        }
    }
    bail!("the xfrm policy dump did not end")
}

/// What a look over every network namespace found.
#[derive(Debug)]
pub enum Policies {
    /// None anywhere.
    None,
    /// One in the namespace with this inode.
    In(u64),
    /// A namespace could not be looked into (why): assume there may be one.
    Unknown(String),
}

/// Looks for an xfrm policy in every network namespace (needs CAP_SYS_ADMIN
/// for setns and CAP_NET_ADMIN for the dump).
pub fn look_for_policies() -> Policies {
    for (inode, path) in live_namespaces() {
        match in_namespace(&path, policy_here) {
            Ok(true) => return Policies::In(inode),
            Ok(false) => {}
            // A namespace that died since the scan has no policy.
            Err(_) if !path.exists() => {}
            Err(e) => return Policies::Unknown(format!("network namespace {inode}: {e:#}")),
        }
    }
    Policies::None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(payload);
        m.resize((len + 3) & !3, 0);
        m
    }

    #[test]
    fn a_dump_is_read_to_its_verdict() {
        assert_eq!(read_dump(&message(NLMSG_DONE, &[0; 4])).expect("done"), Dump::Done);
        let mut two = message(0x10, &[1, 2, 3]);
        two.extend(message(XFRM_MSG_NEWPOLICY, &[0; 8]));
        assert_eq!(read_dump(&two).expect("policy"), Dump::Policy, "found past another message");
        assert_eq!(read_dump(&message(0x10, &[])).expect("more"), Dump::More);
        assert_eq!(read_dump(&[]).expect("empty"), Dump::More);
        let denied = message(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        assert!(read_dump(&denied).is_err(), "an error is not 'no policy'");
        let ack = message(NLMSG_ERROR, &0i32.to_ne_bytes());
        assert_eq!(read_dump(&ack).expect("ack"), Dump::More);
        let mut short = message(NLMSG_DONE, &[0; 4]);
        short[0] = 200;
        assert!(read_dump(&short).is_err(), "a length past the buffer");
    }

    /// This namespace, as the test runs in it: the answer must match `ip`'s.
    /// As root (CI) both must work; without root the dump is refused, and
    /// that must not read as "no policy".
    #[test]
    fn the_dump_agrees_with_ip_xfrm() {
        if !nix::unistd::geteuid().is_root() {
            assert!(policy_here().is_err(), "a refused dump is an error");
            return;
        }
        let ip = std::process::Command::new("ip").args(["xfrm", "policy", "list"]).output().expect("ip runs");
        assert!(ip.status.success(), "ip xfrm policy list: {ip:?}");
        let found = policy_here().expect("the dump works as root");
        assert_eq!(found, !ip.stdout.is_empty(), "ip xfrm policy list: {:?}", ip.stdout);
    }
}
