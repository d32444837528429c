//! DNS messages (RFC 1035) over UDP and TCP: header, questions, answers.
//!
//! Names are decompressed with guards against loops and overlong names;
//! record types stay numbers ([`RrType`]), with a mnemonic when one is known.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::analyzer::facts::{Fact, Facts};

/// Questions kept from one message.
pub const MAX_QUESTIONS: usize = 32;
/// Answer records kept from one message.
pub const MAX_ANSWERS: usize = 64;
/// Compression pointers followed for one name.
pub const MAX_POINTERS: usize = 64;
/// Longest name accepted (RFC 1035 §2.3.4: 255 octets on the wire).
pub const MAX_NAME_WIRE: usize = 255;
/// Largest DNS-over-TCP message followed.
pub const MAX_TCP_MESSAGE: usize = 65_535;

/// A resource record type, kept as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RrType(pub u16);

impl RrType {
    pub const A: RrType = RrType(1);
    pub const CNAME: RrType = RrType(5);
    pub const AAAA: RrType = RrType(28);

    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "A",
            2 => "NS",
            5 => "CNAME",
            6 => "SOA",
            12 => "PTR",
            15 => "MX",
            16 => "TXT",
            28 => "AAAA",
            33 => "SRV",
            41 => "OPT",
            43 => "DS",
            46 => "RRSIG",
            47 => "NSEC",
            48 => "DNSKEY",
            64 => "SVCB",
            65 => "HTTPS",
            255 => "ANY",
            257 => "CAA",
            _ => return None,
        })
    }
}

/// Mnemonic, or RFC 3597's `TYPEnnn` for types without one.
impl std::fmt::Display for RrType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "TYPE{}", self.0),
        }
    }
}

impl serde::Serialize for RrType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Question {
    pub rrname: String,
    pub rrtype: RrType,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Answer {
    pub rrname: String,
    pub rrtype: RrType,
    pub ttl: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdata: Option<String>,
}

/// A DNS message, as EVE's `dns` object (version 3 layout).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DnsMessage {
    pub version: u8,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: u16,
    pub flags: String,
    pub qr: bool,
    pub aa: bool,
    pub tc: bool,
    pub rd: bool,
    pub ra: bool,
    pub opcode: u8,
    pub rcode: String,
    pub queries: Vec<Question>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<Answer>,
}

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

fn be16(d: &[u8], at: usize) -> Result<u16, Malformed> {
    d.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(Malformed)
}

fn rcode_name(r: u8) -> String {
    match r {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => n.to_string(),
    }
}

/// Reads a (possibly compressed) name at `at`; returns it and the offset after it.
pub fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize), Malformed> {
    let mut name = String::new();
    let mut wire_len = 0usize;
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at).ok_or(Malformed)? as usize;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    let after = end.unwrap_or(at + 1);
                    if name.is_empty() {
                        name.push('.');
                    }
                    return Ok((name, after));
                }
                let label = msg.get(at + 1..at + 1 + len).ok_or(Malformed)?;
                wire_len += len + 1;
                if wire_len > MAX_NAME_WIRE {
                    return Err(Malformed);
                }
                if !name.is_empty() {
                    name.push('.');
                }
                for &b in label {
                    if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                        name.push(b as char);
                    } else {
                        let _ = write!(name, "\\{b:03}");
                    }
                }
                at += 1 + len;
            }
            0xc0 => {
                let ptr = (be16(msg, at)? & 0x3fff) as usize;
                jumps += 1;
                // A pointer must go backwards; with the count cap, no loop survives.
                if jumps > MAX_POINTERS || ptr >= at {
                    return Err(Malformed);
                }
                end.get_or_insert(at + 2);
                at = ptr;
            }
            _ => return Err(Malformed), // extended label types (RFC 6891 §5) are obsolete
        }
    }
}

