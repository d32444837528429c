//! pcapgen: writes spanwatch's test captures into a directory.
//!
//! Every TLS byte comes from a real rustls handshake (client and server run in
//! memory); pcapgen only frames those bytes into packets. Keys, randoms and
//! certificates are new on every run, so regenerated captures differ in those
//! bytes and their event snapshots must be reviewed again (`cargo insta review`).
//!
//! Usage: `cargo run -p pcapgen -- pcaps/`; `cargo run -p pcapgen -- evasion pcaps/`
//! writes only the evasion captures.

mod bench;
mod evasion;
mod net;
mod quic;
mod tls;

use std::net::IpAddr;
use std::path::Path;

use net::{frame, write_pcap, write_pcapng, Clock, Endpoints, Frame, Side, Tcp, L4};
use tls::{chain, handshake, Handshake, Result};

/// 2026-11-01T10:00:00Z: captures start here so their times are reproducible.
const T0: u64 = 1_793_527_200 * 1_000_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn ep(c: &str, cp: u16, s: &str, sp: u16) -> Endpoints {
    Endpoints {
        client: (ip(c), cp),
        server: (ip(s), sp),
        vlan: None,
        ethernet: true,
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: pcapgen\r\n\r\n";

/// A DNS query (`response` = false) or an answer with CNAME chain and A records.
fn dns(id: u16, name: &str, response: bool, cname: Option<&str>, a: &[[u8; 4]]) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(if response {
        &[0x81, 0x80]
    } else {
        &[0x01, 0x00]
    });
    let answers = if response {
        a.len() + usize::from(cname.is_some())
    } else {
        0
    };
    m.extend_from_slice(&[0, 1, 0, answers as u8, 0, 0, 0, 0]);
    let qname = |m: &mut Vec<u8>, n: &str| {
        for l in n.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
    };
    qname(&mut m, name);
    m.extend_from_slice(&[0, 1, 0, 1]);
    if response {
        let mut owner = vec![0xc0, 12];
        if let Some(c) = cname {
            let mut rdata = Vec::new();
            qname(&mut rdata, c);
            let at = m.len() + 12;
            m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 1, 0x2c]);
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend_from_slice(&rdata);
            owner = vec![0xc0 | (at >> 8) as u8, at as u8];
        }
        for addr in a {
            m.extend_from_slice(&owner);
            m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            m.extend_from_slice(addr);
        }
    }
    m
}

fn dns_exchange(
    clock: &mut Clock,
    e: Endpoints,
    id: u16,
    name: &str,
    cname: Option<&str>,
    a: &[[u8; 4]],
) -> Vec<Frame> {
    let q = dns(id, name, false, None, &[]);
    let r = dns(id, name, true, cname, a);
    vec![
        frame(&e, Side::Client, L4::Udp, &q, clock.tick(100)),
        frame(&e, Side::Server, L4::Udp, &r, clock.tick(2000)),
    ]
}

fn tls12_chain(dir: &Path) -> Result<()> {
    let mut clock = Clock(T0);
    let ch = chain("Example Org", &["www.example.com", "example.com"])?;
    let mut frames = dns_exchange(
        &mut clock,
        ep("192.0.2.10", 53001, "192.0.2.53", 53),
        0x1234,
        "www.example.com",
        Some("edge.example.net"),
        &[[198, 51, 100, 20]],
    );
    let flights = handshake(&Handshake {
        version: &rustls::version::TLS12,
        sni: "www.example.com",
        alpn: &["h2", "http/1.1"],
        chain: &ch,
        request: GET,
    })?;
    let mut t = Tcp::open(
        ep("192.0.2.10", 40001, "198.51.100.20", 443),
        &mut clock,
        1460,
        (1000, 5000),
    );
    t.flights(&flights);
    frames.extend(t.close());
    write_pcap(&dir.join("tls12-chain.pcap"), &frames, false)?;
    Ok(())
}

fn tls13_vlan_ipv6(dir: &Path) -> Result<()> {
    let mut clock = Clock(T0);
    let ch = chain("Example Org", &["v6.example.org"])?;
    let flights = handshake(&Handshake {
        version: &rustls::version::TLS13,
        sni: "v6.example.org",
        alpn: &["h2"],
        chain: &ch,
        request: GET,
    })?;
    let mut e = ep("2001:db8:1::10", 40002, "2001:db8:ff::443", 443);
    e.vlan = Some(100);
    let mut t = Tcp::open(e, &mut clock, 1440, (0xffff_ff00, 77));
    t.flights(&flights);
    write_pcap(&dir.join("tls13-vlan-ipv6.pcap"), &t.close(), true)?;
    Ok(())
}

