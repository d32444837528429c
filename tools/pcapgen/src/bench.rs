//! Large benchmark captures built from a pool of real rustls handshakes,
//! re-framed with new addresses, ports and times (valid checksums).
//!
//! - `handshake`: 80 000 short TLS connections (half TLS 1.2 with certificate
//!   chains of 2-3 certificates, leaves with 24 names; half TLS 1.3), ~2 %
//!   without SNI, a few percent to ngrok names and with mitmproxy-issued
//!   certificates; each a whole short connection: handshake, a request, a
//!   one-segment response, the client's close_notify, FINs. 1.6 M packets,
//!   20 per connection; [`OPEN_AT_ONCE`] connections open at a time, their
//!   packets interleaved.
//! - `mix`: a handful of bulk TLS downloads carrying ~90 % of ~750 k packets,
//!   one new TLS connection per ~250 packets, each after a DNS lookup, and
//!   some other UDP.
//!
//! The generated files are not committed: the generator and its seed are.

use std::io::BufWriter;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::net::{
    frame, Clock, Endpoints, Flight, Frame, PcapWriter, Side, Tcp, L4, LINKTYPE_ETHERNET,
};
use crate::tls::{chain, exchange, Chain, Ending, Handshake, Result};

/// A small deterministic PRNG (xorshift64*), so a seed names a capture.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// mitmproxy's shape: a lone leaf, issuer CN=O=mitmproxy, signed with the CA key
/// and carrying the CA's public key.
fn mitm_chain(name: &str) -> Result<Chain> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "mitmproxy");
    ca.distinguished_name
        .push(DnType::OrganizationName, "mitmproxy");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key)?;
    let mut leaf = CertificateParams::new(vec![name.to_string()])?;
    leaf.distinguished_name.push(DnType::CommonName, name);
    let leaf = leaf.signed_by(&ca_key, &ca, &ca_key)?;
    Ok(Chain {
        certs: vec![leaf.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ca_key.serialize_der())),
    })
}

struct Pooled {
    flights: Vec<Flight>,
}

/// A short page as a server answers `GET /`: one segment's worth.
fn http_response() -> Vec<u8> {
    let body: String = (0..24)
        .map(|i| format!("<p>line {i} of a short bench page</p>\n"))
        .collect();
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

fn pool(n: usize) -> Result<Vec<Pooled>> {
    let mut v = Vec::with_capacity(n);
    let response = http_response();
    // eight server chains as real sites send them: 24 names each (a CDN's
    // certificate lists many), leaf + issuing CA + root or leaf + issuing CA
    let normals = (0..8)
        .map(|k| {
            let names: Vec<String> = (0..24)
                .map(|j| format!("h{j}.org{k}.bench.example"))
                .collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut c = chain(&format!("Bench Org {k}"), &names)?;
            if k % 2 == 1 {
                c.certs.truncate(2);
            }
            Ok(c)
        })
        .collect::<Result<Vec<Chain>>>()?;
    for i in 0..n {
        let tls12 = i % 2 == 0;
        let (sni, ch) = match i % 25 {
            0 => ("demo.ngrok-free.app".to_string(), None),
            1 => (
                format!("shop{i}.example.org"),
                Some(mitm_chain(&format!("shop{i}.example.org"))?),
            ),
            // rustls sends no SNI for an address
            2 if i % 50 == 2 => ("198.51.100.99".to_string(), None),
            _ => (format!("site{i}.bench.example"), None),
        };
        // (i / 2: the TLS 1.2 half shows every chain)
        let normal = &normals[(i / 2) % normals.len()];
        let ch = ch.unwrap_or(Chain {
            certs: normal.certs.clone(),
            key: normal.key.clone_key(),
        });
        let flights = exchange(
            &Handshake {
                version: if tls12 {
                    &rustls::version::TLS12
                } else {
                    &rustls::version::TLS13
                },
                sni: &sni,
                alpn: &["h2", "http/1.1"],
                chain: &ch,
                request: b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n",
            },
            &Ending {
                response: &response,
                close_notify: true,
            },
        )?;
        v.push(Pooled { flights });
    }
    Ok(v)
}

fn addr(base: [u8; 2], i: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(base[0], base[1], (i >> 8) as u8, i as u8))
}

