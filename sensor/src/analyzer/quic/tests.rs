//! The QUIC session on the RFCs' sample packets and on packets sealed here
//! with the same keys (split, reordered, coalesced, retried, broken).

use super::packet::{Version, V1, V2};
use super::*;

const DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

static RFC_CLIENT: &[u8] = include_bytes!("fixtures/rfc9001-client-initial.bin");
static RFC_SERVER: &[u8] = include_bytes!("fixtures/rfc9001-server-initial.bin");
static RFC_PAYLOAD: &[u8] = include_bytes!("fixtures/rfc9001-client-payload.bin");
/// A rustls ClientHello record (SNI www.example.com, ALPN h2 + http/1.1).
static RUSTLS_HELLO: &[u8] = include_bytes!("../tls/fixtures/rustls-tls12-client-hello.bin");

/// The RFC sample ClientHello message (SNI example.com, ALPN "alpn").
fn rfc_hello() -> &'static [u8] {
    &RFC_PAYLOAD[4..]
}

fn rustls_hello() -> &'static [u8] {
    &RUSTLS_HELLO[5..]
}

fn crypto_frame(offset: usize, data: &[u8]) -> Vec<u8> {
    let mut v = vec![0x06, 0x80, 0, (offset >> 8) as u8, offset as u8];
    v.extend_from_slice(&[0x40 | (data.len() >> 8) as u8, data.len() as u8]);
    v.extend_from_slice(data);
    v
}

/// An Initial packet of `version` sealed with the keys `key_dcid` gives.
fn initial(
    version: u32,
    dcid: &[u8],
    key_dcid: &[u8],
    client: bool,
    pn: u32,
    frames: &[u8],
) -> Vec<u8> {
    let v = Version::of(version).expect("version");
    keys::seal_initial(v, dcid, &[0xab, 0xcd], key_dcid, client, pn, frames).expect("sealed")
}

fn feed(s: &mut QuicSession, dir: Dir, d: &[u8]) -> QuicCounters {
    let mut c = QuicCounters::default();
    s.datagram(dir, d, &mut c);
    c
}

#[test]
fn rfc9001_sample_packets_give_both_hellos() {
    let mut s = QuicSession::default();
    let c = feed(&mut s, Dir::ToServer, RFC_CLIENT);
    assert_eq!((c.initials_opened, c.client_hellos), (1, 1));
    let ch = &s.hellos[0];
    assert_eq!(ch.sni.as_deref(), Some("example.com"));
    assert_eq!(ch.alpns.as_slice(), ["alpn"]);
    assert!(!s.done() && s.unlogged());
    let c = feed(&mut s, Dir::ToClient, RFC_SERVER);
    assert_eq!(c.server_hellos, 1);
    let sh = s.server_hello.as_ref().expect("server hello");
    assert_eq!((sh.cipher, sh.version()), (0x1301, 0x0304));
    assert!(s.done());
    assert_eq!(s.version, Some(V1));
    assert_eq!(hex(&s.client_dcid), "8394c8f03e515708");
    assert_eq!(hex(&s.server_scid), "f067a5502a4262b5");
    let ev = QuicEvent::of(&s);
    assert_eq!(ev.version, "1");
    assert!(
        ev.ja4.as_deref().is_some_and(|j| j.starts_with("q13d")),
        "{:?}",
        ev.ja4
    );
    // nothing more is opened once both hellos are read
    let c = feed(&mut s, Dir::ToServer, RFC_CLIENT);
    assert_eq!(c.initials_opened, 0);
}

fn hex(b: &[u8]) -> String {
    crate::analyzer::tls::hex(b)
}

#[test]
fn rfc9369_sample_packets_give_both_hellos() {
    let mut s = QuicSession::default();
    feed(
        &mut s,
        Dir::ToServer,
        include_bytes!("fixtures/rfc9369-client-initial.bin"),
    );
    feed(
        &mut s,
        Dir::ToClient,
        include_bytes!("fixtures/rfc9369-server-initial.bin"),
    );
    assert_eq!(s.hellos[0].sni.as_deref(), Some("example.com"));
    assert_eq!(s.server_hello.as_ref().map(|h| h.cipher), Some(0x1301));
    assert_eq!(s.version, Some(V2));
    assert_eq!(QuicEvent::of(&s).version, "2");
}

