//! Entry points shared by the fuzz targets (`fuzz/`) and the corpus replay
//! test, so that `cargo test` exercises every committed fuzz input.
//!
//! Each takes arbitrary bytes and must neither panic nor loop.

use bytes::Bytes;

use crate::analyzer::tls::cert::CertCache;
use crate::analyzer::tls::TlsSession;
use crate::capture::{FileReader, LinkType, Packet};
use crate::flow::Dir;
use crate::pipeline::engine::EngineConfig;
use crate::pipeline::Inline;
use crate::time::Timestamp;

/// Flows a fuzzing engine holds. The default table reserves room for 4 096
/// flows up front (megabytes of fresh pages for every input: the fuzz targets
/// spent ~45 % of their time in the kernel faulting them in); a one-packet or
/// one-file input needs a few, and a small table exercises eviction as well.
const FUZZ_MAX_FLOWS: usize = 64;
/// Stream memory a fuzzing engine may hold: small, so that letting flows go
/// at the cap is exercised too.
const FUZZ_STREAM_MEMCAP: usize = 16 * 1024;

/// The whole pipeline in this thread, writing to nowhere (events are still
/// serialised: serialisation of odd values must not panic either).
fn sensor() -> Inline<std::io::Sink> {
    let cfg = EngineConfig {
        max_flows: FUZZ_MAX_FLOWS,
        stream_memcap: FUZZ_STREAM_MEMCAP,
        ..EngineConfig::default()
    };
    Inline::new(cfg, Default::default(), std::io::sink())
}

/// A whole capture file through the whole engine.
pub fn capture(data: &[u8]) {
    let Ok(mut r) = FileReader::from_bytes("fuzz".into(), Bytes::copy_from_slice(data)) else {
        return;
    };
    let mut e = sensor();
    e.set_origin(Some("fuzz".into()));
    while let Some(Ok(p)) = r.next() {
        e.packet(p);
    }
    e.finish();
}

/// One frame: first byte picks the link type, the rest is the frame. The
/// frame is also fed to an engine twice (both as itself and as a reply).
pub fn packet(data: &[u8]) {
    let Some((&lt, frame)) = data.split_first() else {
        return;
    };
    let linktype = match lt % 6 {
        0 => LinkType::ETHERNET,
        1 => LinkType::RAW,
        2 => LinkType::NULL,
        3 => LinkType::LINUX_SLL,
        4 => LinkType::LINUX_SLL2,
        _ => LinkType::LOOP,
    };
    let _ = crate::decode::decode(linktype, frame);
    let mut e = sensor();
    for i in 0..2 {
        let p = Packet {
            ts: Timestamp(i),
            linktype,
            data: Bytes::copy_from_slice(frame),
            orig_len: frame.len() as u32,
            frame: i as u64 + 1,
        };
        e.packet(p);
    }
    e.finish();
}

/// TLS bytes: the first byte splits the rest into a client and a server part,
/// each fed in chunks of varying size.
pub fn tls(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (split as usize * rest.len()) / 256;
    let (c, s) = rest.split_at(at);
    let mut certs = CertCache::new(8);
    let mut t = TlsSession::default();
    for (dir, bytes) in [(Dir::ToServer, c), (Dir::ToClient, s)] {
        let mut buf = Vec::new();
        for chunk in bytes.chunks(7 + split as usize % 50) {
            buf.extend_from_slice(chunk);
            let used = t.feed(dir, &buf, &mut certs);
            assert!(used <= buf.len(), "consumed more than given");
            buf.drain(..used);
        }
    }
}

/// A DNS message.
pub fn dns(data: &[u8]) {
    if let Ok(m) = crate::analyzer::dns::parse(data) {
        let _ = serde_json::to_vec(&m);
    }
}

/// HTTP heads (request and response parsers on the same bytes), and a
/// session fed the bytes as both directions in chunks (pipelining, bodies
/// by length and by chunks): it must consume what it is given, never more.
pub fn http(data: &[u8]) {
    let _ = crate::analyzer::http::parse_request(data);
    let _ = crate::analyzer::http::parse_response(data);
    let mut s = crate::analyzer::http::HttpSession::default();
    let step = 1 + data.first().map_or(0, |b| *b as usize % 64);
    for request in [true, false] {
        let mut buf = Vec::new();
        for chunk in data.chunks(step) {
            buf.extend_from_slice(chunk);
            let used = if request {
                s.feed_request(&buf)
            } else {
                s.feed_response(&buf)
            };
            assert!(used <= buf.len(), "consumed more than given");
            buf.drain(..used);
        }
    }
    s.flush();
}

/// A certificate DER.
pub fn certificate(data: &[u8]) {
    let info = crate::analyzer::tls::cert::parse(data, &[0; 32]);
    let _ = serde_json::to_vec(&info);
}

/// QUIC datagrams through a QUIC session. The input is records of a flag
/// byte, a two-byte length and that many bytes. Flag bit 0: from the server;
/// bit 1: the bytes are an Initial packet's plaintext frames, sealed here as
/// a whole Initial (so that mutations reach the frames, the CRYPTO stream and
/// the hello parser, past the AEAD a fuzzer cannot forge); bits 2-3: the
/// version (1, 2, draft-29); bit 4: to a second connection ID. Otherwise the
/// bytes are the datagram as is. The event and facts are built at the end.
pub fn quic(data: &[u8]) {
    use crate::analyzer::quic::{self, keys, packet::Version};
    let mut s = quic::QuicSession::default();
    let mut c = quic::QuicCounters::default();
    let mut rest = data;
    let mut pn = 0;
    while let [flags, hi, lo, tail @ ..] = rest {
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let dir = if flags & 1 == 0 {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        if flags & 2 == 0 {
            s.datagram(dir, bytes, &mut c);
            continue;
        }
        let number = [1, 0x6b33_43cf, 0xff00_001d, 1][usize::from(flags >> 2 & 3)];
        let Some(v) = Version::of(number) else {
            continue;
        };
        let dcid: &[u8] = if flags & 16 == 0 { &[1; 8] } else { &[2; 8] };
        let client = dir == Dir::ToServer;
        let (to, from): (&[u8], &[u8]) = if client {
            (dcid, &[3; 4])
        } else {
            (&[3; 4], &[4; 8])
        };
        pn += 1;
        if let Some(p) = keys::seal_initial(v, to, from, dcid, client, pn, bytes) {
            s.datagram(dir, &p, &mut c);
        }
    }
    let ev = quic::QuicEvent::of(&s);
    let prints = ev.prints();
    let _ = quic::facts(&s, &prints);
    let _ = serde_json::to_vec(&ev);
}
