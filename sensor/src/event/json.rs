//! The events every flow produces, written by hand.
//!
//! `serde_json` writes a struct as a map: every field name goes through its
//! string escaper, every field through its state machine, on every event.
//! The EVE header (and the `flow` object that ends every flow) are the same
//! dozen names on every line, so they are written here as literal bytes, as
//! is the `tls` object of every handshake; the rarer protocol objects
//! (`dns`, `alert`, ...) still go through `serde`.
//! The result is byte for byte what `serde_json::to_writer` writes for the
//! same [`Event`] (a test checks it on an event with every field set, and the
//! snapshot tests on every capture), and the destructuring below makes a new
//! field a compile error here until it is written.

use std::io::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use super::{Event, FlowEvent};
use crate::analyzer::tls::cert::CertInfo;
use crate::analyzer::tls::TlsEvent;
use crate::time::Timestamp;

/// An object being written: a comma before every member but the first.
struct Obj<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> Obj<'o> {
    fn open(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// Inlined, as are the members' writers: a name is a literal where
    /// they are called, so its copy is a few moves rather than a call to
    /// `memcpy` (a dozen names an event).
    #[inline(always)]
    fn key(&mut self, k: &str) {
        self.out.reserve(k.len() + 4);
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    #[inline(always)]
    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        string(self.out, v);
    }

    #[inline(always)]
    fn num(&mut self, k: &str, v: impl itoa::Integer) {
        self.key(k);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    #[inline(always)]
    fn time(&mut self, k: &str, t: Timestamp) {
        self.key(k);
        // digits and punctuation: nothing to escape
        self.out.push(b'"');
        self.out.extend_from_slice(&t.rfc3339_bytes());
        self.out.push(b'"');
    }

    #[inline(always)]
    fn ip(&mut self, k: &str, a: IpAddr) {
        self.key(k);
        // an address's text needs no escaping
        match a {
            IpAddr::V4(a) => {
                // `"` and four octets of up to three digits, written in
                // place and copied once
                let mut b = [0u8; 17];
                b[0] = b'"';
                let mut n = 1;
                for (i, o) in a.octets().into_iter().enumerate() {
                    if i > 0 {
                        b[n] = b'.';
                        n += 1;
                    }
                    if o >= 100 {
                        b[n] = b'0' + o / 100;
                        n += 1;
                    }
                    if o >= 10 {
                        b[n] = b'0' + o / 10 % 10;
                        n += 1;
                    }
                    b[n] = b'0' + o % 10;
                    n += 1;
                }
                b[n] = b'"';
                self.out.extend_from_slice(&b[..n + 1]);
            }
            IpAddr::V6(_) => {
                let _ = write!(self.out, "\"{a}\"");
            }
        }
    }

    #[inline(always)]
    fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
    }

    fn ser<T: Serialize + ?Sized>(&mut self, k: &str, v: &T) -> serde_json::Result<()> {
        self.key(k);
        serde_json::to_writer(&mut *self.out, v)
    }

    /// A member that is an array of strings.
    /// A member that is an array, each element written by `each`.
    fn array<T>(&mut self, k: &str, v: impl Iterator<Item = T>, each: impl Fn(&mut Vec<u8>, T)) {
        self.key(k);
        self.out.push(b'[');
        for (i, x) in v.enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            each(self.out, x);
        }
        self.out.push(b']');
    }

    /// A member that is an array of strings.
    fn strs<S: AsRef<str>>(&mut self, k: &str, v: impl Iterator<Item = S>) {
        self.array(k, v, |out, s| string(out, s.as_ref()));
    }

    /// A chain as its certificates' JSON, then as their hashes (each member
    /// only when not empty).
    fn certs(&mut self, k: [&str; 2], certs: &[&CertInfo], hashes: &[&str]) {
        if !certs.is_empty() {
            self.array(k[0], certs.iter(), |out, c| {
                out.extend_from_slice(c.json().get().as_bytes())
            });
        }
        if !hashes.is_empty() {
            self.strs(k[1], hashes.iter());
        }
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// A JSON string, escaped as `serde_json` escapes it (control characters,
/// `"` and `\`; the rest of UTF-8 as it is).
fn string(out: &mut Vec<u8>, s: &str) {
    if plain(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // a &str always serialises
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Does `b` need no escaping (no control character, `"` or `\\`)? Sixteen
/// bytes at a time, in a loop over a fixed-size block that the compiler turns
/// into a few vector compares (SSE2, in every x86-64); the last block read
/// again, overlapping; shorter strings eight bytes at a time.
fn plain(b: &[u8]) -> bool {
    let n = b.len();
    if n < 16 {
        return plain_short(b);
    }
    let mut blocks = b.chunks_exact(16);
    if !blocks.all(|c| plain_block(c.try_into().unwrap_or(&[0; 16]))) {
        return false;
    }
    n.is_multiple_of(16) || plain_block(b[n - 16..].try_into().unwrap_or(&[0; 16]))
}

/// No byte of the block needs escaping (branch-free, to be vectorised).
#[inline(always)]
fn plain_block(c: &[u8; 16]) -> bool {
    let mut bad = 0u8;
    for &x in c {
        bad |= u8::from(x < 0x20) | u8::from(x == b'"') | u8::from(x == b'\\');
    }
    bad == 0
}

/// [`plain`] for fewer than sixteen bytes: eight at a time (`x ^ c` has a
/// zero byte where `x` has `c`, and `(x - 0x20…) & !x & 0x80…` marks a byte
/// below 0x20: the standard SWAR tests), the last eight overlapping.
fn plain_short(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH != 0;
    let has = |x: u64, c: u64| has_below(x ^ (ONES * c), 1);
    let bad = |c: &[u8]| {
        let x = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        has_below(x, 0x20) || has(x, b'"' as u64) || has(x, b'\\' as u64)
    };
    match b.len() {
        n if n >= 8 => !bad(&b[..8]) && !bad(&b[n - 8..]),
        _ => b.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\'),
    }
}

/// Each `Some` string as a member named as its variable.
macro_rules! strings {
    ($o:ident, $($name:ident),*) => {
        $(if let Some(v) = $name {
            $o.str(stringify!($name), v);
        })*
    };
}

/// Each `Some` object as a member named as its variable.
macro_rules! objects {
    ($o:ident, $($name:ident),*) => {
        $(if let Some(v) = $name {
            $o.ser(stringify!($name), v)?;
        })*
    };
}

impl<'a> Event<'a> {
    /// Takes the members [`Event::write_tail`] writes (those
    /// `write_objects` lists) from `other`, an event made of its protocol
    /// object alone, keeping this one's head.
    pub fn set_objects(&mut self, other: Event<'a>) {
        self.tls = other.tls;
        self.certificate = other.certificate;
        self.quic = other.quic;
        self.dns = other.dns;
        self.http = other.http;
        self.flow = other.flow;
    }
}

impl Event<'_> {
    /// Appends the event as one JSON object (no newline).
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let Event {
            timestamp,
            flow_id,
            sensor,
            pcap_file,
            pcap_frame,
            event_type,
            src_ip,
            src_port,
            dest_ip,
            dest_port,
            proto,
            vlan,
            community_id,
            app_proto,
            anomaly,
            src_segment,
            dest_segment,
            alert,
            sanctioned,
            host_activity,
            stats,
            // written by `write_objects`
            tls: _,
            certificate: _,
            quic: _,
            dns: _,
            http: _,
            flow: _,
        } = self;
        let mut o = Obj::open(out);
        o.time("timestamp", *timestamp);
        flow_id.map(|v| o.num("flow_id", v));
        sensor.map(|v| o.str("sensor", v));
        pcap_file.map(|v| o.str("pcap_file", v));
        pcap_frame.map(|v| o.num("pcap_frame", v));
        o.str("event_type", event_type);
        src_ip.map(|v| o.ip("src_ip", v));
        src_port.map(|v| o.num("src_port", v));
        dest_ip.map(|v| o.ip("dest_ip", v));
        dest_port.map(|v| o.num("dest_port", v));
        match proto.map(|p| (p, p.name())) {
            Some((_, Some(name))) => o.str("proto", name),
            // a number, as a string (as serde's `collect_str` writes it)
            Some((p, None)) => o.str("proto", itoa::Buffer::new().format(p.0)),
            None => {}
        }
        if !vlan.is_empty() {
            o.ser("vlan", vlan)?;
        }
        community_id.map(|v| o.str("community_id", v));
        app_proto.map(|v| o.str("app_proto", v));
        anomaly.map(|v| o.str("anomaly", v));
        // the protocol objects, in the struct's order, through serde but
        // for `tls` (one on every handshake)
        objects!(
            o,
            src_segment,
            dest_segment,
            alert,
            sanctioned,
            host_activity,
            stats
        );
        self.write_objects(&mut o)?;
        o.close();
        Ok(())
    }

    /// Appends the event's members that follow its head, each with its
    /// leading comma (`,"tls":{…}`): what [`Event::write_json`] writes after
    /// the header fields. A line whose head the writer makes is this,
    /// after its head (see `pipeline::output::Item::Tail`).
    pub fn write_tail(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        self.write_objects(&mut Obj { out, first: false })
    }

    /// The protocol objects that end an event, in the struct's order.
    fn write_objects(&self, o: &mut Obj<'_>) -> serde_json::Result<()> {
        let Event {
            tls,
            certificate,
            quic,
            dns,
            http,
            flow,
            ..
        } = self;
        if let Some(v) = tls {
            o.key("tls");
            v.write_json(o.out)?;
        }
        objects!(o, certificate, quic, dns, http);
        if let Some(v) = flow {
            o.key("flow");
            v.write_json(o.out);
        }
        Ok(())
    }
}

impl TlsEvent<'_> {
    /// Appends EVE's `tls` object, byte for byte what serde writes for it.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let TlsEvent {
            sni,
            version,
            client_alpns,
            server_alpns,
            ja3,
            ja3s,
            ja4,
            cipher_suite,
            subject,
            issuerdn,
            serial,
            fingerprint,
            notbefore,
            notafter,
            subjectaltname,
            chain,
            chain_sha256,
            client_handshake,
            client_chain,
            client_chain_sha256,
            second_client_hello,
            overlap_client_hello,
            overlap_chain,
            overlap_chain_sha256,
            held: _,
        } = self;
        let mut o = Obj::open(out);
        strings!(o, sni);
        o.str("version", version);
        if !client_alpns.is_empty() {
            o.strs("client_alpns", client_alpns.iter());
        }
        if let Some(v) = server_alpns {
            o.strs("server_alpns", v.iter());
        }
        for (k, v) in [("ja3", ja3), ("ja3s", ja3s)] {
            if let Some(j) = v {
                o.key(k);
                let mut p = Obj::open(o.out);
                p.str("hash", &j.hash);
                p.str("string", &j.string);
                p.close();
            }
        }
        strings!(o, ja4);
        cipher_suite.map(|v| o.num("cipher_suite", v));
        strings!(
            o,
            subject,
            issuerdn,
            serial,
            fingerprint,
            notbefore,
            notafter
        );
        if let Some(v) = subjectaltname {
            o.strs("subjectaltname", v.iter());
        }
        o.certs(["chain", "chain_sha256"], chain, chain_sha256);
        objects!(o, client_handshake);
        o.certs(
            ["client_chain", "client_chain_sha256"],
            client_chain,
            client_chain_sha256,
        );
        objects!(o, second_client_hello, overlap_client_hello);
        o.certs(
            ["overlap_chain", "overlap_chain_sha256"],
            overlap_chain,
            overlap_chain_sha256,
        );
        o.close();
        Ok(())
    }
}