type Writer = PcapWriter<BufWriter<std::fs::File>>;

/// What both profiles start from: the handshake pool, the seeded generator,
/// the output file and the clock.
fn start(path: &Path, seed: u64) -> Result<(Vec<Pooled>, Rng, Writer, Clock)> {
    let w = PcapWriter::new(
        BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?),
        LINKTYPE_ETHERNET,
    )?;
    Ok((pool(50)?, Rng::new(seed), w, Clock(crate::T0)))
}

/// How many of the handshake profile's connections are open at once: their
/// packets interleave on the wire, as a busy link's do.
pub const OPEN_AT_ONCE: usize = 128;

pub fn handshake_heavy(path: &Path, seed: u64, connections: u64) -> Result<()> {
    let (pool, mut rng, mut w, mut clock) = start(path, seed)?;
    let mut next = 0u64;
    let mut connection = |rng: &mut Rng| -> Option<std::collections::VecDeque<Frame>> {
        if next == connections {
            return None;
        }
        let i = next;
        next += 1;
        let p = &pool[rng.below(pool.len() as u64) as usize];
        let e = Endpoints {
            client: (
                addr([10, 1 + (i % 200) as u8], i / 200),
                20_000 + (i % 40_000) as u16,
            ),
            server: (addr([203, 0], rng.below(65_536)), 443),
            vlan: None,
            ethernet: true,
        };
        // its own clock: each frame is stamped when the interleaving writes it
        let mut own = Clock(0);
        let mut t = Tcp::open(e, &mut own, 1460, (rng.next() as u32, rng.next() as u32));
        t.flights(&p.flights);
        Some(t.close().into())
    };
    let mut open: Vec<_> = (0..OPEN_AT_ONCE)
        .map_while(|_| connection(&mut rng))
        .collect();
    while !open.is_empty() {
        let k = rng.below(open.len() as u64) as usize;
        if let Some(mut f) = open[k].pop_front() {
            f.ts_ns = clock.tick(10 + rng.below(61));
            w.write(&f)?;
        }
        if open[k].is_empty() {
            match connection(&mut rng) {
                Some(c) => open[k] = c,
                None => {
                    open.swap_remove(k);
                }
            }
        }
    }
    eprintln!("pcapgen: {} packets, {} bytes", w.frames, w.bytes);
    w.finish()?;
    Ok(())
}