#[test]
fn a_hello_over_two_packets_in_pieces_out_of_order_and_coalesced() {
    let ch = rfc_hello();
    let (a, b) = (&ch[..100], &ch[100..]);
    let (b1, b2) = (&b[..60], &b[60..]);
    // packet 1: the last piece, PING, then the first piece, ACK
    let mut f1 = crypto_frame(160, b2);
    f1.push(0x01);
    f1.extend(crypto_frame(0, a));
    f1.extend([0x02, 0x00, 0x00, 0x00, 0x00]);
    // packet 2: the middle piece
    let f2 = crypto_frame(100, b1);
    let p1 = initial(V1, &DCID, &DCID, true, 0, &f1);
    let p2 = initial(V1, &DCID, &DCID, true, 1, &f2);
    for order in [[&p1, &p2], [&p2, &p1]] {
        let mut s = QuicSession::default();
        feed(&mut s, Dir::ToServer, order[0]);
        assert!(s.hellos.is_empty());
        feed(&mut s, Dir::ToServer, order[1]);
        assert_eq!(s.hellos[0].sni.as_deref(), Some("example.com"));
    }
    // both packets coalesced in one datagram
    let mut s = QuicSession::default();
    let c = feed(&mut s, Dir::ToServer, &[p2.clone(), p1.clone()].concat());
    assert_eq!((c.packets, c.initials_opened), (2, 2));
    assert_eq!(s.hellos.len(), 1);
}

#[test]
fn after_a_retry_the_client_new_dcid_gives_new_keys() {
    let ch = rfc_hello();
    let mut s = QuicSession::default();
    // the first attempt, cut short by the Retry
    feed(
        &mut s,
        Dir::ToServer,
        &initial(V1, &DCID, &DCID, true, 0, &crypto_frame(0, &ch[..50])),
    );
    let mut retry = vec![0xf0, 0, 0, 0, 1, 2, 0xab, 0xcd, 4, 9, 9, 9, 9];
    retry.extend_from_slice(&[0x55; 24]); // token and integrity tag
    let c = feed(&mut s, Dir::ToClient, &retry);
    assert_eq!(c.retry, 1);
    let new = [9, 9, 9, 9];
    let c = feed(
        &mut s,
        Dir::ToServer,
        &initial(V1, &new, &new, true, 1, &crypto_frame(0, ch)),
    );
    assert_eq!(c.decrypt_failed, 0);
    assert_eq!(s.hellos[0].sni.as_deref(), Some("example.com"));
    assert!(s.retry);
    assert!(QuicEvent::of(&s).retry);
}

#[test]
fn a_new_attempt_under_other_keys_is_read_too() {
    let mut s = QuicSession::default();
    let decoy = initial(V1, &DCID, &DCID, true, 0, &crypto_frame(0, rustls_hello()));
    let real = initial(V1, &[7; 8], &[7; 8], true, 0, &crypto_frame(0, rfc_hello()));
    feed(&mut s, Dir::ToServer, &decoy);
    feed(&mut s, Dir::ToServer, &real);
    let names: Vec<_> = s.hellos.iter().map(|h| h.sni.as_deref()).collect();
    assert_eq!(names, [Some("www.example.com"), Some("example.com")]);
    let ev = QuicEvent::of(&s);
    assert_eq!(ev.other_client_hellos.len(), 1);
    let prints = ev.prints();
    let f = facts(&s, &prints);
    let snis: Vec<_> = f.values(crate::analyzer::facts::Fact::Sni).collect();
    assert_eq!(snis, ["www.example.com", "example.com"]);
    assert_eq!(f.values(crate::analyzer::facts::Fact::Ja4).count(), 2);
}

#[test]
fn the_client_later_initials_to_the_server_cid_use_the_first_keys() {
    let mut s = QuicSession::default();
    feed(&mut s, Dir::ToServer, RFC_CLIENT);
    feed(&mut s, Dir::ToClient, RFC_SERVER);
    // an ACK-only Initial to the server's chosen CID, sealed with the keys of
    // the first DCID: opened once, nothing new, no failure
    let ack = initial(V1, &[0xf0, 0x67], &DCID, true, 3, &[0x02, 0, 0, 0, 0]);
    let c = feed(&mut s, Dir::ToServer, &ack);
    assert_eq!((c.initials_opened, c.decrypt_failed), (1, 0));
    let c = feed(&mut s, Dir::ToServer, &ack);
    assert_eq!(c.initials_opened, 0, "the same CID is not opened again");
    assert_eq!(s.hellos.len(), 1);
}