fn tiny_mss(dir: &Path) -> Result<()> {
    let mut clock = Clock(T0);
    let ch = chain("Tiny Segments Ltd", &["tiny.example.com"])?;
    let flights = handshake(&Handshake {
        version: &rustls::version::TLS12,
        sni: "tiny.example.com",
        alpn: &["http/1.1"],
        chain: &ch,
        request: GET,
    })?;
    let mut t = Tcp::open(
        ep("192.0.2.11", 40003, "198.51.100.21", 443),
        &mut clock,
        48,
        (1, 2),
    );
    t.flights(&flights);
    write_pcap(&dir.join("tls12-tiny-mss.pcap"), &t.close(), false)?;
    Ok(())
}

/// The server's flight arrives reordered (pairs swapped), with duplicates and
/// a retransmission that overlaps two earlier segments.
fn reordered(dir: &Path) -> Result<()> {
    let mut clock = Clock(T0);
    let ch = chain("Reorder Inc", &["reorder.example.com"])?;
    let flights = handshake(&Handshake {
        version: &rustls::version::TLS12,
        sni: "reorder.example.com",
        alpn: &[],
        chain: &ch,
        request: GET,
    })?;
    let e = ep("192.0.2.12", 40004, "198.51.100.22", 443);
    let mut t = Tcp::open(e, &mut clock, 200, (10, 20));
    t.flights(&flights);
    let mut frames = t.close();
    // Segments of the server with payload, by position.
    let server_data: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.data.len() > 54 + 20 && f.data[26..30] == [198, 51, 100, 22])
        .map(|(i, _)| i)
        .collect();
    for pair in server_data.chunks(2).take(4) {
        if let [a, b] = pair {
            frames.swap(*a, *b);
        }
    }
    // Duplicate the third and fifth server segments right after themselves.
    for &i in server_data.iter().skip(2).step_by(2).take(2).rev() {
        let dup = frames[i].clone();
        frames.insert(i + 1, dup);
    }
    // Keep timestamps increasing after the shuffle.
    for (i, f) in frames.iter_mut().enumerate() {
        f.ts_ns = T0 + i as u64 * 100_000;
    }
    write_pcap(&dir.join("tls12-reordered.pcap"), &frames, false)?;
    Ok(())
}

/// An HTTP CONNECT tunnel through a proxy carrying TLS, and a plain HTTP visit.
fn http_connect(dir: &Path) -> Result<()> {
    let mut clock = Clock(T0);
    let ch = chain("Upstream Co", &["api.example.net"])?;
    let flights = handshake(&Handshake {
        version: &rustls::version::TLS12,
        sni: "api.example.net",
        alpn: &["http/1.1"],
        chain: &ch,
        request: b"GET /v1/ HTTP/1.1\r\nHost: api.example.net\r\n\r\n",
    })?;
    let mut t = Tcp::open(
        ep("192.0.2.13", 40005, "192.0.2.80", 8080),
        &mut clock,
        1460,
        (100, 200),
    );
    t.send(
        Side::Client,
        b"CONNECT api.example.net:443 HTTP/1.1\r\nHost: api.example.net:443\r\nUser-Agent: curl/8.5.0\r\n\r\n",
    );
    t.send(Side::Server, b"HTTP/1.1 200 Connection established\r\n\r\n");
    t.flights(&flights);
    let mut frames = t.close();
    let mut t = Tcp::open(
        ep("192.0.2.13", 40006, "198.51.100.80", 80),
        &mut clock,
        1460,
        (300, 400),
    );
    t.send(
        Side::Client,
        b"GET /index.html HTTP/1.1\r\nHost: intranet.example.com\r\nUser-Agent: Mozilla/5.0\r\n\r\n",
    );
    t.send(
        Side::Server,
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.24\r\nContent-Type: text/html\r\nContent-Length: 60\r\n\r\n<html><head><title>Intranet</title></head><body></body></html>",
    );
    frames.extend(t.close());
    write_pcap(&dir.join("http-connect.pcap"), &frames, false)?;
    Ok(())
}

