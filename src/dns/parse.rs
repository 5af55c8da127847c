//! DNS messages (RFC 1035) parsed from the bytes the kernel copied: the
//! header, the questions and the answer section (A, AAAA, CNAME kept; other
//! types skipped). Names follow compression pointers with bounds (at most
//! `MAX_JUMPS` jumps and 255 bytes of name), so a loop or a cut message is an
//! error, never a hang or a panic; every read is checked.

use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// Compression pointers followed in one name at most.
const MAX_JUMPS: usize = 32;
/// A name's wire length at most (RFC 1035 2.3.4).
const MAX_NAME: usize = 255;
/// Questions and answers read at most: more is not a message a client asked for.
const MAX_RECORDS: usize = 64;

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    #[error("message ends inside the {0}")]
    Short(&'static str),
    #[error("compression pointers loop (more than {MAX_JUMPS} jumps)")]
    PointerLoop,
    #[error("name longer than {MAX_NAME} bytes")]
    NameTooLong,
    #[error("label type 0x{0:02x} is not supported")]
    LabelType(u8),
    #[error("{0} record has {1} bytes of data")]
    RdataLength(&'static str, u16),
    #[error("more than {MAX_RECORDS} records in a section")]
    TooManyRecords,
}

/// Record data sockscope keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub rtype: u16,
    pub ttl: u32,
    pub data: RData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
}

/// A parsed message. `error` says why parsing stopped before the end of the
/// answer section (the header always parsed; what came before the error is
/// kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    pub opcode: u8,
    /// TC: the server cut the answer (the client retries over TCP).
    pub truncated: bool,
    pub rcode: u8,
    pub questions: Vec<Question>,
    pub answers: Vec<Record>,
    pub error: Option<ParseError>,
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        let end = self.at.checked_add(n).ok_or(ParseError::Short(what))?;
        let s = self.buf.get(self.at..end).ok_or(ParseError::Short(what))?;
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A (possibly compressed) name at the current position, in presentation form.
    fn name(&mut self, what: &'static str) -> Result<String, ParseError> {
        let (name, next) = read_name(self.buf, self.at, what)?;
        self.at = next;
        Ok(name)
    }
}

/// The name at `at`, and where the bytes after it (in place, not after a
/// pointer's target) begin. Presentation form (RFC 1035 5.1): labels joined
/// by '.', a '.' or '\' inside a label escaped with '\', bytes outside
/// printable ASCII as `\DDD`; the root is ".". No trailing dot otherwise.
pub fn read_name(buf: &[u8], mut at: usize, what: &'static str) -> Result<(String, usize), ParseError> {
    let mut out = String::new();
    let mut wire_len = 1usize;
    let mut jumps = 0usize;
    let mut after: Option<usize> = None;
    loop {
        let len = *buf.get(at).ok_or(ParseError::Short(what))?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    let next = after.unwrap_or(at + 1);
                    if out.is_empty() {
                        out.push('.');
                    }
                    return Ok((out, next));
                }
                let label = buf.get(at + 1..at + 1 + len as usize).ok_or(ParseError::Short(what))?;
                wire_len += 1 + label.len();
                if wire_len > MAX_NAME {
                    return Err(ParseError::NameTooLong);
                }
                if !out.is_empty() {
                    out.push('.');
                }
                for &b in label {
                    match b {
                        b'.' | b'\\' => {
                            out.push('\\');
                            out.push(b as char);
                        }
                        0x21..=0x7e => out.push(b as char),
                        _ => out.push_str(&format!("\\{b:03}")),
                    }
                }
                at += 1 + label.len();
            }
            0xc0 => {
                let lo = *buf.get(at + 1).ok_or(ParseError::Short(what))?;
                jumps += 1;
                if jumps > MAX_JUMPS {
                    return Err(ParseError::PointerLoop);
                }
                if after.is_none() {
                    after = Some(at + 2);
                }
                at = (usize::from(len & 0x3f) << 8) | usize::from(lo);
            }
            _ => return Err(ParseError::LabelType(len & 0xc0)),
        }
    }
}