#[test]
fn broken_packets_are_counted_never_a_panic() {
    // cut anywhere
    for cut in 0..RFC_CLIENT.len() {
        let mut s = QuicSession::default();
        let c = feed(&mut s, Dir::ToServer, &RFC_CLIENT[..cut]);
        assert!(s.hellos.is_empty(), "cut {cut}");
        assert!(
            cut < 7 || c.malformed + c.decrypt_failed > 0,
            "cut {cut}: {c:?}"
        );
    }
    // one changed byte anywhere after the header
    for at in (20..RFC_CLIENT.len()).step_by(97) {
        let mut p = RFC_CLIENT.to_vec();
        p[at] ^= 0x20;
        let mut s = QuicSession::default();
        let c = feed(&mut s, Dir::ToServer, &p);
        assert_eq!(c.decrypt_failed, 1, "byte {at}");
    }
    // an absurd CRYPTO offset
    let mut s = QuicSession::default();
    let mut f = vec![0x06, 0xc0, 0, 0, 0, 0x40, 0, 0, 0, 0x05];
    f.extend_from_slice(b"hello");
    let c = feed(
        &mut s,
        Dir::ToServer,
        &initial(V1, &DCID, &DCID, true, 0, &f),
    );
    assert_eq!(c.crypto_out_of_bounds, 1);
    assert!(s.malformed);
    // a frame an Initial cannot carry, and a CRYPTO frame longer than the packet
    for f in [vec![0x08, 0, 0], vec![0x06, 0x00, 0x44, 0x00]] {
        let mut s = QuicSession::default();
        let c = feed(
            &mut s,
            Dir::ToServer,
            &initial(V1, &DCID, &DCID, true, 0, &f),
        );
        assert_eq!(c.malformed, 1, "{f:?}");
    }
    // a hello that is not one
    let mut s = QuicSession::default();
    let c = feed(
        &mut s,
        Dir::ToServer,
        &initial(
            V1,
            &DCID,
            &DCID,
            true,
            0,
            &crypto_frame(0, &[1, 0, 0, 3, 1, 2, 3]),
        ),
    );
    assert_eq!(c.malformed, 1);
}

