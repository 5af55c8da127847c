//! DNS over TCP: the kernel copies each segment's payload (bounded); this puts
//! a connection's segments back in order into length-prefixed messages
//! (RFC 1035 4.2.2). Bounded: at most `capacity` streams (the oldest go) and
//! one message's bytes per stream. A retransmitted segment is skipped; a gap
//! (a segment not seen) starts the stream over at the next segment; a segment
//! the kernel could not copy whole ends its message there (handed on as cut)
//! and the rest of that connection is not followed (counted by the caller).

use std::collections::HashMap;
use std::net::SocketAddr;

/// One direction of one TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub outbound: bool,
}

#[derive(Debug, Default)]
struct Stream {
    next_seq: u32,
    buf: Vec<u8>,
    /// A segment was not copied whole: the rest is not followed.
    lost: bool,
    touched: u64,
}

/// A message taken from a stream; `cut` when its end was not copied.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamMessage {
    pub bytes: Vec<u8>,
    pub cut: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct StreamStats {
    pub gaps: u64,
    pub evicted: u64,
}

pub struct Streams {
    map: HashMap<StreamKey, Stream>,
    capacity: usize,
    clock: u64,
    pub stats: StreamStats,
}

const MAX_MESSAGE: usize = 65_537;

impl Streams {
    pub fn new(capacity: usize) -> Self {
        Self { map: HashMap::new(), capacity: capacity.max(1), clock: 0, stats: StreamStats::default() }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// One segment: `payload_len` bytes on the wire at `seq`, `captured` of
    /// them copied. Returns the messages it completed.
    pub fn push(&mut self, key: StreamKey, seq: u32, payload_len: u32, captured: &[u8]) -> Vec<StreamMessage> {
        self.clock += 1;
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            if let Some(oldest) = self.map.iter().min_by_key(|(_, s)| s.touched).map(|(k, _)| *k) {
                self.map.remove(&oldest);
                self.stats.evicted += 1;
            }
        }
        let clock = self.clock;
        let s = self.map.entry(key).or_insert_with(|| Stream { next_seq: seq, ..Stream::default() });
        s.touched = clock;
        if s.lost {
            return Vec::new();
        }
        let ahead = seq.wrapping_sub(s.next_seq) as i32;
        if ahead < 0 {
            return Vec::new(); // a retransmission of what was taken
        }
        if ahead > 0 {
            self.stats.gaps += 1;
            s.buf.clear();
        }
        s.next_seq = seq.wrapping_add(payload_len);
        s.buf.extend_from_slice(captured);
        let mut out = Vec::new();
        loop {
            if s.buf.len() < 2 {
                break;
            }
            let want = 2 + usize::from(u16::from_be_bytes([s.buf[0], s.buf[1]]));
            if s.buf.len() < want {
                break;
            }
            let rest = s.buf.split_off(want);
            let mut msg = std::mem::replace(&mut s.buf, rest);
            msg.drain(..2);
            out.push(StreamMessage { bytes: msg, cut: false });
        }
        if (captured.len() as u32) < payload_len || s.buf.len() > MAX_MESSAGE {
            s.lost = true;
            if s.buf.len() > 2 {
                out.push(StreamMessage { bytes: s.buf.split_off(2), cut: true });
            }
            s.buf = Vec::new();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StreamKey {
        StreamKey {
            netns: 1,
            local: "127.0.0.1:4000".parse().expect("addr"),
            remote: "127.0.0.1:53".parse().expect("addr"),
            outbound: false,
        }
    }

    fn framed(msg: &[u8]) -> Vec<u8> {
        let mut v = (msg.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(msg);
        v
    }

    #[test]
    fn one_segment_two_segments_and_a_split_prefix() {
        let mut s = Streams::new(4);
        let a = framed(b"hello");
        assert_eq!(
            s.push(key(), 100, a.len() as u32, &a),
            vec![StreamMessage { bytes: b"hello".to_vec(), cut: false }]
        );
        // The prefix alone, then the message; a retransmission in between.
        assert!(s.push(key(), 107, 2, &a[..2]).is_empty());
        assert!(s.push(key(), 100, a.len() as u32, &a).is_empty());
        let got = s.push(key(), 109, 5, &a[2..]);
        assert_eq!(got, vec![StreamMessage { bytes: b"hello".to_vec(), cut: false }]);
    }

    #[test]
    fn a_gap_restarts_and_a_cut_segment_ends_the_stream() {
        let mut s = Streams::new(4);
        let a = framed(b"hello");
        assert!(s.push(key(), 1, 3, &a[..3]).is_empty());
        let got = s.push(key(), 50, a.len() as u32, &a);
        assert_eq!(got.len(), 1);
        assert_eq!(s.stats.gaps, 1);
        let big = framed(&[7u8; 100]);
        let got = s.push(key(), 57, big.len() as u32, &big[..40]);
        assert_eq!(got, vec![StreamMessage { bytes: vec![7u8; 38], cut: true }]);
        assert!(s.push(key(), 57 + big.len() as u32, a.len() as u32, &a).is_empty());
    }

    #[test]
    fn bounded_number_of_streams() {
        let mut s = Streams::new(2);
        for port in 0..5u16 {
            let mut k = key();
            k.local.set_port(port);
            s.push(k, 0, 1, &[0]);
        }
        assert_eq!(s.len(), 2);
        assert_eq!(s.stats.evicted, 3);
    }
}
