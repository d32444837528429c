//! TLS handshake analyzer: records → handshake messages → hello and certificate facts.
//!
//! One [`TlsSession`] per flow, fed by each direction's stream. It reads the
//! record layer (RFC 8446 §5.1, RFC 5246 §6.2), joins handshake messages that
//! span records, and stops a direction as soon as nothing more can be read in
//! clear: after the ClientHello (client), after a TLS 1.3 ServerHello, the
//! Certificate, ServerHelloDone or ChangeCipherSpec (server).

pub mod cert;
mod event;
pub mod hello;
pub mod ja3;
pub mod ja4;
pub mod memo;

pub use event::{
    facts, summary, version_name, ClientHandshake, Fingerprints, HelloSummary, TlsEvent,
};

use std::cell::OnceCell;
use std::sync::Arc;

use cert::{CertCache, CertInfo};
use hello::{ClientHello, ServerHello};

use crate::flow::Dir;

/// Largest record body: 2^14 plaintext + 2048 expansion (RFC 5246 §6.2.3).
pub const MAX_RECORD_LEN: usize = 16_384 + 2048;
/// Largest handshake message followed (a long certificate chain fits).
pub const MAX_MESSAGE_LEN: usize = 128 * 1024;
/// Certificates kept from one chain.
pub const MAX_CHAIN: usize = 10;

const CONTENT_CCS: u8 = 20;
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPDATA: u8 = 23;
const CONTENT_HEARTBEAT: u8 = 24;

const HS_CLIENT_HELLO: u8 = 1;
const HS_SERVER_HELLO: u8 = 2;
const HS_CERTIFICATE: u8 = 11;
const HS_SERVER_HELLO_DONE: u8 = 14;

/// Lower-case hex of bytes.
pub fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}

/// Does this look like the start of a TLS handshake record (the first bytes a
/// TLS client or server sends)?
pub fn looks_like_handshake(d: &[u8]) -> bool {
    matches!(d, [CONTENT_HANDSHAKE, 3, 0..=4, ..])
        || matches!(d, [hi, _, 1, 0, 2, ..] | [hi, _, 1, 3, 0..=4, ..] if hi & 0x80 != 0)
}

/// The analyzer table's probe: a chunk that opens a handshake is TLS; a
/// chunk too short to tell that could start one waits for more.
pub fn probe(c: &crate::analyzer::Chunk<'_>) -> crate::analyzer::Probe {
    use crate::analyzer::Probe;
    if looks_like_handshake(c.bytes) {
        Probe::Yes
    } else if c.bytes.len() < 5 && looks_like_handshake(&pad5(c.bytes)) {
        Probe::NeedMore
    } else {
        Probe::No
    }
}

/// `b` (shorter than 5 bytes) completed with bytes that fit any TLS header.
fn pad5(b: &[u8]) -> [u8; 5] {
    let mut p = [22, 3, 1, 0, 0];
    p[..b.len().min(5)].copy_from_slice(&b[..b.len().min(5)]);
    p
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum DirState {
    #[default]
    Active,
    Done,
}

#[derive(Debug, Default)]
struct TlsDir {
    /// Handshake bytes of a message that spans records.
    hs: Vec<u8>,
    state: DirState,
    /// A ChangeCipherSpec was the last record.
    after_ccs: bool,
}

/// Is this record exactly one ClientHello message (what a client sends in clear
/// after a compatibility ChangeCipherSpec)? An encrypted Finished matches by
/// chance with odds of about 2^-32.
fn is_whole_client_hello(ctype: u8, body: &[u8]) -> bool {
    ctype == CONTENT_HANDSHAKE
        && body.len() >= 4
        && body[0] == HS_CLIENT_HELLO
        && u32::from_be_bytes([0, body[1], body[2], body[3]]) as usize + 4 == body.len()
}

/// Counters a session reports to the engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct TlsCounters {
    pub malformed: u64,
}