pub fn mix(path: &Path, seed: u64, packets: u64) -> Result<()> {
    let (pool, mut rng, mut w, mut clock) = start(path, seed)?;
    // Bulk downloads: a handshake each, then 1448-byte records until the end.
    let bulk: Vec<Endpoints> = (0..6u64)
        .map(|i| Endpoints {
            client: (addr([10, 9], i), 50_000 + i as u16),
            server: (addr([198, 51], 100 * 256 + i), 443),
            vlan: None,
            ethernet: true,
        })
        .collect();
    let mut seq: Vec<(u32, u32)> = Vec::new();
    for e in &bulk {
        let p = &pool[1 + 2 * rng.below(20) as usize];
        let mut t = Tcp::open(*e, &mut clock, 1460, (1000, 2000));
        t.flights(&p.flights);
        let frames = t.frames.clone();
        let sent_c: u32 = p
            .flights
            .iter()
            .filter(|f| f.side == Side::Client)
            .map(|f| f.data.len() as u32)
            .sum();
        let sent_s: u32 = p
            .flights
            .iter()
            .filter(|f| f.side == Side::Server)
            .map(|f| f.data.len() as u32)
            .sum();
        for f in frames {
            w.write(&f)?;
        }
        seq.push((1001 + sent_c, 2001 + sent_s));
    }
    let mut junk = vec![0u8; 1448];
    for (i, b) in junk.iter_mut().enumerate() {
        *b = (i as u64).wrapping_mul(0x9e37_79b9) as u8;
    }
    junk[0..5].copy_from_slice(&[23, 3, 3, 0x05, 0xa3]);
    let mut n = 0u64;
    let mut short = 0u64;
    while w.frames < packets {
        // bulk: a data segment from the server, every second one ACKed
        let k = (n % bulk.len() as u64) as usize;
        let e = &bulk[k];
        let (c, s) = seq[k];
        w.write(&frame(
            e,
            Side::Server,
            L4::Tcp {
                seq: s,
                ack: Some(c),
                syn: false,
                fin: false,
                psh: false,
            },
            &junk,
            clock.tick(10),
        ))?;
        seq[k].1 = s.wrapping_add(junk.len() as u32);
        if !n.is_multiple_of(2) {
            w.write(&frame(
                e,
                Side::Client,
                L4::Tcp {
                    seq: c,
                    ack: Some(seq[k].1),
                    syn: false,
                    fin: false,
                    psh: false,
                },
                &[],
                clock.tick(5),
            ))?;
        }
        n += 1;
        if n.is_multiple_of(120) {
            // now and then: some other UDP (a 48-byte NTP-like exchange)
            let u = Endpoints {
                client: (addr([10, 3], rng.below(256)), 123),
                server: (addr([203, 0], 113 * 256 + 1), 123),
                vlan: None,
                ethernet: true,
            };
            w.write(&frame(
                &u,
                Side::Client,
                L4::Udp,
                &[0x23; 48],
                clock.tick(3),
            ))?;
        }
        if n.is_multiple_of(220) {
            // a new short TLS connection, after its DNS lookup
            short += 1;
            let client = (
                addr([10, 2], short % 65_000),
                30_000 + (short % 30_000) as u16,
            );
            let server = (addr([203, 0], 113 * 256 + 10 + short % 200), 443);
            let d = Endpoints {
                client: (client.0, 40_000 + (short % 20_000) as u16),
                server: (addr([198, 51], 100 * 256 + 53), 53),
                vlan: None,
                ethernet: true,
            };
            let q = crate::dns(short as u16, "site.bench.example", false, None, &[]);
            let r = crate::dns(
                short as u16,
                "site.bench.example",
                true,
                None,
                &[[203, 0, 113, 10]],
            );
            w.write(&frame(&d, Side::Client, L4::Udp, &q, clock.tick(3)))?;
            w.write(&frame(&d, Side::Server, L4::Udp, &r, clock.tick(300)))?;
            let p = &pool[rng.below(pool.len() as u64) as usize];
            let e = Endpoints {
                client,
                server,
                vlan: None,
                ethernet: true,
            };
            let mut t = Tcp::open(e, &mut clock, 1460, (rng.next() as u32, rng.next() as u32));
            t.flights(&p.flights);
            for f in t.close() {
                w.write(&f)?;
            }
        }
    }
    eprintln!(
        "pcapgen: {} packets, {} bytes ({short} short TLS connections)",
        w.frames, w.bytes
    );
    w.finish()?;
    Ok(())
}

/// A SYN flood: `flows` connection attempts from distinct addresses and
/// ports, 20 000 a second, none answered (the flow table's worst case: every
/// packet a new flow).
pub fn flood(path: &Path, seed: u64, flows: u64) -> Result<()> {
    let mut w = PcapWriter::new(
        BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?),
        LINKTYPE_ETHERNET,
    )?;
    let mut rng = Rng::new(seed);
    let mut clock = Clock(crate::T0);
    for i in 0..flows {
        let e = Endpoints {
            client: (
                addr([10, 64 + (i >> 16) as u8], i & 0xffff),
                1024 + (i % 60_000) as u16,
            ),
            server: (addr([198, 51], 100 * 256 + 7), 443),
            vlan: None,
            ethernet: true,
        };
        let l4 = crate::net::L4::Tcp {
            seq: rng.next() as u32,
            ack: None,
            syn: true,
            fin: false,
            psh: false,
        };
        w.write(&crate::net::frame(
            &e,
            crate::net::Side::Client,
            l4,
            &[],
            clock.tick(50),
        ))?;
    }
    eprintln!("pcapgen: {} packets, {} bytes", w.frames, w.bytes);
    w.finish()?;
    Ok(())
}