#[test]
fn padding_after_a_packet_and_a_forged_short_header_do_not_end_the_hello() {
    let ch = rfc_hello();
    let mut p1 = initial(V1, &DCID, &DCID, true, 0, &crypto_frame(0, &ch[..100]));
    p1.extend_from_slice(&[0; 300]); // zeros after the packet, as Chrome pads
    let p2 = initial(V1, &DCID, &DCID, true, 1, &crypto_frame(100, &ch[100..]));
    let mut s = QuicSession::default();
    let c = feed(&mut s, Dir::ToServer, &p1);
    assert_eq!(c.short_header, 0, "padding is no packet");
    feed(&mut s, Dir::ToServer, &[0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    feed(&mut s, Dir::ToClient, &[0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    feed(&mut s, Dir::ToServer, &p2);
    assert_eq!(s.hellos[0].sni.as_deref(), Some("example.com"));
    // the server's 1-RTT after the hello: its Initial was not captured
    assert!(!s.done());
    feed(&mut s, Dir::ToClient, &[0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert!(s.done());
}

#[test]
fn connections_sharing_a_5_tuple_are_each_read() {
    let mut s = QuicSession::default();
    for i in 0..3 * MAX_HELLOS as u8 {
        let decoy = i % 2 == 0;
        let ch = if decoy { rustls_hello() } else { rfc_hello() };
        let p = initial(V1, &[i; 8], &[i; 8], true, 0, &crypto_frame(0, ch));
        feed(&mut s, Dir::ToServer, &p);
        assert_eq!(s.hellos.len(), 1, "connection {i}");
        s.logged();
    }
}

#[test]
fn the_hello_repeated_after_a_retry_is_logged_once() {
    let mut s = QuicSession::default();
    feed(
        &mut s,
        Dir::ToServer,
        &initial(V1, &DCID, &DCID, true, 0, &crypto_frame(0, rfc_hello())),
    );
    let mut retry = vec![0xf0, 0, 0, 0, 1, 2, 0xab, 0xcd, 4, 9, 9, 9, 9];
    retry.extend_from_slice(&[0x55; 24]);
    feed(&mut s, Dir::ToClient, &retry);
    let new = [9, 9, 9, 9];
    feed(
        &mut s,
        Dir::ToServer,
        &initial(V1, &new, &new, true, 0, &crypto_frame(0, rfc_hello())),
    );
    assert_eq!(s.hellos.len(), 1);
    assert!(s.retry);
}

#[test]
fn a_decoy_copy_of_the_crypto_bytes_does_not_hide_the_real_hello() {
    // the same offsets twice: first a copy naming another server (a decoy
    // meant to die on the way), then the real one
    let real = rfc_hello().to_vec();
    let at = real
        .windows(11)
        .position(|w| w == b"example.com")
        .expect("the name");
    let mut decoy = real.clone();
    decoy[at..at + 11].copy_from_slice(b"harmless.io");
    let mut s = QuicSession::default();
    let c = feed(
        &mut s,
        Dir::ToServer,
        &initial(V1, &DCID, &DCID, true, 0, &crypto_frame(0, &decoy[..120])),
    );
    assert_eq!(c.crypto_conflicts, 0);
    let c = feed(
        &mut s,
        Dir::ToServer,
        &initial(V1, &DCID, &DCID, true, 1, &crypto_frame(0, &real)),
    );
    assert_eq!(c.crypto_conflicts, 1);
    let names: Vec<_> = s.hellos.iter().map(|h| h.sni.as_deref()).collect();
    assert_eq!(names, [Some("harmless.io"), Some("example.com")]);
}

#[test]
fn opening_is_bounded_per_flow() {
    let mut s = QuicSession::default();
    let mut total = QuicCounters::default();
    for i in 0..100u8 {
        // each to a new DCID, sealed with keys nobody derives from it
        let p = initial(V1, &[i; 8], &[0xee; 8], true, 0, &[0x01]);
        total.add(&feed(&mut s, Dir::ToServer, &p));
    }
    assert_eq!(total.decrypt_failed, u64::from(MAX_INITIALS));
    assert_eq!(total.initial_limit, 1);
}

#[test]
fn short_headers_unknown_versions_and_version_negotiation_are_counted() {
    let mut s = QuicSession::default();
    assert_eq!(
        feed(&mut s, Dir::ToServer, &[0x40, 1, 2, 3]).short_header,
        1
    );
    let mut gquic = vec![0xc3, b'Q', b'0', b'5', b'0', 8];
    gquic.extend_from_slice(&[1; 8]);
    gquic.push(0);
    gquic.resize(1350, 0);
    assert_eq!(feed(&mut s, Dir::ToServer, &gquic).unknown_version, 1);
    let mut vn = vec![0x80, 0, 0, 0, 0, 2, 0xab, 0xcd, 1, 0xee];
    vn.extend_from_slice(&[0, 0, 0, 1, 0x6b, 0x33, 0x43, 0xcf]);
    assert_eq!(feed(&mut s, Dir::ToClient, &vn).version_negotiation, 1);
    assert_eq!(&s.offered[..], &[V1, V2]);
}

#[test]
fn the_probe_takes_quic_and_leaves_other_datagrams() {
    let c = |bytes: &'static [u8]| Chunk {
        dir: Dir::ToServer,
        bytes,
        sport: 5000,
        dport: 6000,
    };
    assert_eq!(probe(&c(RFC_CLIENT)), Probe::Yes);
    assert_eq!(probe(&c(RFC_SERVER)), Probe::Yes);
    assert_eq!(
        probe(&c(b"\x80\x00\x00\x01\x00\x02hello")),
        Probe::No,
        "no fixed bit"
    );
    assert_eq!(probe(&c(b"GET / HTTP/1.1\r\n")), Probe::No);
    assert_eq!(
        probe(&c(&[0xc0, 0x51, 0x30, 0x35, 0x30, 0x08])),
        Probe::No,
        "cut"
    );
    // an unknown version only in a datagram the size of a client's first
    static BIG: [u8; 1200] = {
        let mut b = [0u8; 1200];
        b[0] = 0xc0;
        b[1] = 0x51;
        b[5] = 8;
        b
    };
    assert_eq!(probe(&c(&BIG)), Probe::Yes);
    assert_eq!(probe(&c(&BIG[..600])), Probe::No);
}

/// Both hellos read and logged: the keys, the packet buffer and the logged
/// hellos' room are let go, and a later connection on the same 5-tuple is
/// still opened and read.
#[test]
fn a_logged_handshake_lets_its_keys_go_and_a_new_connection_still_opens() {
    let mut s = QuicSession::default();
    feed(&mut s, Dir::ToServer, RFC_CLIENT);
    feed(&mut s, Dir::ToClient, RFC_SERVER);
    assert!(s.done() && !s.keys.is_empty() && s.scratch.capacity() > 0);
    s.logged();
    assert!(s.keys.is_empty() && s.scratch.capacity() == 0);
    assert_eq!(s.hellos.capacity(), 0);
    // what every QUIC flow holds until it ends (its idle timeout, 120 s,
    // after the handshake): the hellos live on the heap, not in it (it was
    // 1,696 bytes with one hello and the last one inline)
    assert!(std::mem::size_of::<QuicSession>() <= 768);
    // the same connection's Initials are not opened again
    let c = feed(&mut s, Dir::ToServer, RFC_CLIENT);
    assert_eq!((c.initials_opened, c.decrypt_failed), (0, 0));
    // a new connection ID: new keys, its hello read
    let new = [7u8; 8];
    let c = feed(
        &mut s,
        Dir::ToServer,
        &initial(V1, &new, &new, true, 0, &crypto_frame(0, rustls_hello())),
    );
    assert_eq!((c.initials_opened, c.client_hellos), (1, 1));
    assert_eq!(s.hellos[0].sni.as_deref(), Some("www.example.com"));
}
