//! One criterion group per stage, on real bytes from `pcaps/`.
//!
//! `cargo bench -p spanwatch-benches --bench stages`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use spanwatch::analyzer::tls::cert::{self, CertCache};
use spanwatch::analyzer::tls::{hello, ja3, ja4, TlsSession};
use spanwatch::capture::{FileReader, LinkType};
use spanwatch::decode::{self, Outcome};
use spanwatch::detect::names::{Kind, NameIndex};
use spanwatch::flow::{FlowTable, Timeouts};
use spanwatch::pipeline::engine::EngineConfig;
use spanwatch::pipeline::{worker_of, Inline};
use spanwatch::reassembly::Stream;
use spanwatch_benches::{all_packets, packets, workspace};

static CLIENT_HELLO: &[u8] =
    include_bytes!("../../sensor/src/analyzer/tls/fixtures/rustls-tls12-client-hello.bin");
static SERVER_FLIGHT: &[u8] =
    include_bytes!("../../sensor/src/analyzer/tls/fixtures/rustls-tls12-server-flight.bin");

static QUIC_CLIENT: &[u8] =
    include_bytes!("../../sensor/src/analyzer/quic/fixtures/rfc9001-client-initial.bin");
static QUIC_SERVER: &[u8] =
    include_bytes!("../../sensor/src/analyzer/quic/fixtures/rfc9001-server-initial.bin");
const QUIC_DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
const QUIC_SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];

/// The same work as `Keys::derive` + `Keys::open` on the RFC 9001 client
/// Initial, with ring (its QUIC header-protection API and AES-128-GCM).
fn ring_open(packet: &mut [u8], pn_at: usize) -> Option<usize> {
    use ring::{aead, hkdf};
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    fn label<'a>(len: &'a [u8; 2], n: &'a [u8; 1], l: &'a [u8]) -> [&'a [u8]; 5] {
        [len, n, b"tls13 ", l, &[0]]
    }
    let initial = hkdf::Salt::new(hkdf::HKDF_SHA256, &QUIC_SALT_V1).extract(&QUIC_DCID);
    let mut secret = [0u8; 32];
    initial
        .expand(&label(&[0, 32], &[15], b"client in"), Len(32))
        .ok()?
        .fill(&mut secret)
        .ok()?;
    let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &secret);
    let key: aead::UnboundKey = prk
        .expand(&label(&[0, 16], &[14], b"quic key"), &aead::AES_128_GCM)
        .ok()?
        .into();
    let key = aead::LessSafeKey::new(key);
    let mut iv = [0u8; 12];
    prk.expand(&label(&[0, 12], &[13], b"quic iv"), Len(12))
        .ok()?
        .fill(&mut iv)
        .ok()?;
    let hp: aead::quic::HeaderProtectionKey = prk
        .expand(&label(&[0, 16], &[13], b"quic hp"), &aead::quic::AES_128)
        .ok()?
        .into();
    let mask = hp.new_mask(packet.get(pn_at + 4..pn_at + 20)?).ok()?;
    packet[0] ^= mask[0] & 0x0f;
    let pn_len = usize::from(packet[0] & 3) + 1;
    let mut pn = 0u64;
    for i in 0..pn_len {
        packet[pn_at + i] ^= mask[1 + i];
        pn = (pn << 8) | u64::from(packet[pn_at + i]);
    }
    for (i, b) in pn.to_be_bytes().iter().enumerate() {
        iv[4 + i] ^= b;
    }
    let (header, body) = packet.split_at_mut(pn_at + pn_len);
    let plain = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key(iv),
            aead::Aad::from(&header[..]),
            body,
        )
        .ok()?;
    Some(plain.len())
}