/// `quic`: many short QUIC connections (rustls's QUIC handshakes, Initial
/// packets protected with rustls's keys): the client's Initial padded to
/// 1 200 bytes, the server's Initial with an opaque Handshake packet
/// coalesced, then eight 1-RTT packets. A fourth in QUIC v2, some to tunnel
/// names (trycloudflare.com, quic.cftunnel.com with ALPN argotunnel).
pub fn quic(path: &Path, seed: u64, connections: u64) -> Result<()> {
    use crate::quic::{crypto_frame, handshake, initial_keys, initial_packet};
    use rustls::quic::Version;
    let (_, mut rng, mut w, mut clock) = start_empty(path, seed)?;
    let normal = chain("Bench Org", &["www.bench.example", "bench.example"])?;
    let mut pool = Vec::new();
    for i in 0..32u64 {
        let (sni, alpn) = match i % 16 {
            0 => ("quic.cftunnel.com".to_string(), "argotunnel"),
            8 => ("demo.trycloudflare.com".to_string(), "h3"),
            _ => (format!("site{i}.bench.example"), "h3"),
        };
        let version = if i % 4 == 3 { Version::V2 } else { Version::V1 };
        let dcid = rng.next().to_be_bytes();
        let h = handshake(&sni, &[alpn], &normal, version, &dcid)?;
        let ck = initial_keys(version, &dcid, true)?;
        let sk = initial_keys(version, &dcid, false)?;
        let client = initial_packet(
            &ck.local,
            version,
            &h.dcid,
            &[0xc1; 4],
            0,
            &crypto_frame(0, &h.client_hello),
            1200,
        )?;
        let mut server = initial_packet(
            &sk.local,
            version,
            &[0xc1; 4],
            &h.scid,
            0,
            &[&[0x02, 0, 0, 0, 0][..], &crypto_frame(0, &h.server_hello)].concat(),
            0,
        )?;
        // an opaque Handshake packet after it, as servers coalesce them
        let ty: u8 = if matches!(version, Version::V2) { 3 } else { 2 };
        server.extend_from_slice(&[0xc0 | (ty << 4)]);
        let number: [u8; 4] = server[1..5].try_into()?;
        server.extend_from_slice(&number);
        server.extend_from_slice(&[4, 0xc1, 0xc1, 0xc1, 0xc1, 8]);
        server.extend_from_slice(&h.scid);
        server.extend_from_slice(&[0x43, 0x20]);
        server.extend(std::iter::repeat_n(0xa5, 800));
        pool.push((client, server));
    }
    let mut one_rtt = vec![0u8; 1200];
    for (i, b) in one_rtt.iter_mut().enumerate() {
        *b = (i as u64).wrapping_mul(0x9e37_79b9) as u8;
    }
    one_rtt[0] = 0x41;
    for i in 0..connections {
        let (client, server) = &pool[rng.below(pool.len() as u64) as usize];
        let e = Endpoints {
            client: (
                addr([10, 1 + (i % 200) as u8], i / 200),
                20_000 + (i % 40_000) as u16,
            ),
            server: (addr([203, 0], rng.below(65_536)), 443),
            vlan: None,
            ethernet: true,
        };
        w.write(&frame(&e, Side::Client, L4::Udp, client, clock.tick(50)))?;
        w.write(&frame(&e, Side::Server, L4::Udp, server, clock.tick(800)))?;
        for k in 0..8 {
            let (side, len) = if k % 2 == 0 {
                (Side::Server, 1200)
            } else {
                (Side::Client, 60)
            };
            w.write(&frame(&e, side, L4::Udp, &one_rtt[..len], clock.tick(30)))?;
        }
    }
    eprintln!("pcapgen: {} packets, {} bytes", w.frames, w.bytes);
    w.finish()?;
    Ok(())
}

/// The output file, the seeded generator and the clock (no TLS pool).
fn start_empty(path: &Path, seed: u64) -> Result<((), Rng, Writer, Clock)> {
    let w = PcapWriter::new(
        BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?),
        LINKTYPE_ETHERNET,
    )?;
    Ok(((), Rng::new(seed), w, Clock(crate::T0)))
}