impl FlowEvent {
    fn write_json(&self, out: &mut Vec<u8>) {
        let FlowEvent {
            pkts_toserver,
            pkts_toclient,
            bytes_toserver,
            bytes_toclient,
            start,
            end,
            age,
            state,
            reason,
            alerted,
        } = self;
        let mut o = Obj::open(out);
        o.num("pkts_toserver", *pkts_toserver);
        o.num("pkts_toclient", *pkts_toclient);
        o.num("bytes_toserver", *bytes_toserver);
        o.num("bytes_toclient", *bytes_toclient);
        o.time("start", *start);
        o.time("end", *end);
        o.num("age", *age);
        o.str("state", state);
        o.str("reason", reason);
        o.bool("alerted", *alerted);
        o.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Proto;

    /// What `write` makes of `v` is byte for byte what serde makes of it.
    fn same_as_serde<T: serde::Serialize>(
        v: &T,
        write: impl Fn(&T, &mut Vec<u8>) -> serde_json::Result<()>,
    ) {
        let mut hand = Vec::new();
        write(v, &mut hand).expect("writes");
        let serde = serde_json::to_vec(v).expect("serialises");
        assert_eq!(
            String::from_utf8_lossy(&hand),
            String::from_utf8_lossy(&serde)
        );
    }

    fn same(e: &Event<'_>) {
        same_as_serde(e, Event::write_json);
    }

    /// IPv4 addresses written in place read as `Ipv4Addr` displays them,
    /// for octets of one, two and three digits in every position.
    #[test]
    fn ipv4_addresses_as_displayed() {
        let octets = [0u8, 1, 9, 10, 42, 99, 100, 109, 110, 199, 200, 255];
        for a in octets {
            for b in octets {
                for (c, d) in [(a, b), (b, a), (255, a), (b, 0)] {
                    let ip = IpAddr::from([a, b, c, d]);
                    let mut out = Vec::new();
                    let mut o = Obj::open(&mut out);
                    o.ip("ip", ip);
                    o.close();
                    assert_eq!(
                        String::from_utf8_lossy(&out),
                        format!("{{\"ip\":\"{ip}\"}}")
                    );
                }
            }
        }
    }

    /// Byte for byte what serde writes: every header field set, strings that
    /// need escaping and some that do not, IPv4 and IPv6, an object through
    /// serde, the flow object; and the smallest event.
    #[test]
    fn writes_what_serde_writes() {
        let vlans = [100u16, 200];
        let flow = FlowEvent {
            pkts_toserver: 3,
            pkts_toclient: u64::MAX,
            bytes_toserver: 0,
            bytes_toclient: 1460,
            start: Timestamp(1_700_000_000_123_456_789),
            end: Timestamp(-5_000_000_000),
            age: -3,
            state: "closed",
            reason: "timeout",
            alerted: true,
        };
        let e = Event {
            timestamp: Timestamp(1_700_000_000_000_001_000),
            flow_id: Some(u64::MAX),
            sensor: Some("span \"east\"\\1\u{1}\u{7f}é"),
            pcap_file: Some("caps/ü.pcap"),
            pcap_frame: Some(7),
            event_type: "flow",
            src_ip: Some("10.200.0.255".parse().expect("ip")),
            src_port: Some(0),
            dest_ip: Some("2001:db8::1".parse().expect("ip")),
            dest_port: Some(65535),
            proto: Some(Proto(6)),
            vlan: &vlans,
            community_id: Some("1:abc+/="),
            app_proto: Some("tls"),
            anomaly: Some("stream.reassembly_overlap_different_data"),
            flow: Some(flow),
            ..Default::default()
        };
        same(&e);
        // an object through serde, between header and flow
        let raw =
            serde_json::value::RawValue::from_string("{\"a\":[1,\"x\"]}".into()).expect("raw JSON");
        same(&Event {
            certificate: Some(&raw),
            ..e
        });
        for a in [
            "0.0.0.0",
            "1.22.103.9",
            "255.255.255.255",
            "::",
            "::ffff:1.2.3.4",
        ] {
            same(&Event {
                src_ip: Some(a.parse().expect("ip")),
                ..Default::default()
            });
        }
        same(&Event {
            proto: Some(Proto(200)),
            ..Default::default()
        });
        same(&Event::default());
    }

    /// The `tls` object byte for byte as serde writes it: every member set
    /// (strings that need escaping, certificates whole and by hash, the
    /// objects still written by serde), then by reference, then the least.
    #[test]
    fn writes_the_tls_object_as_serde_does() {
        use crate::analyzer::tls::hello::ClientHello;
        use crate::analyzer::tls::ja4::Transport as Ja4Transport;
        use crate::analyzer::tls::{summary, ClientHandshake};
        let cert = |n: &str| CertInfo {
            subject: format!("CN={n}, O=\"q\"\\"),
            issuerdn: "CN=ca\u{1}".into(),
            san: vec![n.into(), "b\u{7f}é".into()],
            sha256: format!("{n}56"),
            ..Default::default()
        };
        let (a, b, c) = (cert("a"), cert("b"), cert("c"));
        let ch = ClientHello {
            legacy_version: 0x0303,
            ciphers: smallvec::smallvec![0x1301, 0x0a0a],
            extensions: smallvec::smallvec![0, 16, 43],
            sni: Some("x.\"y\".example".into()),
            alpns: smallvec::smallvec!["h2".into(), "a\\b".into()],
            supported_versions: smallvec::smallvec![0x0304],
            groups: smallvec::smallvec![29],
            point_formats: smallvec::smallvec![0],
            sig_algs: smallvec::smallvec![0x0403],
            ..Default::default()
        };
        let sans = ["n1".to_string(), "n\"2".to_string()];
        let alpns = ["h2".to_string(), "\u{2}".to_string()];
        let ja3 = crate::analyzer::tls::ja3::ja3(&ch);
        let ja3s = crate::analyzer::tls::ja3::Ja3 {
            hash: "h".into(),
            string: "771,4866,\t".into(),
        };
        let full = TlsEvent {
            sni: Some("ngrok-\"free\".app\\"),
            version: "TLS 1.3",
            client_alpns: &alpns,
            server_alpns: Some(["h2\n"]),
            ja3: Some(&ja3),
            ja3s: Some(&ja3s),
            ja4: Some("t13d0910h2_f91f431d341e_6a7d638fc319"),
            cipher_suite: Some(u16::MAX),
            subject: Some("CN=é\u{0}"),
            issuerdn: Some("CN=i"),
            serial: Some("01:02"),
            fingerprint: Some("aa:bb"),
            notbefore: Some("2026-01-01T00:00:00"),
            notafter: Some("2027-01-01T00:00:00"),
            subjectaltname: Some(&sans),
            chain: vec![&a, &b],
            chain_sha256: vec!["h1", "h\"2"],
            client_handshake: Some(ClientHandshake::of(&ch)),
            client_chain: vec![&c],
            client_chain_sha256: vec!["h3"],
            second_client_hello: Some(summary(&ch, Ja4Transport::Tcp)),
            overlap_client_hello: Some(summary(&ch, Ja4Transport::Tcp)),
            overlap_chain: vec![&b],
            overlap_chain_sha256: vec!["h4"],
            held: None,
        };
        let check = |t: &TlsEvent<'_>| same_as_serde(t, TlsEvent::write_json);
        check(&full);
        let mut by_ref = TlsEvent {
            chain_sha256: Vec::new(),
            client_chain_sha256: Vec::new(),
            overlap_chain_sha256: Vec::new(),
            ..full
        };
        by_ref.by_reference();
        check(&by_ref);
        by_ref.inline();
        check(&by_ref);
        let empty = Default::default();
        check(&TlsEvent::of(&empty));
        // and inside an event, between the header and the objects after it
        same(&Event {
            tls: Some(by_ref),
            event_type: "tls",
            ..Default::default()
        });
    }

    /// The block-at-a-time test says what the byte-at-a-time one says, for
    /// every byte value at every place of strings of every length to 40
    /// (short, one block, blocks with an overlapping last one).
    #[test]
    fn plain_strings_are_found_as_bytewise() {
        let slow = |b: &[u8]| b.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\');
        for len in 0..40 {
            for at in 0..len {
                for v in 0..=255u8 {
                    // around it: letters, DEL, UTF-8 bytes, space, and a
                    // second special byte further on
                    for fill in [b'a', 0x7f, 0x80, 0xc3, 0xff, b' '] {
                        let mut b = vec![fill; len];
                        b[at] = v;
                        assert_eq!(plain(&b), slow(&b), "{b:?}");
                        if at + 1 < len {
                            b[len - 1] = b'"';
                            assert_eq!(plain(&b), slow(&b), "{b:?}");
                        }
                    }
                }
            }
        }
    }
}