/// pcapng with two interfaces of different link types (Ethernet, raw IP),
/// nanosecond timestamps, packets of both interleaved.
fn multi_interface(dir: &Path) -> Result<()> {
    let mut clock = Clock(T0);
    let ch = chain("Two Links Corp", &["raw.example.com"])?;
    let flights = handshake(&Handshake {
        version: &rustls::version::TLS13,
        sni: "raw.example.com",
        alpn: &["h2", "http/1.1"],
        chain: &ch,
        request: GET,
    })?;
    let mut raw = ep("192.0.2.14", 40007, "198.51.100.23", 443);
    raw.ethernet = false;
    let mut t = Tcp::open(raw, &mut clock, 1400, (7, 8));
    t.flights(&flights);
    let tls = t.close();
    let mut clock2 = Clock(T0 + 500);
    let mut dns_frames = dns_exchange(
        &mut clock2,
        ep("192.0.2.15", 53002, "192.0.2.53", 53),
        0x4321,
        "raw.example.com",
        None,
        &[[198, 51, 100, 23]],
    );
    dns_frames.extend(dns_exchange(
        &mut clock2,
        ep("192.0.2.15", 53003, "192.0.2.53", 53),
        0x4322,
        "www.example.org",
        None,
        &[[203, 0, 113, 5]],
    ));
    let mut all: Vec<Frame> = tls.into_iter().chain(dns_frames).collect();
    all.sort_by_key(|f| f.ts_ns);
    write_pcapng(&dir.join("multi-interface.pcapng"), &all)?;
    Ok(())
}

/// A DNS answer too big for one packet, sent as IPv4 fragments out of order.
fn fragments(dir: &Path) -> Result<()> {
    let mut clock = Clock(T0);
    let e = ep("192.0.2.16", 53004, "192.0.2.53", 53);
    let name = "frag.example.com";
    let addrs: Vec<[u8; 4]> = (1..=100).map(|i| [203, 0, 113, i as u8]).collect();
    let q = dns(0x7777, name, false, None, &[]);
    let r = dns(0x7777, name, true, None, &addrs);
    let mut frames = vec![frame(&e, Side::Client, L4::Udp, &q, clock.tick(100))];
    let whole = frame(&e, Side::Server, L4::Udp, &r, 0).data;
    // Split the IPv4 payload (UDP header + DNS) into 3 fragments of ≤ 600 bytes.
    let ip_hdr = &whole[14..34];
    let payload = &whole[34..];
    let mut frags = Vec::new();
    for (n, chunk) in payload.chunks(600).enumerate() {
        let offset = n * 600;
        let more = offset + chunk.len() < payload.len();
        let mut h = ip_hdr.to_vec();
        let total = (20 + chunk.len()) as u16;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
        let flags_off = ((offset / 8) as u16) | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&flags_off.to_be_bytes());
        h[10..12].copy_from_slice(&[0, 0]);
        let sum = ipv4_checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut f = whole[..14].to_vec();
        f.extend_from_slice(&h);
        f.extend_from_slice(chunk);
        frags.push(f);
    }
    frags.reverse();
    for f in frags {
        frames.push(Frame {
            ts_ns: clock.tick(100),
            linktype: net::LINKTYPE_ETHERNET,
            data: f,
        });
    }
    write_pcap(&dir.join("ipv4-fragments.pcap"), &frames, false)?;
    Ok(())
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("bench") {
        // pcapgen bench handshake|mix OUT [SEED [SIZE]]
        let (Some(profile), Some(out)) = (args.get(2), args.get(3)) else {
            return Err("usage: pcapgen bench handshake|mix|flood|quic OUT [SEED [SIZE]]".into());
        };
        let seed = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
        // a fifth argument scales the profile down (connections / packets), for profiling
        let size = args.get(5).and_then(|s| s.parse().ok());
        return match profile.as_str() {
            "handshake" => bench::handshake_heavy(Path::new(out), seed, size.unwrap_or(80_000)),
            "mix" => bench::mix(Path::new(out), seed, size.unwrap_or(750_000)),
            "flood" => bench::flood(Path::new(out), seed, size.unwrap_or(1_000_000)),
            "quic" => bench::quic(Path::new(out), seed, size.unwrap_or(20_000)),
            p => Err(format!("unknown profile {p}").into()),
        };
    }
    if args.get(1).map(String::as_str) == Some("evasion") {
        // pcapgen evasion DIR: only the evasion captures
        let dir = Path::new(args.get(2).map(String::as_str).unwrap_or("pcaps"));
        std::fs::create_dir_all(dir)?;
        evasion::dns_odd_ports(dir)?;
        evasion::ipv6_fragment_options(dir)?;
        evasion::second_client_hello(dir)?;
        evasion::http_heads(dir)?;
        evasion::decoy_overlap(dir)?;
        evasion::decoy_server_overlap(dir)?;
        evasion::quic_shapes(dir)?;
        evasion::hostile_names(dir)?;
        eprintln!("pcapgen: evasion captures written to {}", dir.display());
        return Ok(());
    }
    let dir = args.get(1).cloned().unwrap_or_else(|| "pcaps".into());
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    tls12_chain(dir)?;
    tls13_vlan_ipv6(dir)?;
    tiny_mss(dir)?;
    reordered(dir)?;
    http_connect(dir)?;
    multi_interface(dir)?;
    fragments(dir)?;
    eprintln!("pcapgen: captures written to {}", dir.display());
    Ok(())
}