/// Parses `buf`. Err only when even the 12-byte header is not there.
pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
    let mut r = Reader { buf, at: 0 };
    let id = r.u16("header")?;
    let flags = r.u16("header")?;
    let qd = r.u16("header")?;
    let an = r.u16("header")?;
    let _ns = r.u16("header")?;
    let _ar = r.u16("header")?;
    let mut msg = Message {
        id,
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0xf) as u8,
        truncated: flags & 0x0200 != 0,
        rcode: (flags & 0xf) as u8,
        questions: Vec::new(),
        answers: Vec::new(),
        error: None,
    };
    if let Err(e) = sections(&mut r, qd, an, &mut msg) {
        msg.error = Some(e);
    }
    Ok(msg)
}

fn sections(r: &mut Reader<'_>, qd: u16, an: u16, msg: &mut Message) -> Result<(), ParseError> {
    if usize::from(qd) > MAX_RECORDS || usize::from(an) > MAX_RECORDS {
        return Err(ParseError::TooManyRecords);
    }
    for _ in 0..qd {
        let name = r.name("question")?;
        let qtype = r.u16("question")?;
        let _class = r.u16("question")?;
        msg.questions.push(Question { name, qtype });
    }
    for _ in 0..an {
        let name = r.name("answer")?;
        let rtype = r.u16("answer")?;
        let _class = r.u16("answer")?;
        let ttl = r.u32("answer")?;
        let rdlen = r.u16("answer")?;
        let start = r.at;
        let rdata = r.bytes(usize::from(rdlen), "answer data")?;
        let data = match rtype {
            TYPE_A => {
                RData::A(Ipv4Addr::from(<[u8; 4]>::try_from(rdata).map_err(|_| ParseError::RdataLength("A", rdlen))?))
            }
            TYPE_AAAA => RData::Aaaa(Ipv6Addr::from(
                <[u8; 16]>::try_from(rdata).map_err(|_| ParseError::RdataLength("AAAA", rdlen))?,
            )),
            TYPE_CNAME => {
                let (target, end) = read_name(r.buf, start, "CNAME data")?;
                if end != start + usize::from(rdlen) {
                    return Err(ParseError::RdataLength("CNAME", rdlen));
                }
                RData::Cname(target)
            }
            _ => RData::Other,
        };
        msg.answers.push(Record { name, rtype, ttl, data });
    }
    Ok(())
}

/// Builds messages for tests (here and in the peer's responder).
pub mod build {
    /// A name in wire form, uncompressed ("a.b" -> 1a1b0).
    pub fn name(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    /// A header: id, flags, and the four section counts.
    pub fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        for c in counts {
            out.extend_from_slice(&c.to_be_bytes());
        }
        out
    }

    /// A query for `qname`/`qtype` (recursion desired).
    pub fn query(id: u16, qname: &str, qtype: u16) -> Vec<u8> {
        let mut out = header(id, 0x0100, [1, 0, 0, 0]);
        out.extend(name(qname));
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out
    }