fn quic(c: &mut Criterion) {
    use spanwatch::analyzer::quic::keys::Keys;
    use spanwatch::analyzer::quic::packet::{Version, V1};
    use spanwatch::analyzer::quic::{QuicCounters, QuicSession};
    let mut g = c.benchmark_group("quic");
    g.throughput(Throughput::Elements(1));
    let v = Version::of(V1).expect("v1");
    g.bench_function("rustcrypto: keys + open a client Initial", |b| {
        b.iter_batched_ref(
            || QUIC_CLIENT.to_vec(),
            |p| {
                let k = Keys::derive(v, black_box(&QUIC_DCID), true).expect("keys");
                black_box(k.open(p, 18))
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("ring: keys + open a client Initial", |b| {
        b.iter_batched_ref(
            || QUIC_CLIENT.to_vec(),
            |p| black_box(ring_open(p, 18)),
            BatchSize::SmallInput,
        )
    });
    let mut p = QUIC_CLIENT.to_vec();
    assert_eq!(ring_open(&mut p, 18), Some(1200 - 22 - 16), "ring opens it");
    g.bench_function("session: client Initial to ClientHello", |b| {
        b.iter(|| {
            let mut s = QuicSession::default();
            let mut c = QuicCounters::default();
            s.datagram(
                spanwatch::flow::Dir::ToServer,
                black_box(QUIC_CLIENT),
                &mut c,
            );
            black_box(s.hellos.len())
        })
    });
    g.bench_function("session: both Initials, both hellos", |b| {
        b.iter(|| {
            let mut s = QuicSession::default();
            let mut c = QuicCounters::default();
            s.datagram(
                spanwatch::flow::Dir::ToServer,
                black_box(QUIC_CLIENT),
                &mut c,
            );
            s.datagram(
                spanwatch::flow::Dir::ToClient,
                black_box(QUIC_SERVER),
                &mut c,
            );
            black_box(s.done())
        })
    });
    g.finish();
}

fn bytes_of(p: &[spanwatch::capture::Packet]) -> u64 {
    p.iter().map(|p| p.data.len() as u64).sum()
}

fn decode(c: &mut Criterion) {
    let pkts = all_packets();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Bytes(bytes_of(&pkts)));
    g.bench_function("all captures", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for p in &pkts {
                if let Ok(Outcome::Packet(d)) = decode::decode(p.linktype, &p.data) {
                    n += d.payload.len();
                }
            }
            black_box(n)
        })
    });
    g.finish();
}