/// A session's fingerprints, each filled when first asked.
#[derive(Debug, Default)]
///
/// A fingerprint is filled only once the hello it comes from is there, and
/// a hello that is replaced (a later differing copy) forgets its own.
struct Prints {
    ja3: OnceCell<ja3::Ja3>,
    ja3s: OnceCell<ja3::Ja3>,
    ja4: OnceCell<Arc<str>>,
    second: OnceCell<(ja3::Ja3, Arc<str>)>,
    overlap: OnceCell<(ja3::Ja3, Arc<str>)>,
}

/// Handshake facts of one flow.
#[derive(Debug, Default)]
pub struct TlsSession {
    pub client_hello: Option<ClientHello>,
    pub server_hello: Option<ServerHello>,
    pub chain: Vec<Arc<CertInfo>>,
    /// A client certificate chain (TLS ≤ 1.2 client authentication).
    pub client_chain: Vec<Arc<CertInfo>>,
    /// The second ClientHello of a connection (after a HelloRetryRequest, or a
    /// client that repeats itself).
    /// (Boxed, as `overlap_client_hello`: rare, and a hello is large.)
    pub second_client_hello: Option<Box<ClientHello>>,
    /// The ClientHello as another copy of its TCP bytes had it (two copies
    /// that differ: the sensor cannot tell which one the server kept).
    pub overlap_client_hello: Option<Box<ClientHello>>,
    /// The server's chain as another copy of its bytes had it.
    pub overlap_chain: Vec<Arc<CertInfo>>,
    /// ClientHellos seen (2 after a HelloRetryRequest).
    pub client_hellos: u32,
    /// Certificates in the Certificate message (may exceed what `chain` keeps).
    pub chain_len: usize,
    pub malformed: bool,
    /// The fingerprints, each computed once when first asked (the leg
    /// correlation wants the first hello's JA4 before the event; the event
    /// and the signatures borrow them). The event is made once, when the
    /// handshake is read or the flow ends: nothing asks before the hellos
    /// they come from can no longer change.
    prints: Prints,
    dirs: [TlsDir; 2],
}

impl TlsSession {
    /// The first ClientHello's JA4 (computed once).
    pub fn ja4(&self) -> Option<&str> {
        self.ja4_cell().map(|j| &**j)
    }

    /// [`TlsSession::ja4`], shared (a count, not a copy).
    pub fn ja4_shared(&self) -> Option<Arc<str>> {
        self.ja4_cell().cloned()
    }

    fn ja4_cell(&self) -> Option<&Arc<str>> {
        let ch = self.client_hello.as_ref()?;
        Some(
            self.prints
                .ja4
                .get_or_init(|| ja4::ja4(ch, ja4::Transport::Tcp)),
        )
    }

    /// The first ClientHello's JA3 (none for an SSLv2 hello).
    pub fn ja3(&self) -> Option<&ja3::Ja3> {
        let ch = self.client_hello.as_ref().filter(|c| !c.sslv2)?;
        Some(self.prints.ja3.get_or_init(|| ja3::ja3(ch)))
    }

    /// The ServerHello's JA3S.
    pub fn ja3s(&self) -> Option<&ja3::Ja3> {
        let sh = self.server_hello.as_ref()?;
        Some(self.prints.ja3s.get_or_init(|| ja3::ja3s(sh)))
    }