/// Parses one DNS message (UDP payload, or a TCP message without its length prefix).
pub fn parse(msg: &[u8]) -> Result<DnsMessage, Malformed> {
    if msg.len() < 12 {
        return Err(Malformed);
    }
    let id = be16(msg, 0)?;
    let flags = be16(msg, 2)?;
    let qd = be16(msg, 4)? as usize;
    let an = be16(msg, 6)? as usize;
    let qr = flags & 0x8000 != 0;
    let mut out = DnsMessage {
        version: 3,
        kind: if qr { "response" } else { "request" },
        id,
        flags: format!("{flags:04x}"),
        qr,
        aa: flags & 0x0400 != 0,
        tc: flags & 0x0200 != 0,
        rd: flags & 0x0100 != 0,
        ra: flags & 0x0080 != 0,
        opcode: ((flags >> 11) & 0xf) as u8,
        rcode: rcode_name((flags & 0xf) as u8),
        queries: Vec::new(),
        answers: Vec::new(),
    };
    let mut at = 12;
    for i in 0..qd {
        let (name, next) = read_name(msg, at)?;
        let rrtype = RrType(be16(msg, next)?);
        be16(msg, next + 2)?;
        at = next + 4;
        if i < MAX_QUESTIONS {
            out.queries.push(Question {
                rrname: name,
                rrtype,
            });
        }
    }
    for i in 0..an {
        // A truncated answer section keeps the answers read so far.
        let Ok((name, next)) = read_name(msg, at) else {
            break;
        };
        let (Ok(ty), Ok(ttl_hi), Ok(ttl_lo), Ok(rdlen)) = (
            be16(msg, next),
            be16(msg, next + 4),
            be16(msg, next + 6),
            be16(msg, next + 8),
        ) else {
            break;
        };
        let rd_at = next + 10;
        let Some(rdata) = msg.get(rd_at..rd_at + rdlen as usize) else {
            break;
        };
        at = rd_at + rdlen as usize;
        if i >= MAX_ANSWERS {
            continue;
        }
        let rrtype = RrType(ty);
        let rdata = match ty {
            1 => <[u8; 4]>::try_from(rdata)
                .ok()
                .map(|a| Ipv4Addr::from(a).to_string()),
            28 => <[u8; 16]>::try_from(rdata)
                .ok()
                .map(|a| Ipv6Addr::from(a).to_string()),
            2 | 5 | 12 => read_name(msg, rd_at).ok().map(|(n, _)| n),
            15 => read_name(msg, rd_at + 2).ok().map(|(n, _)| n),
            16 => Some(txt(rdata)),
            _ => None,
        };
        out.answers.push(Answer {
            rrname: name,
            rrtype,
            ttl: (ttl_hi as u32) << 16 | ttl_lo as u32,
            rdata,
        });
    }
    Ok(out)
}

fn txt(mut d: &[u8]) -> String {
    let mut s = String::new();
    while let Some((&len, rest)) = d.split_first() {
        let part = &rest[..rest.len().min(len as usize)];
        s.push_str(&String::from_utf8_lossy(part));
        d = &rest[part.len()..];
        if s.len() > 1024 {
            break;
        }
    }
    s
}

/// The facts signatures test on a DNS message: the names asked, and the
/// answers' owner names and name-valued data.
pub fn facts(m: &DnsMessage) -> Facts<'_> {
    let mut f = Facts::default();
    for q in &m.queries {
        f.push(Fact::DnsQuery, &q.rrname);
    }
    for a in &m.answers {
        f.push(Fact::DnsAnswer, &a.rrname);
        f.push_opt(Fact::DnsAnswer, a.rdata.as_deref());
    }
    f
}

/// Records a message may hold in each section, for [`looks_like_message`].
const MAX_RECORDS: u16 = 64;
/// A stream message longer than this is not waited for by the probe.
const MAX_PROBED_STREAM_MESSAGE: usize = 4096;

/// Does the header read like DNS: one question, a known opcode, the zero
/// bit clear, sections of plausible size (a query has no answers)?
fn header_plausible(msg: &[u8]) -> bool {
    let (Ok(flags), Ok(qd), Ok(an), Ok(ns), Ok(ar)) = (
        be16(msg, 2),
        be16(msg, 4),
        be16(msg, 6),
        be16(msg, 8),
        be16(msg, 10),
    ) else {
        return false;
    };
    let opcode = (flags >> 11) & 0xf;
    let qr = flags & 0x8000 != 0;
    matches!(opcode, 0 | 1 | 2 | 4 | 5)
        && flags & 0x0040 == 0
        && qd == 1
        && [an, ns, ar].iter().all(|n| *n <= MAX_RECORDS)
        && (qr || opcode == 5 || (an == 0 && ns == 0))
}