    /// One answer record: owner as a pointer to offset 12 (the question's
    /// name) when `owner` is None, else in full.
    pub fn record(owner: Option<&str>, rtype: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
        let mut out = match owner {
            Some(o) => name(o),
            None => vec![0xc0, 12],
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
        out
    }

    /// The response to `query` (its question echoed) with `answers` and `rcode`.
    pub fn response(query: &[u8], rcode: u8, truncated: bool, answers: &[Vec<u8>]) -> Vec<u8> {
        let id = u16::from_be_bytes([query[0], query[1]]);
        let flags = 0x8180 | u16::from(rcode & 0xf) | if truncated { 0x0200 } else { 0 };
        let mut out = header(id, flags, [1, answers.len() as u16, 0, 0]);
        out.extend_from_slice(query.get(12..).unwrap_or_default());
        for a in answers {
            out.extend_from_slice(a);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn chain() -> Vec<u8> {
        let q = query(0x1234, "www.example.test", TYPE_A);
        // cdn.example.test, with "example.test" a pointer into the question (offset 12 + 4).
        let cname = vec![3, b'c', b'd', b'n', 0xc0, 16];
        response(
            &q,
            0,
            false,
            &[record(None, TYPE_CNAME, 300, &cname), record(Some("cdn.example.test"), TYPE_A, 60, &[192, 0, 2, 7])],
        )
    }

    #[test]
    fn parses_a_cname_chain_with_compression() {
        let m = parse(&chain()).expect("header");
        assert_eq!(m.error, None);
        assert_eq!((m.id, m.response, m.rcode, m.truncated), (0x1234, true, 0, false));
        assert_eq!(m.questions, vec![Question { name: "www.example.test".into(), qtype: TYPE_A }]);
        assert_eq!(m.answers[0].data, RData::Cname("cdn.example.test".into()));
        assert_eq!(m.answers[0].name, "www.example.test");
        assert_eq!(m.answers[1].data, RData::A(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(m.answers[1].ttl, 60);
    }

    #[test]
    fn escapes_label_bytes_in_presentation_form() {
        let mut buf = header(1, 0, [1, 0, 0, 0]);
        buf.extend_from_slice(&[4, b'a', b'.', b'\\', 0x07, 3, b'<', 0xff, b'"', 0, 0, 1, 0, 1]);
        let m = parse(&buf).expect("header");
        assert_eq!(m.questions[0].name, "a\\.\\\\\\007.<\\255\"");
    }

    #[test]
    fn pointer_loops_and_bad_labels_are_errors() {
        let mut buf = header(1, 0, [1, 0, 0, 0]);
        buf.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // points at itself
        assert_eq!(parse(&buf).expect("header").error, Some(ParseError::PointerLoop));
        let mut buf = header(1, 0, [1, 0, 0, 0]);
        buf.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]); // a label then back to it
        assert_eq!(parse(&buf).expect("header").error, Some(ParseError::PointerLoop));
        let mut buf = header(1, 0, [1, 0, 0, 0]);
        buf.extend_from_slice(&[0x40, 0, 0, 1, 0, 1]);
        assert_eq!(parse(&buf).expect("header").error, Some(ParseError::LabelType(0x40)));
        let mut buf = header(1, 0, [1, 0, 0, 0]);
        for _ in 0..5 {
            buf.push(63);
            buf.extend_from_slice(&[b'x'; 63]);
        }
        buf.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(parse(&buf).expect("header").error, Some(ParseError::NameTooLong));
    }

    #[test]
    fn every_truncation_is_an_error_or_a_prefix_never_a_panic() {
        let full = chain();
        for cut in 0..full.len() {
            match parse(&full[..cut]) {
                Err(ParseError::Short("header")) => assert!(cut < 12),
                Err(e) => panic!("cut {cut}: {e}"),
                Ok(m) => {
                    assert!(m.error.is_some(), "cut {cut} parsed whole");
                    assert!(m.answers.len() < 2);
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift: reproducible, no dependency.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let base = chain();
        for round in 0..20_000 {
            let len = (next() % 600) as usize;
            let mut buf: Vec<u8> = if round % 2 == 0 {
                (0..len).map(|_| next() as u8).collect()
            } else {
                // A valid message with a few bytes flipped: reaches deeper.
                let mut b = base.clone();
                for _ in 0..(next() % 4 + 1) {
                    let i = (next() as usize) % b.len();
                    b[i] = next() as u8;
                }
                b
            };
            if round % 3 == 0 && buf.len() > 12 {
                buf[4..6].copy_from_slice(&[0, 64]); // many questions
            }
            let _ = parse(&buf);
        }
    }

    #[test]
    fn aaaa_and_bad_rdata_lengths() {
        let q = query(9, "v6.test", TYPE_AAAA);
        let addr: Ipv6Addr = "fd00:5::2".parse().expect("addr");
        let m = parse(&response(&q, 0, false, &[record(None, TYPE_AAAA, 5, &addr.octets())])).expect("header");
        assert_eq!(m.answers[0].data, RData::Aaaa(addr));
        let m = parse(&response(&q, 0, false, &[record(None, TYPE_AAAA, 5, &[1, 2, 3])])).expect("header");
        assert_eq!(m.error, Some(ParseError::RdataLength("AAAA", 3)));
        let m = parse(&response(&q, 3, true, &[])).expect("header");
        assert_eq!((m.rcode, m.truncated, m.error), (3, true, None));
    }
}