fn flow(c: &mut Criterion) {
    let pkts = all_packets();
    let decoded: Vec<_> = pkts
        .iter()
        .filter_map(|p| match decode::decode(p.linktype, &p.data) {
            Ok(Outcome::Packet(d)) => Some((p, d)),
            _ => None,
        })
        .collect();
    let mut g = c.benchmark_group("flow");
    g.throughput(Throughput::Elements(decoded.len() as u64));
    g.bench_function("lookup/insert", |b| {
        b.iter_batched(
            || FlowTable::<()>::new(65_536, Timeouts::default()),
            |mut t| {
                let mut ended = Vec::new();
                for (p, d) in &decoded {
                    t.track(d, p.data.len() as u32, p.ts, p.frame, &mut ended, || ());
                }
                t
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn reassembly(c: &mut Criterion) {
    let mut g = c.benchmark_group("reassembly");
    g.throughput(Throughput::Bytes(SERVER_FLIGHT.len() as u64));
    for mss in [48usize, 536, 1460] {
        g.bench_function(format!("in order, mss {mss}"), |b| {
            b.iter(|| {
                let mut s = Stream::default();
                s.syn(0);
                let mut seen = 0usize;
                for (i, chunk) in SERVER_FLIGHT.chunks(mss).enumerate() {
                    let _ = s.push(1 + (i * mss) as u32, chunk, &mut |d: &[u8]| {
                        seen += d.len();
                        d.len()
                    });
                }
                black_box(seen)
            })
        });
    }
    g.bench_function("reversed pairs, mss 536", |b| {
        let chunks: Vec<(u32, &[u8])> = SERVER_FLIGHT
            .chunks(536)
            .enumerate()
            .map(|(i, c)| (1 + (i * 536) as u32, c))
            .collect();
        let mut order: Vec<usize> = (0..chunks.len()).collect();
        for p in order.chunks_mut(2) {
            p.reverse();
        }
        b.iter(|| {
            let mut s = Stream::default();
            s.syn(0);
            for &i in &order {
                let _ = s.push(chunks[i].0, chunks[i].1, &mut |d: &[u8]| d.len());
            }
            black_box(s.held())
        })
    });
    g.finish();
}

fn tls(c: &mut Criterion) {
    let mut g = c.benchmark_group("tls");
    g.throughput(Throughput::Bytes(CLIENT_HELLO.len() as u64));
    g.bench_function("client hello", |b| {
        let mut certs = CertCache::default();
        b.iter(|| {
            let mut s = TlsSession::default();
            s.feed(
                spanwatch::flow::Dir::ToServer,
                black_box(CLIENT_HELLO),
                &mut certs,
            );
            black_box(s.client_hello.is_some())
        })
    });
    let body = &CLIENT_HELLO[9..];
    let ch = hello::parse_client_hello(body).expect("fixture parses");
    g.bench_function("ja3", |b| b.iter(|| black_box(ja3::ja3(black_box(&ch)))));
    g.bench_function("ja4", |b| {
        b.iter(|| black_box(ja4::ja4(black_box(&ch), ja4::Transport::Tcp)))
    });
    g.throughput(Throughput::Bytes(SERVER_FLIGHT.len() as u64));
    g.bench_function("server flight, certificates cached", |b| {
        let mut certs = CertCache::default();
        b.iter(|| {
            let mut s = TlsSession::default();
            s.feed(
                spanwatch::flow::Dir::ToClient,
                black_box(SERVER_FLIGHT),
                &mut certs,
            );
            black_box(s.chain.len())
        })
    });
    g.bench_function("server flight, certificates cold", |b| {
        b.iter(|| {
            let mut certs = CertCache::new(1);
            let mut s = TlsSession::default();
            // a one-entry cache: the three certificates evict each other
            s.feed(
                spanwatch::flow::Dir::ToClient,
                black_box(SERVER_FLIGHT),
                &mut certs,
            );
            black_box(s.chain.len())
        })
    });
    g.finish();
    let mut g = c.benchmark_group("certificate");
    let mut s = TlsSession::default();
    s.feed(
        spanwatch::flow::Dir::ToClient,
        SERVER_FLIGHT,
        &mut CertCache::default(),
    );
    let _ = &s;
    // DER of the leaf: find it in the flight (after the 3-byte list and cert lengths)
    let at = SERVER_FLIGHT
        .windows(2)
        .position(|w| w == [0x0b, 0x00])
        .expect("certificate message");
    let len = u32::from_be_bytes([
        0,
        SERVER_FLIGHT[at + 7],
        SERVER_FLIGHT[at + 8],
        SERVER_FLIGHT[at + 9],
    ]) as usize;
    let der = &SERVER_FLIGHT[at + 10..at + 10 + len];
    g.throughput(Throughput::Bytes(der.len() as u64));
    g.bench_function("x509 parse (cold)", |b| {
        b.iter(|| black_box(cert::parse(black_box(der), &[0; 32])))
    });
    g.bench_function("cache hit", |b| {
        let mut cache = CertCache::default();
        cache.get(der);
        b.iter(|| black_box(cache.get(black_box(der))))
    });
    g.finish();
}

fn signatures(c: &mut Criterion) {
    let mut ix = NameIndex::default();
    for i in 0..10_000u32 {
        ix.insert(
            &format!("tenant{i}.tunnel-provider{}.example", i % 97),
            Kind::Suffix,
            i,
        );
    }
    let names = [
        "www.example.com",
        "a.b.tenant4242.tunnel-provider69.example",
        "connect.ngrok-agent.com",
        "x.tenant9999.tunnel-provider8.example",
    ];
    let mut g = c.benchmark_group("signatures");
    g.throughput(Throughput::Elements(names.len() as u64));
    g.bench_function("SNI against 10000 suffix rules", |b| {
        b.iter(|| {
            let mut hits = 0;
            for n in names {
                ix.lookup(black_box(n), &mut |_| hits += 1);
            }
            black_box(hits)
        })
    });
    let rules = spanwatch::load::bundled().expect("bundled");
    let spki = spanwatch::verdict::SpkiTracker::default();
    let mut facts = spanwatch::detect::Facts::default();
    facts.push(spanwatch::detect::Fact::Sni, "demo.ngrok-free.app");
    facts.set(spanwatch::detect::Fact::DestPort, 443);
    g.bench_function("bundled rules, one TLS event", |b| {
        b.iter(|| {
            black_box(rules.evaluate(
                black_box(&facts),
                Some(&spki as &dyn spanwatch::detect::KeySpread),
            ))
        })
    });
    g.finish();
}

fn end_to_end(c: &mut Criterion) {
    let mut g = c.benchmark_group("end_to_end");
    for name in [
        "pcaps/tls12-chain.pcap",
        "pcaps/lab/lab-mitmproxy-custom-ca.pcap",
        "pcaps/lab/lab-ngrok-v2-agent.pcap",
    ] {
        let pkts = packets(&workspace().join(name));
        g.throughput(Throughput::Bytes(bytes_of(&pkts)));
        let cfg = EngineConfig::default();
        let rules = Arc::clone(&cfg.rules);
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let cfg = EngineConfig {
                        rules: Arc::clone(&rules),
                        ..EngineConfig::default()
                    };
                    (
                        Inline::new(cfg, Default::default(), std::io::sink()),
                        pkts.clone(),
                    )
                },
                |(mut e, pkts)| {
                    for p in pkts {
                        e.packet(p);
                    }
                    e.finish().written
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// A classic pcap of about `size` bytes, in memory: the Ethernet frames of
/// `pcaps/` over and over, each round with other IPv4 addresses.
fn big_capture(size: usize) -> (bytes::Bytes, u64) {
    let frames: Vec<Vec<u8>> = all_packets()
        .into_iter()
        .filter(|p| p.linktype == LinkType::ETHERNET)
        .map(|p| p.data.to_vec())
        .collect();
    let mut v = Vec::with_capacity(size + 70_000);
    v.extend_from_slice(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]);
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&65_535u32.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    let (mut round, mut n) = (0u32, 0u64);
    while v.len() < size {
        round += 1;
        for f in &frames {
            let mut f = f.clone();
            if f.get(12..14) == Some(&[0x08, 0x00]) && f.len() >= 34 {
                // new addresses for each round, both ends, same pairs within it
                for at in [26, 30] {
                    f[at + 2..at + 4].copy_from_slice(&(round as u16).to_be_bytes());
                }
            }
            let len = f.len() as u32;
            v.extend_from_slice(&round.to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&f);
            n += 1;
        }
    }
    (bytes::Bytes::from(v), n)
}

/// What the dispatcher does per packet, over a capture file far larger than
/// the caches, mapped as `spanwatch read` maps it: find each record (the next
/// one's place depends on this one's length, so this measures the reader's
/// prefetching), then the worker that owns the packet's address pair.
fn dispatch(c: &mut Criterion) {
    let (cap, n) = big_capture(128 << 20);
    let path = std::env::temp_dir().join(format!("spanwatch-dispatch-{}.pcap", std::process::id()));
    std::fs::write(&path, &cap).expect("temporary capture");
    let reader = || FileReader::open(&path).expect("a pcap");
    let mut g = c.benchmark_group("dispatch");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(cap.len() as u64));
    g.bench_function(format!("record scan, {n} records"), |b| {
        b.iter(|| {
            let mut r = reader();
            let mut k = 0usize;
            while let Some(Ok(p)) = r.next_range() {
                k += p.data.len();
            }
            black_box(k)
        })
    });
    g.bench_function("record scan + worker of 2", |b| {
        b.iter(|| {
            let mut r = reader();
            let mut k = 0usize;
            while let Some(Ok(p)) = r.next_range() {
                let data = r.data().get(p.data.clone()).unwrap_or_default();
                k += worker_of(p.linktype, data, 2);
            }
            black_box(k)
        })
    });
    g.finish();
    let _ = std::fs::remove_file(&path);
}

criterion_group!(benches, decode, flow, reassembly, tls, quic, signatures, dispatch, end_to_end);
criterion_main!(benches);