    /// The JA3 and JA4 of the second ClientHello, and of the differing copy
    /// of the first.
    pub fn more_prints(&self) -> [Option<&(ja3::Ja3, Arc<str>)>; 2] {
        fn of<'s>(
            cell: &'s OnceCell<(ja3::Ja3, Arc<str>)>,
            ch: Option<&ClientHello>,
        ) -> Option<&'s (ja3::Ja3, Arc<str>)> {
            let c = ch?;
            Some(cell.get_or_init(|| (ja3::ja3(c), ja4::ja4(c, ja4::Transport::Tcp))))
        }
        [
            of(&self.prints.second, self.second_client_hello.as_deref()),
            of(&self.prints.overlap, self.overlap_client_hello.as_deref()),
        ]
    }

    /// Reads a direction's first bytes as another copy had them: the
    /// client's ClientHello is kept as `overlap_client_hello`, the server's
    /// chain as `overlap_chain`.
    pub fn read_other_copy(&mut self, dir: Dir, bytes: &[u8], certs: &mut CertCache) {
        let mut other = TlsSession::default();
        other.feed(dir, bytes, certs);
        match dir {
            Dir::ToServer => {
                self.overlap_client_hello = other.client_hello.map(Box::new);
                self.prints.overlap = OnceCell::new();
            }
            Dir::ToClient => self.overlap_chain = other.chain,
        }
    }

    /// True once both directions have told all they will in clear.
    pub fn done(&self) -> bool {
        self.dirs.iter().all(|d| d.state == DirState::Done)
    }

    pub fn dir_done(&self, dir: Dir) -> bool {
        self.dirs[dir as usize].state == DirState::Done
    }

    /// Stops reading a direction (a gap, or the flow ended).
    pub fn stop(&mut self, dir: Dir) {
        let d = &mut self.dirs[dir as usize];
        d.state = DirState::Done;
        d.hs = Vec::new();
    }

    /// Feeds contiguous stream bytes; returns how many were consumed.
    pub fn feed(&mut self, dir: Dir, data: &[u8], certs: &mut CertCache) -> usize {
        let mut used = 0;
        while self.dirs[dir as usize].state == DirState::Active {
            let rest = &data[used..];
            if dir == Dir::ToServer
                && self.client_hellos == 0
                && rest.first().is_some_and(|b| b & 0x80 != 0)
            {
                match hello::parse_sslv2_client_hello(rest) {
                    Some((ch, len)) => {
                        self.client_hello = Some(ch);
                        self.client_hellos += 1;
                        self.stop(dir);
                        return used + len.min(rest.len());
                    }
                    None if rest.len() < 11 => return used,
                    None => {
                        let len = ((((rest[0] & 0x7f) as usize) << 8) | rest[1] as usize) + 2;
                        if rest.len() < len {
                            return used;
                        }
                        self.fail(dir);
                        return data.len();
                    }
                }
            }
            if rest.len() < 5 {
                return used;
            }
            let (ctype, major, len) = (
                rest[0],
                rest[1],
                u16::from_be_bytes([rest[3], rest[4]]) as usize,
            );
            if !(CONTENT_CCS..=CONTENT_HEARTBEAT).contains(&ctype)
                || major != 3
                || len > MAX_RECORD_LEN
            {
                self.fail(dir);
                return data.len();
            }
            if rest.len() < 5 + len {
                return used;
            }
            let body = &rest[5..5 + len];
            used += 5 + len;
            if std::mem::take(&mut self.dirs[dir as usize].after_ccs)
                && !is_whole_client_hello(ctype, body)
            {
                // Encrypted from here on (a Finished, or application data).
                self.stop(dir);
                break;
            }
            match ctype {
                CONTENT_HANDSHAKE => self.handshake_fragment(dir, body, certs),
                // After ChangeCipherSpec the rest of the direction is encrypted,
                // except the compatibility CCS around a HelloRetryRequest
                // (RFC 8446 §4.1.4, D.4): the next hello still comes in clear.
                CONTENT_CCS if self.retry_pending(dir) => {}
                // A client may also send that CCS before a second hello when the
                // HelloRetryRequest is not in the capture: look at one more record.
                CONTENT_CCS if dir == Dir::ToServer => self.dirs[dir as usize].after_ccs = true,
                CONTENT_CCS | CONTENT_APPDATA => self.stop(dir),
                CONTENT_ALERT | CONTENT_HEARTBEAT => {}
                _ => {}
            }
        }
        data.len()
    }

    /// After a HelloRetryRequest, is this direction's next hello still to come?
    fn retry_pending(&self, dir: Dir) -> bool {
        let hrr = self.server_hello.as_ref().is_some_and(|s| s.retry_request);
        match dir {
            Dir::ToServer => hrr && self.client_hellos < 2,
            Dir::ToClient => hrr,
        }
    }

    fn fail(&mut self, dir: Dir) {
        self.malformed = true;
        self.stop(dir);
    }

    fn handshake_fragment(&mut self, dir: Dir, body: &[u8], certs: &mut CertCache) {
        let d = &mut self.dirs[dir as usize];
        if d.hs.is_empty() {
            // Fast path: messages inside this record are parsed in place.
            let used = self.messages(dir, body, certs);
            let d = &mut self.dirs[dir as usize];
            if d.state == DirState::Active && used < body.len() {
                d.hs.extend_from_slice(&body[used..]);
            }
        } else {
            if d.hs.len() + body.len() > MAX_MESSAGE_LEN + 4 {
                self.fail(dir);
                return;
            }
            d.hs.extend_from_slice(body);
            let hs = std::mem::take(&mut self.dirs[dir as usize].hs);
            let used = self.messages(dir, &hs, certs);
            let d = &mut self.dirs[dir as usize];
            if d.state == DirState::Active {
                let mut hs = hs;
                hs.drain(..used);
                d.hs = hs;
            }
        }
    }

    /// Handles every complete handshake message in `buf`; returns bytes used.
    fn messages(&mut self, dir: Dir, buf: &[u8], certs: &mut CertCache) -> usize {
        let mut used = 0;
        while self.dirs[dir as usize].state == DirState::Active {
            let rest = &buf[used..];
            if rest.len() < 4 {
                break;
            }
            let len = u32::from_be_bytes([0, rest[1], rest[2], rest[3]]) as usize;
            if len > MAX_MESSAGE_LEN {
                self.fail(dir);
                return buf.len();
            }
            if rest.len() < 4 + len {
                break;
            }
            self.message(dir, rest[0], &rest[4..4 + len], certs);
            used += 4 + len;
        }
        used
    }

    fn message(&mut self, dir: Dir, ty: u8, body: &[u8], certs: &mut CertCache) {
        match (dir, ty) {
            (Dir::ToServer, HS_CLIENT_HELLO) => {
                self.client_hellos += 1;
                // The client direction goes on to its ChangeCipherSpec: a second
                // hello (after a HelloRetryRequest) or a client certificate may follow.
                match (hello::parse_client_hello(body), self.client_hellos) {
                    (Ok(ch), 1) => self.client_hello = Some(ch),
                    (Ok(ch), 2) => {
                        self.second_client_hello = Some(Box::new(ch));
                        self.prints.second = OnceCell::new();
                    }
                    (Ok(_), _) => {}
                    (Err(_), _) => self.malformed = true,
                }
            }
            (Dir::ToServer, HS_CERTIFICATE) => {
                let mut chain = std::mem::take(&mut self.client_chain);
                self.certificates(body, certs, &mut chain);
                self.client_chain = chain;
            }
            (Dir::ToClient, HS_SERVER_HELLO) => match hello::parse_server_hello(body) {
                Ok(sh) => {
                    let retry = sh.retry_request;
                    let tls13 = sh.version() == 0x0304 || (sh.version() >> 8) == 0x7f;
                    if !retry || self.server_hello.is_none() {
                        self.server_hello = Some(sh);
                    }
                    if !retry && tls13 {
                        self.stop(dir);
                    }
                }
                Err(_) => self.fail(dir),
            },
            (Dir::ToClient, HS_CERTIFICATE) => {
                let mut chain = std::mem::take(&mut self.chain);
                self.certificates(body, certs, &mut chain);
                self.chain = chain;
                self.stop(dir);
            }
            (Dir::ToClient, HS_SERVER_HELLO_DONE) => self.stop(dir),
            _ => {}
        }
    }

    fn certificates(&mut self, body: &[u8], certs: &mut CertCache, chain: &mut Vec<Arc<CertInfo>>) {
        // certificate_list<0..2^24-1>, each ASN.1Cert<1..2^24-1> (RFC 5246 §7.4.2)
        let Some(total) = body
            .get(..3)
            .map(|b| u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize)
        else {
            self.malformed = true;
            return;
        };
        let mut list = &body[3..body.len().min(3 + total)];
        while list.len() >= 3 {
            let len = u32::from_be_bytes([0, list[0], list[1], list[2]]) as usize;
            let Some(der) = list.get(3..3 + len) else {
                self.malformed = true;
                break;
            };
            self.chain_len += 1;
            if chain.len() < MAX_CHAIN {
                chain.push(certs.get(der));
            }
            list = &list[3 + len..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ct: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ct, 3, 3];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn hs(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ty];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        v.extend_from_slice(body);
        v
    }

    /// A real rustls 0.23 ClientHello (TLS 1.2 only, SNI www.example.com,
    /// ALPN h2 + http/1.1) from pcaps/tls12-chain.pcap.
    static CLIENT_HELLO: &[u8] = include_bytes!("fixtures/rustls-tls12-client-hello.bin");
    /// The server's first flight from the same connection: ServerHello,
    /// Certificate (3 certificates), ServerKeyExchange, ServerHelloDone.
    static SERVER_FLIGHT: &[u8] = include_bytes!("fixtures/rustls-tls12-server-flight.bin");

    #[test]
    fn real_client_hello_facts_and_fingerprints() {
        let mut s = TlsSession::default();
        let mut c = CertCache::default();
        // asked before there is a hello: nothing, and nothing remembered
        assert!(s.ja4().is_none() && s.ja3().is_none() && s.ja3s().is_none());
        assert_eq!(
            s.feed(Dir::ToServer, CLIENT_HELLO, &mut c),
            CLIENT_HELLO.len()
        );
        let ch = s.client_hello.as_ref().expect("parsed");
        assert_eq!(ch.sni.as_deref(), Some("www.example.com"));
        assert_eq!(ch.alpns.as_slice(), ["h2", "http/1.1"]);
        assert_eq!(ch.legacy_version, 0x0303);
        assert!(ch.extensions.contains(&hello::ext::SERVER_NAME));
        // tshark 4.0.17 on the same capture: tls.handshake.ja3
        assert_eq!(&*ja3::ja3(ch).hash, "bd9a3206c94db805166cef19e4d05102");
        assert_eq!(
            s.ja3().map(|j| &*j.hash),
            Some("bd9a3206c94db805166cef19e4d05102")
        );
        assert_eq!(s.ja4(), Some(&*ja4::ja4(ch, ja4::Transport::Tcp)));
        let (j4, raw) = (
            ja4::ja4(ch, ja4::Transport::Tcp),
            ja4::ja4_raw(ch, ja4::Transport::Tcp),
        );
        assert!(j4.starts_with("t12d") && j4.len() == 36, "{j4} {raw}");
        assert!(!s.malformed);
    }

    #[test]
    fn real_client_hello_cut_anywhere_needs_more() {
        for cut in 0..CLIENT_HELLO.len() {
            let mut s = TlsSession::default();
            let mut c = CertCache::default();
            let used = s.feed(Dir::ToServer, &CLIENT_HELLO[..cut], &mut c);
            assert_eq!(used, 0, "cut at {cut}");
            assert!(s.client_hello.is_none() && !s.malformed, "cut at {cut}");
        }
    }

    #[test]
    fn real_client_hello_with_a_bad_length_is_malformed() {
        let mut bad = CLIENT_HELLO.to_vec();
        // the cipher-suite list length claims more than the message holds
        let at = 5 + 4 + 2 + 32 + 1 + bad[5 + 4 + 2 + 32] as usize;
        bad[at] = 0xff;
        let mut s = TlsSession::default();
        s.feed(Dir::ToServer, &bad, &mut CertCache::default());
        assert!(s.malformed && s.client_hello.is_none());
    }

    #[test]
    fn real_server_flight_in_any_chunking() {
        for chunk in [1usize, 3, 7, 100, SERVER_FLIGHT.len()] {
            let mut s = TlsSession::default();
            let mut c = CertCache::default();
            let mut buf = Vec::new();
            for part in SERVER_FLIGHT.chunks(chunk) {
                buf.extend_from_slice(part);
                let used = s.feed(Dir::ToClient, &buf, &mut c);
                buf.drain(..used);
            }
            let sh = s.server_hello.as_ref().expect("server hello");
            assert_eq!(
                (sh.version(), sh.alpn.as_deref()),
                (0x0303, Some("h2")),
                "chunk {chunk}"
            );
            assert_eq!(s.chain.len(), 3, "chunk {chunk}");
            assert_eq!(s.chain[0].subject, "CN=www.example.com, O=Example Org");
            assert_eq!(s.chain[2].subject, "CN=Example Org Root CA, O=Example Org");
            assert_eq!(s.chain[1].ca, Some(true));
            assert!(s.dir_done(Dir::ToClient), "stops after the certificate");
        }
    }

    #[test]
    fn non_tls_bytes_stop_the_direction() {
        let mut s = TlsSession::default();
        let mut c = CertCache::default();
        assert_eq!(s.feed(Dir::ToServer, b"GET / HTTP/1.1\r\n", &mut c), 16);
        assert!(s.dir_done(Dir::ToServer) && s.malformed);
    }

    #[test]
    fn partial_record_needs_more() {
        let mut s = TlsSession::default();
        let mut c = CertCache::default();
        let r = record(22, &hs(14, &[]));
        assert_eq!(s.feed(Dir::ToClient, &r[..6], &mut c), 0);
        assert_eq!(s.feed(Dir::ToClient, &r, &mut c), r.len());
        assert!(s.dir_done(Dir::ToClient));
    }

    #[test]
    fn message_spanning_records_is_joined() {
        let mut s = TlsSession::default();
        let mut c = CertCache::default();
        // a certificate message with two tiny "certificates", split over 3 records
        let mut list = Vec::new();
        for der in [&b"abc"[..], &b"defg"[..]] {
            list.extend_from_slice(&(der.len() as u32).to_be_bytes()[1..]);
            list.extend_from_slice(der);
        }
        let mut body = (list.len() as u32).to_be_bytes()[1..].to_vec();
        body.extend_from_slice(&list);
        let msg = hs(11, &body);
        let mut wire = Vec::new();
        for part in msg.chunks(5) {
            wire.extend_from_slice(&record(22, part));
        }
        assert_eq!(s.feed(Dir::ToClient, &wire, &mut c), wire.len());
        assert_eq!(s.chain_len, 2);
        assert_eq!(s.chain[1].der_len, 4);
        assert!(s.dir_done(Dir::ToClient));
    }

    #[test]
    fn absurd_lengths_are_malformed_not_buffered() {
        let mut s = TlsSession::default();
        let mut c = CertCache::default();
        let r = record(22, &[11, 0xff, 0xff, 0xff]);
        s.feed(Dir::ToClient, &r, &mut c);
        assert!(s.malformed && s.dir_done(Dir::ToClient));
        let mut s = TlsSession::default();
        s.feed(Dir::ToClient, &[22, 3, 3, 0xff, 0xff], &mut c);
        assert!(s.malformed);
    }

    #[test]
    fn detection_by_content() {
        assert!(looks_like_handshake(&[22, 3, 1, 0, 5]));
        assert!(!looks_like_handshake(b"GET /"));
        assert!(
            !looks_like_handshake(&[23, 3, 3, 0, 5]),
            "application data is not a handshake"
        );
        assert!(looks_like_handshake(&[0x80, 0x2e, 1, 3, 1]));
    }
}