/// Is `msg` exactly one DNS message: a plausible header, one question of a
/// known class, then every record the header counts, ending at the last
/// byte? Strict, because it finds DNS on ports where DNS is not expected:
/// random bytes pass with vanishing odds.
pub fn looks_like_message(msg: &[u8]) -> bool {
    if msg.len() < 17 || !header_plausible(msg) {
        return false;
    }
    let Ok((_, at)) = read_name(msg, 12) else {
        return false;
    };
    if netbios(msg) {
        return false;
    }
    let Ok(class) = be16(msg, at + 2) else {
        return false;
    };
    if !matches!(class & 0x7fff, 1 | 3 | 4 | 254 | 255) {
        return false;
    }
    let mut at = at + 4;
    let records: usize = [6, 8, 10]
        .iter()
        .filter_map(|o| be16(msg, *o).ok())
        .map(usize::from)
        .sum();
    for _ in 0..records {
        let Ok((_, next)) = read_name(msg, at) else {
            return false;
        };
        let Ok(rdlen) = be16(msg, next + 8) else {
            return false;
        };
        at = next + 10 + rdlen as usize;
    }
    at == msg.len()
}

/// Is the question a NetBIOS name (RFC 1002: a 32-letter label of `A`–`P`)?
/// NetBIOS Name Service borrows DNS's format but is another protocol.
fn netbios(msg: &[u8]) -> bool {
    msg.get(12) == Some(&32)
        && msg
            .get(13..45)
            .is_some_and(|l| l.iter().all(|b| (b'A'..=b'P').contains(b)))
}

/// The UDP table's probe: DNS on its well-known ports, or anywhere a
/// datagram is exactly one DNS message.
pub fn probe_datagram(c: &crate::analyzer::Chunk<'_>) -> crate::analyzer::Probe {
    use crate::analyzer::Probe;
    if !c.bytes.is_empty() && (is_dns_port(c.sport, c.dport) || looks_like_message(c.bytes)) {
        Probe::Yes
    } else {
        Probe::No
    }
}

/// The TCP table's probe: DNS on its well-known ports, or anywhere a stream
/// starts with a two-byte length and exactly one DNS message of that length
/// (waiting, within a bound, for the rest of a message whose 12-byte header
/// is there and reads like DNS).
pub fn probe_stream(c: &crate::analyzer::Chunk<'_>) -> crate::analyzer::Probe {
    use crate::analyzer::Probe;
    if c.bytes.is_empty() {
        return Probe::No;
    }
    if is_dns_port(c.sport, c.dport) {
        return Probe::Yes;
    }
    let Ok(len) = be16(c.bytes, 0) else {
        return Probe::No;
    };
    let len = usize::from(len);
    match c.bytes.get(2..2 + len) {
        Some(msg) if looks_like_message(msg) => Probe::Yes,
        Some(_) => Probe::No,
        // a message cut by the segment: wait only if its whole header reads
        // like DNS (a short chunk of another protocol must not stall)
        None if len <= MAX_PROBED_STREAM_MESSAGE
            && c.bytes.len() >= 14
            && header_plausible(&c.bytes[2..]) =>
        {
            Probe::NeedMore
        }
        None => Probe::No,
    }
}

