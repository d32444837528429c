//! Captures of evasion classes: real protocol bytes where a sensor that
//! looks only at the usual places would miss them. Written only by
//! `pcapgen evasion DIR`, so regenerating them leaves the other captures (and
//! their snapshots) alone.

use std::path::Path;

use crate::net::{self, frame, write_pcap, Clock, Frame, Side, Tcp, L4};
use crate::tls::{chain, handshake_hrr, Handshake, Result};
use crate::{dns, ep, T0};

/// A DNS message with the two-byte length that precedes it on a stream.
fn framed(m: &[u8]) -> Vec<u8> {
    let mut v = (m.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(m);
    v
}

/// DNS away from port 53: a resolver on UDP 5300 and one on TCP 8053, both
/// asked for ngrok endpoint names; and two UDP flows on the same odd ports
/// whose payload is not DNS (an RTP-like stream, text), which must stay
/// flows.
pub fn dns_odd_ports(dir: &Path) -> Result<()> {
    let mut clock = Clock(T0 + 3_600_000_000_000);
    let mut frames = Vec::new();
    let udp = ep("10.1.0.10", 41000, "198.51.100.53", 5300);
    let q = dns(0x5300, "odd-port.ngrok-free.app", false, None, &[]);
    let r = dns(
        0x5300,
        "odd-port.ngrok-free.app",
        true,
        None,
        &[[203, 0, 113, 9]],
    );
    frames.push(frame(&udp, Side::Client, L4::Udp, &q, clock.tick(100)));
    frames.push(frame(&udp, Side::Server, L4::Udp, &r, clock.tick(900)));
    let mut tcp = Tcp::open(
        ep("10.1.0.10", 41001, "198.51.100.53", 8053),
        &mut clock,
        1400,
        (1000, 5000),
    );
    let q = dns(0x8053, "stream.ngrok.io", false, None, &[]);
    let r = dns(0x8053, "stream.ngrok.io", true, None, &[[203, 0, 113, 10]]);
    tcp.send(Side::Client, &framed(&q));
    tcp.send(Side::Server, &framed(&r));
    frames.extend(tcp.close());
    // not DNS, on the same odd port: RTP-like packets and a line of text
    let rtp = ep("10.1.0.11", 41002, "198.51.100.53", 5300);
    for i in 0..4u8 {
        let mut p = vec![0x80, 0x60, 0, i, 0, 0, 0x10, i, 0xde, 0xad, 0xbe, 0xef];
        p.extend((0..160u8).map(|b| b.wrapping_mul(31).wrapping_add(i)));
        frames.push(frame(&rtp, Side::Client, L4::Udp, &p, clock.tick(20_000)));
    }
    let text = ep("10.1.0.11", 41003, "198.51.100.53", 8053);
    frames.push(frame(
        &text,
        Side::Client,
        L4::Udp,
        b"hello, this is not a DNS message at all\n",
        clock.tick(100),
    ));
    write_pcap(&dir.join("evasion-dns-odd-ports.pcap"), &frames, false)?;
    Ok(())
}

/// An IPv6 DNS query cut into two fragments whose fragmentable part starts
/// with a Destination Options header: the UDP header follows it, so it is
/// found only by walking the chain again once the datagram is whole (RFC
/// 8200 §4.5). The second fragment, sent first, names UDP as its Next
/// Header; only the first fragment's (Destination Options) counts.
pub fn ipv6_fragment_options(dir: &Path) -> Result<()> {
    let mut clock = Clock(T0 + 3_700_000_000_000);
    let e = ep("2001:db8:1::10", 41004, "2001:db8:100::53", 53);
    let q = dns(0x6666, "fragmented.ngrok-free.app", false, None, &[]);
    let whole = frame(&e, Side::Client, L4::Udp, &q, 0).data;
    let (eth, ip6, udp) = (&whole[..14], &whole[14..54], &whole[54..]);
    // Destination Options: next header UDP, length 0, PadN of 4 bytes.
    let mut part = vec![17, 0, 1, 4, 0, 0, 0, 0];
    part.extend_from_slice(udp);
    let cut = 24; // a multiple of 8
    let (a, b) = part.split_at(cut);
    let packet = |next: u8, offset: usize, more: bool, data: &[u8]| {
        let mut f = eth.to_vec();
        let mut h = ip6.to_vec();
        h[4..6].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        h[6] = 44; // Fragment
        f.extend_from_slice(&h);
        f.extend_from_slice(&[next, 0]);
        f.extend_from_slice(&((offset as u16) | u16::from(more)).to_be_bytes());
        f.extend_from_slice(&0x0bad_cafeu32.to_be_bytes());
        f.extend_from_slice(data);
        f
    };
    let frames = vec![
        Frame {
            ts_ns: clock.tick(100),
            linktype: net::LINKTYPE_ETHERNET,
            data: packet(17, cut, false, b),
        },
        Frame {
            ts_ns: clock.tick(100),
            linktype: net::LINKTYPE_ETHERNET,
            data: packet(60, 0, true, a),
        },
    ];
    write_pcap(
        &dir.join("evasion-ipv6-fragment-options.pcap"),
        &frames,
        false,
    )?;
    Ok(())
}

/// A TLS 1.3 connection with a HelloRetryRequest whose second ClientHello
/// names another server than the first: the first asks for a harmless
/// `docs.example.org`, the second (rewritten in place, same length) for
/// `a.ngrok-free.app`. A sensor that reads only the first ClientHello never
/// sees the tunnel's name.
pub fn second_client_hello(dir: &Path) -> Result<()> {
    let (first, second) = ("docs.example.org", "a.ngrok-free.app");
    let ch = chain("Example Org", &[first])?;
    let mut flights = handshake_hrr(&Handshake {
        version: &rustls::version::TLS13,
        sni: first,
        alpn: &["h2", "http/1.1"],
        chain: &ch,
        request: b"GET / HTTP/1.1\r\nHost: a.ngrok-free.app\r\n\r\n",
    })?;
    // the client's second flight holds the second ClientHello, in clear
    let f = flights
        .iter_mut()
        .filter(|f| f.side == Side::Client)
        .nth(1)
        .ok_or("no second client flight")?;
    let at = f
        .data
        .windows(first.len())
        .position(|w| w == first.as_bytes())
        .ok_or("the second ClientHello has no server name")?;
    f.data[at..at + second.len()].copy_from_slice(second.as_bytes());
    let mut clock = Clock(T0 + 3_800_000_000_000);
    let mut tcp = Tcp::open(
        ep("10.1.0.10", 41005, "203.0.113.20", 443),
        &mut clock,
        1400,
        (7000, 9000),
    );
    tcp.flights(&flights);
    let frames: Vec<Frame> = tcp.close();
    write_pcap(
        &dir.join("evasion-second-client-hello.pcap"),
        &frames,
        false,
    )?;
    Ok(())
}

/// One keep-alive HTTP connection where the telling requests come late or
/// hidden: twenty throw-away requests first, then an absolute-form request
/// whose target names `abs.ngrok-free.app` while its Host is harmless, then
/// two requests pipelined in one segment, the second to `pipe.ngrok-free.app`
/// after a POST body that holds a fake request head.
pub fn http_heads(dir: &Path) -> Result<()> {
    let mut clock = Clock(T0 + 3_900_000_000_000);
    let mut tcp = Tcp::open(
        ep("10.1.0.10", 41006, "198.51.100.80", 80),
        &mut clock,
        1400,
        (11_000, 13_000),
    );
    let ok = |body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    for i in 0..20 {
        let q = format!("GET /static/{i}.css HTTP/1.1\r\nHost: www.example.com\r\n\r\n");
        tcp.send(Side::Client, q.as_bytes());
        tcp.send(Side::Server, ok("body {}").as_bytes());
    }
    let q = "GET http://abs.ngrok-free.app/login HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
    tcp.send(Side::Client, q.as_bytes());
    tcp.send(Side::Server, ok("ok").as_bytes());
    let fake = "GET /x HTTP/1.1\r\nHost: fake.ngrok.io\r\n\r\n";
    let q = format!(
        "POST /form HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: {}\r\n\r\n{fake}GET / HTTP/1.1\r\nHost: pipe.ngrok-free.app\r\n\r\n",
        fake.len()
    );
    tcp.send(Side::Client, q.as_bytes());
    tcp.send(
        Side::Server,
        format!("{}{}", ok("saved"), ok("hi")).as_bytes(),
    );
    let frames = tcp.close();
    write_pcap(&dir.join("evasion-http-heads.pcap"), &frames, false)?;
    Ok(())
}

/// A decoy copy of the ClientHello: the client's first segment is sent twice
/// with the same sequence number, first with a harmless server name (and a
/// TTL of 1, so it dies before the server), then as the real ClientHello of
/// a rustls TLS 1.3 handshake to `a.ngrok-free.app` (its certificate is
/// encrypted: the server name is the only clue). A sensor that keeps the
/// first copy and says nothing never sees the real name.
pub fn decoy_overlap(dir: &Path) -> Result<()> {
    let (real, decoy) = ("a.ngrok-free.app", "docs.example.org");
    let ch = chain("Example Org", &[real])?;
    let flights = crate::tls::handshake(&Handshake {
        version: &rustls::version::TLS13,
        sni: real,
        alpn: &["http/1.1"],
        chain: &ch,
        request: b"GET / HTTP/1.1\r\nHost: a.ngrok-free.app\r\n\r\n",
    })?;
    let mut clock = Clock(T0 + 4_000_000_000_000);
    let mut tcp = Tcp::open(
        ep("10.1.0.10", 41007, "203.0.113.30", 443),
        &mut clock,
        1400,
        (21_000, 23_000),
    );
    let mut fake = flights[0].data.clone();
    if replace_all(&mut fake, real.as_bytes(), decoy.as_bytes()) == 0 {
        return Err("the ClientHello has no server name".into());
    }
    let mut f = tcp.decoy(Side::Client, &fake);
    ttl_one(&mut f);
    tcp.push_frame(f);
    tcp.flights(&flights);
    let frames = tcp.close();
    write_pcap(&dir.join("evasion-decoy-overlap.pcap"), &frames, false)?;
    Ok(())
}

/// The same trick on the server's side: a TLS 1.2 server flight whose
/// certificates come from a CA named `mitmproxy` (an interceptor's forged
/// leaf), preceded by a same-sequence copy in which every `mitmproxy` reads
/// `examplecx` (and a TTL of 1). The client never sees the decoy; a sensor
/// that keeps the first copy sees an ordinary CA.
pub fn decoy_server_overlap(dir: &Path) -> Result<()> {
    let ch = crate::tls::chain_from_ca("mitmproxy", &["www.example.com"])?;
    let flights = crate::tls::handshake(&Handshake {
        version: &rustls::version::TLS12,
        sni: "www.example.com",
        alpn: &["http/1.1"],
        chain: &ch,
        request: b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
    })?;
    let mut clock = Clock(T0 + 4_100_000_000_000);
    let mut tcp = Tcp::open(
        ep("10.1.0.10", 41008, "203.0.113.40", 443),
        &mut clock,
        1400,
        (31_000, 33_000),
    );
    tcp.send(Side::Client, &flights[0].data);
    let mut fake = flights[1].data.clone();
    replace_all(&mut fake, b"mitmproxy", b"examplecx");
    let mut f = tcp.decoy(Side::Server, &fake);
    ttl_one(&mut f);
    tcp.push_frame(f);
    tcp.flights(&flights[1..]);
    let frames = tcp.close();
    write_pcap(
        &dir.join("evasion-decoy-server-overlap.pcap"),
        &frames,
        false,
    )?;
    Ok(())
}

/// Replaces every `from` in `b` with `to` (the same length); how many.
fn replace_all(b: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    let (mut i, mut n) = (0, 0);
    while let Some(at) = b[i..].windows(from.len()).position(|w| w == from) {
        b[i + at..i + at + to.len()].copy_from_slice(to);
        i += at + to.len();
        n += 1;
    }
    n
}

/// A decoy's TTL of 1 (it dies at the first router), IPv4 checksum made again.
fn ttl_one(f: &mut Frame) {
    f.data[14 + 8] = 1;
    f.data[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let sum = crate::ipv4_checksum(&f.data[14..34]);
    f.data[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
}

/// QUIC in the shapes that must not hide a ClientHello, each protected with
/// rustls's own Initial keys: a ClientHello in three CRYPTO pieces over two
/// Initials sent last piece first, on UDP 8443 (v1, `a.ngrok-free.app`); a
/// Retry, then the hello again under the keys of the client's new connection
/// ID (v2, `quic.cftunnel.com`, ALPN `argotunnel`, UDP 7844); two connections
/// on one 5-tuple, a harmless name first (`docs.example.org`, answered), then
/// `demo.trycloudflare.com` to a new connection ID; a junk datagram, then
/// draft-29 to `www.example.com` (silent).
pub fn quic_shapes(dir: &Path) -> Result<()> {
    use crate::quic::{crypto_frame, handshake, initial_keys, initial_packet, initial_pair};
    use rustls::quic::Version;
    let mut clock = Clock(T0 + 4_200_000_000_000);
    let mut frames = Vec::new();
    let ch = chain("Example Org", &["quic.example.org"])?;
    let mut send = |frames: &mut Vec<Frame>, e: &net::Endpoints, side, p: &[u8], us| {
        frames.push(frame(e, side, L4::Udp, p, clock.tick(us)));
    };
    let keys = |v, dcid: &[u8]| -> Result<(rustls::quic::Keys, rustls::quic::Keys)> {
        Ok((initial_keys(v, dcid, true)?, initial_keys(v, dcid, false)?))
    };
    // 1. three pieces over two Initials, the second Initial first
    let e = ep("10.1.0.10", 50001, "203.0.113.30", 8443);
    let dcid = [0xa1; 8];
    let h = handshake("a.ngrok-free.app", &["h3"], &ch, Version::V1, &dcid)?;
    let (ck, sk) = keys(Version::V1, &dcid)?;
    let c = &h.client_hello;
    let (a, b) = (c.len() / 3, 2 * c.len() / 3);
    let p1 = [crypto_frame(b, &c[b..]), crypto_frame(0, &c[..a])].concat();
    let p1 = initial_packet(&ck.local, Version::V1, &dcid, &[0xc1; 4], 0, &p1, 1200)?;
    let p2 = initial_packet(
        &ck.local,
        Version::V1,
        &dcid,
        &[0xc1; 4],
        1,
        &crypto_frame(a, &c[a..b]),
        1200,
    )?;
    send(&mut frames, &e, Side::Client, &p2, 100);
    send(&mut frames, &e, Side::Client, &p1, 50);
    let s = initial_packet(
        &sk.local,
        Version::V1,
        &[0xc1; 4],
        &h.scid,
        0,
        &crypto_frame(0, &h.server_hello),
        0,
    )?;
    send(&mut frames, &e, Side::Server, &s, 900);
    // 2. a Retry, then the hello under the new connection ID's keys (v2)
    let e = ep("10.1.0.10", 50002, "198.51.100.20", 7844);
    let (first, second) = ([0xb1; 8], [0xb2; 8]);
    let h = handshake(
        "quic.cftunnel.com",
        &["argotunnel"],
        &ch,
        Version::V2,
        &first,
    )?;
    let (c, _) = initial_pair(&h, Version::V2, &first, &[0xc2; 4], 0)?;
    send(&mut frames, &e, Side::Client, &c, 100);
    let mut retry = vec![0xc0, 0x6b, 0x33, 0x43, 0xcf, 4, 0xc2, 0xc2, 0xc2, 0xc2, 8];
    retry.extend_from_slice(&second);
    retry.extend_from_slice(&[0x7e; 40]); // token and integrity tag
    send(&mut frames, &e, Side::Server, &retry, 900);
    let (c, s) = initial_pair(&h, Version::V2, &second, &[0xc2; 4], 1)?;
    send(&mut frames, &e, Side::Client, &c, 100);
    send(&mut frames, &e, Side::Server, &s, 900);
    // 3. two connections on one 5-tuple: a harmless one, then a tunnel
    let e = ep("10.1.0.11", 50003, "203.0.113.31", 443);
    for (dcid, sni) in [
        ([0xc3; 8], "docs.example.org"),
        ([0xc4; 8], "demo.trycloudflare.com"),
    ] {
        let h = handshake(sni, &["h3"], &ch, Version::V1, &dcid)?;
        let (c, s) = initial_pair(&h, Version::V1, &dcid, &[0xc3; 4], 0)?;
        send(&mut frames, &e, Side::Client, &c, 100_000);
        send(&mut frames, &e, Side::Server, &s, 900);
        let mut one_rtt = vec![0x41; 60];
        one_rtt[1..5].copy_from_slice(&[0xc3; 4]);
        send(&mut frames, &e, Side::Server, &one_rtt, 200);
    }
    // 4. junk first, then draft-29 to a harmless name
    let e = ep("10.1.0.12", 50004, "203.0.113.32", 443);
    let junk = b"\x17junk that is not QUIC at all";
    send(&mut frames, &e, Side::Client, junk, 100);
    let dcid = [0xd1; 8];
    let h = handshake("www.example.com", &["h3-29"], &ch, Version::V1Draft, &dcid)?;
    let (c, s) = initial_pair(&h, Version::V1Draft, &dcid, &[0xc4; 4], 0)?;
    send(&mut frames, &e, Side::Client, &c, 100);
    send(&mut frames, &e, Side::Server, &s, 900);
    write_pcap(&dir.join("evasion-quic-shapes.pcap"), &frames, false)?;
    Ok(())
}

/// Names made to attack whoever reads the findings: markup, a script, an
/// event handler, terminal escape sequences (a title change, a screen
/// clear, a right-to-left override) and a name of 250 characters, in DNS
/// queries for ngrok names and an HTTP Host header; each matches a
/// signature, so each reaches the alerts, the findings table and the report.
pub fn hostile_names(dir: &Path) -> Result<()> {
    let mut clock = Clock(T0 + 4_300_000_000_000);
    let mut frames = Vec::new();
    let long = format!("{0}.{0}.{0}.ngrok-free.app", "a".repeat(63));
    let names = [
        "<script>document.title='pwned'</script>.ngrok-free.app".to_string(),
        "\"><img src=x onerror=alert(1)>.ngrok.io".to_string(),
        "\u{1b}]0;pwned\u{7}\u{1b}[2J.ngrok.app".to_string(),
        "\u{202e}ppa.\u{202c}x.ngrok.dev".to_string(),
        long,
    ];
    for (i, n) in names.iter().enumerate() {
        let udp = ep("10.1.0.10", 42000 + i as u16, "198.51.100.53", 53);
        let q = dns(0x4800 + i as u16, n, false, None, &[]);
        frames.push(frame(&udp, Side::Client, L4::Udp, &q, clock.tick(1000)));
    }
    let mut t = Tcp::open(
        ep("10.1.0.10", 42100, "203.0.113.40", 80),
        &mut clock,
        1400,
        (7000, 9000),
    );
    t.send(
        Side::Client,
        b"GET / HTTP/1.1\r\nHost: <b onmouseover=alert(1)>x</b>.ngrok-free.app\r\n\r\n",
    );
    t.send(
        Side::Server,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    );
    frames.extend(t.close());
    write_pcap(&dir.join("evasion-hostile-names.pcap"), &frames, false)?;
    Ok(())
}