/// Is this UDP/TCP port pair one DNS is spoken on (DNS, mDNS, LLMNR)?
pub fn is_dns_port(sport: u16, dport: u16) -> bool {
    [53, 5353, 5355].iter().any(|p| *p == sport || *p == dport)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real response: `dig www.example.com` answered with a CNAME chain.
    fn response() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        // www.example.com CNAME edge.example.net
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0x0e, 0x10, 0, 18]);
        m.extend_from_slice(b"\x04edge\x07example\x03net\x00");
        // edge.example.net A 192.0.2.7 (name by pointer to offset 45)
        m.extend_from_slice(&[0xc0, 45, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        m
    }

    #[test]
    fn response_with_cname_chain() {
        let m = parse(&response()).expect("parses");
        assert_eq!(m.kind, "response");
        assert_eq!(m.queries[0].rrname, "www.example.com");
        assert_eq!(m.answers[0].rrtype, RrType::CNAME);
        assert_eq!(m.answers[0].rdata.as_deref(), Some("edge.example.net"));
        assert_eq!(m.answers[1].rrname, "edge.example.net");
        assert_eq!(m.answers[1].rdata.as_deref(), Some("192.0.2.7"));
        assert_eq!(m.rcode, "NOERROR");
    }

    #[test]
    fn compression_loop_is_malformed() {
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // points at itself
        assert_eq!(parse(&m), Err(Malformed));
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]); // forward pointer
        assert_eq!(parse(&m), Err(Malformed));
    }

    #[test]
    fn truncated_messages_never_panic() {
        let r = response();
        for cut in 0..r.len() {
            let _ = parse(&r[..cut]);
        }
        // cut in the answers: questions and complete answers survive
        let m = parse(&r[..r.len() - 3]).expect("partial");
        assert_eq!(m.answers.len(), 1);
    }

    #[test]
    fn unknown_types_keep_their_number() {
        assert_eq!(RrType(65534).to_string(), "TYPE65534");
        assert_eq!(RrType(65).to_string(), "HTTPS");
    }

    /// A query and a response as a resolver sends them.
    fn messages() -> (Vec<u8>, Vec<u8>) {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in ["a", "ngrok", "io"] {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut r = q.clone();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 1;
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 203, 0, 113, 9]);
        (q, r)
    }

    #[test]
    fn whole_messages_look_like_dns_and_nothing_else_does() {
        let (q, r) = messages();
        assert!(looks_like_message(&q) && looks_like_message(&r));
        // one byte more or less: not exactly one message
        assert!(!looks_like_message(&q[..q.len() - 1]));
        let mut longer = r.clone();
        longer.push(0);
        assert!(!looks_like_message(&longer));
        // a query with an answer, an unknown class, the Z bit
        let mut bad = q.clone();
        bad[7] = 1;
        assert!(!looks_like_message(&bad));
        let mut bad = q.clone();
        let n = bad.len();
        bad[n - 1] = 9;
        assert!(!looks_like_message(&bad));
        let mut bad = q.clone();
        bad[3] |= 0x40;
        assert!(!looks_like_message(&bad));
        // NetBIOS Name Service has DNS's format but is not DNS
        let mut nb = vec![0, 1, 0x01, 0x10, 0, 1, 0, 0, 0, 0, 0, 0, 32];
        nb.extend_from_slice(b"FHEPFCELEHFCEPFFFACACACACACACABN");
        nb.extend_from_slice(&[0, 0, 0x20, 0, 1]);
        assert!(!looks_like_message(&nb));
        // text, an RTP-like header, every prefix of a real message
        assert!(!looks_like_message(
            b"hello, this is not a DNS message at all\n"
        ));
        assert!(!looks_like_message(&[
            0x80, 0x60, 0, 1, 0, 0, 0x10, 1, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5
        ]));
        for cut in 0..r.len() {
            assert!(!looks_like_message(&r[..cut]), "{cut}");
        }
    }

    #[test]
    fn streams_are_probed_with_their_length_prefix() {
        use crate::analyzer::{Chunk, Probe};
        let (q, _) = messages();
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        let chunk = |bytes| Chunk {
            dir: crate::flow::Dir::ToServer,
            bytes,
            sport: 40000,
            dport: 8053,
        };
        assert_eq!(probe_stream(&chunk(&framed)), Probe::Yes);
        // the header is there and reads like DNS: wait for the rest
        assert_eq!(probe_stream(&chunk(&framed[..16])), Probe::NeedMore);
        // too little to tell is not a reason to stall another protocol
        assert_eq!(probe_stream(&chunk(&framed[..5])), Probe::No);
        assert_eq!(probe_stream(&chunk(&[5, 1, 0])), Probe::No);
        assert_eq!(probe_datagram(&chunk(&q)), Probe::Yes);
        assert_eq!(probe_datagram(&chunk(b"GET / HTTP/1.1\r\n")), Probe::No);
    }
}
