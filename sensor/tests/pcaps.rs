//! Whole-pipeline tests on the project's own captures in `pcaps/` (made by
//! `tools/pcapgen` from real rustls handshakes; see `pcaps/README.md`).
//! One snapshot of the event stream per capture, plus targeted checks.

mod common;

use std::path::PathBuf;

use serde_json::Value;
use spanwatch::capture::LibpcapReader;
use spanwatch::pipeline::engine::EngineConfig;
use spanwatch::pipeline::Inline;

/// Every capture in `pcaps/` and `pcaps/lab/`.
fn captures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["pcaps", "pcaps/lab"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(common::workspace().join(d)).expect("capture directory exists")
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    v.sort();
    v
}

/// `tls12-chain.pcap` or `lab/lab-negatives.pcap`.
fn rel(path: &std::path::Path) -> String {
    path.strip_prefix(common::workspace().join("pcaps"))
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A capture of `pcaps/` read in-thread; `events` with each `tls` event's
/// certificates resolved from the `certificate` events (`lines` as written).
fn run(name: &str) -> common::Run {
    let path = common::workspace().join("pcaps").join(name);
    let mut r = common::run(&path, &format!("pcaps/{name}"));
    r.events = common::resolve_chains(&r.events);
    r
}

fn of_type<'a>(r: &'a common::Run, t: &str) -> Vec<&'a Value> {
    r.events.iter().filter(|e| e["event_type"] == t).collect()
}

#[test]
fn one_snapshot_per_capture() {
    let all = captures();
    assert!(all.len() >= 7, "captures missing: {all:?}");
    for path in all {
        let name = rel(&path);
        let r = run(&name);
        assert!(r.error.is_none(), "{name}: {:?}", r.error);
        insta::assert_snapshot!(name.replace('/', "__"), r.lines.join("\n"));
    }
}

/// The threaded pipeline writes exactly what the in-thread one writes, for
/// any number of workers, packets handed to them or files read by each
/// (`walk`): same lines, same order (see `pipeline`'s docs).
/// Each capture alone, then every lab recording read as one stream, so the
/// ledger, suppression and shared-key state see hosts whose flows are spread
/// over several workers.
#[test]
fn every_worker_count_gives_identical_output() {
    let lab_site = std::fs::read_to_string(common::workspace().join("pcaps/lab/site.toml"))
        .expect("lab site config");
    let site = spanwatch::config::SiteConfig::parse("pcaps/lab/site.toml", &lab_site)
        .expect("lab site config parses");
    let all = captures();
    let names: Vec<String> = all.iter().map(|p| rel(p)).collect();
    let singles = all
        .iter()
        .zip(&names)
        .map(|(p, n)| vec![(p.as_path(), n.as_str())]);
    let lab: Vec<(&std::path::Path, &str)> = all
        .iter()
        .zip(&names)
        .filter(|(_, n)| n.starts_with("lab/"))
        .map(|(p, n)| (p.as_path(), n.as_str()))
        .collect();
    assert!(lab.len() >= 8, "lab recordings missing");
    for files in singles.chain(std::iter::once(lab.clone())) {
        let what = format!("{:?}", files.iter().map(|f| f.1).collect::<Vec<_>>());
        // the flows open at the end are ended (and handed over) two by two
        let cfg = EngineConfig {
            finish_part: 2,
            ..EngineConfig::for_site(site.clone())
        };
        let inline = common::run_inline(&files, cfg.clone());
        assert!(!inline.lines.is_empty(), "{what}");
        for (workers, walk, defer) in [
            (1, false, true),
            (2, false, false),
            (4, false, true),
            (1, true, false),
            (1, true, true),
            (2, true, true),
            (3, true, false),
        ] {
            let how = (workers, walk, defer);
            let (threaded, shares) = common::run_workers(&files, cfg.clone(), how);
            assert_eq!(
                threaded.lines, inline.lines,
                "{what}: {workers} workers (walk: {walk}, the writer serialising flow events: \
                 {defer}) differ from the in-thread pipeline"
            );
            assert_eq!(threaded.error, inline.error, "{what}");
            assert_eq!(
                common::comparable(&threaded.counters),
                common::comparable(&inline.counters),
                "{what}"
            );
            assert_eq!(
                shares.iter().sum::<u64>(),
                inline.counters.packets,
                "{what}"
            );
            if files.len() > 1 && workers > 1 {
                // the combined stream really is spread over the workers
                assert!(
                    shares.iter().filter(|n| **n > 0).count() == workers,
                    "{what}: {shares:?}"
                );
            }
        }
    }
    let all_lab = common::run_inline(&lab, EngineConfig::for_site(site));
    assert!(
        all_lab.events.iter().any(|e| e["event_type"] == "alert"),
        "the combined lab stream raises alerts"
    );
}

#[test]
fn same_capture_twice_gives_identical_output() {
    for path in captures() {
        let name = rel(&path);
        assert_eq!(run(&name).lines, run(&name).lines, "{name}");
    }
}

#[test]
fn libpcap_reader_gives_the_same_events() {
    // multi-interface.pcapng mixes link types, which libpcap refuses.
    for path in captures()
        .into_iter()
        .filter(|p| !p.ends_with("multi-interface.pcapng"))
    {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string();
        let mut sensor = Inline::new(EngineConfig::default(), Default::default(), Vec::new());
        sensor.set_origin(Some("x".into()));
        let mut r = LibpcapReader::open(&path).expect("libpcap opens");
        while let Some(p) = r.next() {
            sensor.packet(p.expect("packet"));
        }
        let w = sensor.finish();
        let counters = w.counters();
        let libpcap = common::Run::of(w.into_inner(), counters, None);
        let native = common::run(&path, "x");
        assert_eq!(libpcap.lines, native.lines, "{name}");
    }
}

#[test]
fn tls12_chain_has_every_certificate_and_fingerprint() {
    let r = run("tls12-chain.pcap");
    let tls = of_type(&r, "tls");
    assert_eq!(tls.len(), 1);
    let t = &tls[0]["tls"];
    assert_eq!(t["sni"], "www.example.com");
    assert_eq!(t["version"], "TLS 1.2");
    assert_eq!(t["client_alpns"], serde_json::json!(["h2", "http/1.1"]));
    assert_eq!(t["server_alpns"], serde_json::json!(["h2"]));
    assert_eq!(t["chain"].as_array().map(Vec::len), Some(3));
    assert_eq!(t["subject"], "CN=www.example.com, O=Example Org");
    assert_eq!(t["issuerdn"], "CN=Example Org Issuing CA 1, O=Example Org");
    assert_eq!(
        t["subjectaltname"],
        serde_json::json!(["www.example.com", "example.com"])
    );
    assert_eq!(t["chain"][2]["ca"], true);
    assert_eq!(t["chain"][0]["notbefore"], "2026-01-01T00:00:00");
    assert!(
        t["ja4"].as_str().is_some_and(|j| j.starts_with("t12d")),
        "{}",
        t["ja4"]
    );
    assert_eq!(t["ja3"]["hash"].as_str().map(str::len), Some(32));
    assert!(t["ja3s"]["string"]
        .as_str()
        .is_some_and(|s| s.starts_with("771,")));
    // DNS before the connection: query and the answer with its CNAME chain
    let dns = of_type(&r, "dns");
    assert_eq!(dns.len(), 2);
    assert_eq!(dns[0]["dns"]["type"], "request");
    assert_eq!(dns[1]["dns"]["answers"][0]["rdata"], "edge.example.net");
    assert_eq!(dns[1]["dns"]["answers"][1]["rdata"], "198.51.100.20");
    assert_eq!(dns[1]["src_ip"], "192.0.2.53");
    // every flow ends with a flow event, closed by FIN
    let flows = of_type(&r, "flow");
    assert_eq!(flows.len(), 2);
    assert!(flows.iter().any(|f| f["flow"]["state"] == "closed"));
}

#[test]
fn tls13_over_vlan_and_ipv6_has_no_certificate() {
    let r = run("tls13-vlan-ipv6.pcap");
    let tls = of_type(&r, "tls");
    assert_eq!(tls.len(), 1);
    assert_eq!(tls[0]["vlan"], serde_json::json!([100]));
    assert_eq!(tls[0]["src_ip"], "2001:db8:1::10");
    assert_eq!(tls[0]["tls"]["version"], "TLS 1.3");
    assert!(
        tls[0]["tls"]["chain"].is_null(),
        "TLS 1.3 certificates are encrypted"
    );
    // sequence numbers wrap around inside this connection
    assert_eq!(r.counters.stream_gaps, 0);
}

#[test]
fn hello_and_chain_split_over_tiny_segments_and_reordering() {
    for name in ["tls12-tiny-mss.pcap", "tls12-reordered.pcap"] {
        let r = run(name);
        let tls = of_type(&r, "tls");
        assert_eq!(tls.len(), 1, "{name}");
        assert_eq!(
            tls[0]["tls"]["chain"].as_array().map(Vec::len),
            Some(3),
            "{name}"
        );
        assert!(tls[0]["tls"]["sni"]
            .as_str()
            .is_some_and(|s| s.ends_with(".example.com")));
        assert_eq!(r.counters.stream_gaps, 0, "{name}");
    }
}

#[test]
fn connect_tunnel_and_plain_http() {
    let r = run("http-connect.pcap");
    let http = of_type(&r, "http");
    assert_eq!(http.len(), 2);
    assert_eq!(http[0]["http"]["http_method"], "CONNECT");
    assert_eq!(http[0]["http"]["url"], "api.example.net:443");
    assert_eq!(http[0]["http"]["hostname"], "api.example.net");
    assert_eq!(http[0]["http"]["status"], 200);
    assert_eq!(http[1]["http"]["title"], "Intranet");
    assert_eq!(http[1]["http"]["server"], "nginx/1.24");
    // the TLS inside the tunnel is found by content, on the proxy port
    let tls = of_type(&r, "tls");
    assert_eq!(tls.len(), 1);
    assert_eq!(tls[0]["dest_port"], 8080);
    assert_eq!(tls[0]["tls"]["sni"], "api.example.net");
}

#[test]
fn pcapng_with_two_link_types() {
    let r = run("multi-interface.pcapng");
    assert_eq!(of_type(&r, "tls").len(), 1);
    assert_eq!(of_type(&r, "dns").len(), 4);
    assert_eq!(r.counters.decode_unknown_linktype, 0);
    // nanosecond resolution: microseconds survive
    assert!(r.events[0]["timestamp"]
        .as_str()
        .is_some_and(|t| t.starts_with("2026-11-01T10:00:00.")));
}

#[test]
fn fragmented_dns_answer_is_reassembled() {
    let r = run("ipv4-fragments.pcap");
    let dns = of_type(&r, "dns");
    assert_eq!(dns.len(), 2);
    assert_eq!(
        dns[1]["dns"]["answers"].as_array().map(Vec::len),
        Some(64),
        "answers are capped at 64"
    );
    assert_eq!(r.counters.fragments, 3);
    assert_eq!(r.counters.fragments_reassembled, 1);
}

#[test]
fn site_segments_are_attached_to_events() {
    let site = spanwatch::config::SiteConfig::parse(
        "t.toml",
        "[sensor]\nname = \"s1\"\n[[segment]]\nname = \"prod\"\nkind = \"production\"\ncidrs = [\"192.0.2.0/24\"]\n[[segment]]\nname = \"internet\"\nkind = \"other\"\ncidrs = [\"198.51.100.0/24\"]\n",
    )
    .expect("config");
    let cfg = EngineConfig {
        site: std::sync::Arc::new(site),
        ..Default::default()
    };
    let path = common::workspace().join("pcaps/tls12-chain.pcap");
    let r = common::run_with(&path, "x", cfg);
    let tls = of_type(&r, "tls");
    assert_eq!(tls[0]["sensor"], "s1");
    assert_eq!(
        tls[0]["src_segment"],
        serde_json::json!({"name": "prod", "kind": "production"})
    );
    assert_eq!(
        tls[0]["dest_segment"],
        serde_json::json!({"name": "internet", "kind": "other"})
    );
}

/// DNS away from its ports is found by content, on UDP and on TCP (with
/// its length prefix); datagrams and streams that are not DNS stay flows.
#[test]
fn dns_on_odd_ports_is_found_by_content() {
    let r = run("evasion-dns-odd-ports.pcap");
    let asked: Vec<(&str, u64)> = of_type(&r, "dns")
        .iter()
        .filter(|e| e["dns"]["type"] == "request")
        .map(|e| {
            (
                e["dns"]["queries"][0]["rrname"].as_str().expect("name"),
                e["dest_port"].as_u64().expect("port"),
            )
        })
        .collect();
    assert_eq!(
        asked,
        [("odd-port.ngrok-free.app", 5300), ("stream.ngrok.io", 8053)]
    );
    let alerted: Vec<&str> = of_type(&r, "alert")
        .iter()
        .map(|e| e["dns"]["queries"][0]["rrname"].as_str().expect("name"))
        .collect();
    assert_eq!(alerted, ["odd-port.ngrok-free.app", "stream.ngrok.io"]);
    // the RTP-like stream and the line of text are flows, nothing more
    for f in of_type(&r, "flow") {
        let dns = f["app_proto"] == "dns";
        let from = f["src_ip"].as_str().expect("ip");
        assert_eq!(dns, from == "10.1.0.10", "{f}");
    }
}

/// An IPv6 datagram whose fragmentable part starts with a Destination
/// Options header: the UDP header is found once the datagram is whole.
#[test]
fn extension_headers_after_an_ipv6_fragment_header() {
    let r = run("evasion-ipv6-fragment-options.pcap");
    let dns = of_type(&r, "dns");
    assert_eq!(dns.len(), 1, "{:?}", r.lines);
    assert_eq!(
        dns[0]["dns"]["queries"][0]["rrname"],
        "fragmented.ngrok-free.app"
    );
    assert_eq!(of_type(&r, "alert").len(), 1);
    assert_eq!(r.counters.fragments_reassembled, 1);
}

/// After a HelloRetryRequest the second ClientHello names another server:
/// its name reaches the signatures as the first one's does.
#[test]
fn every_client_hello_of_a_connection_speaks() {
    let r = run("evasion-second-client-hello.pcap");
    let tls = of_type(&r, "tls");
    assert_eq!(tls[0]["tls"]["sni"], "docs.example.org");
    assert_eq!(
        tls[0]["tls"]["second_client_hello"]["sni"],
        "a.ngrok-free.app"
    );
    let alerts = of_type(&r, "alert");
    assert_eq!(alerts.len(), 1, "{:?}", r.lines);
    assert_eq!(
        alerts[0]["alert"]["evidence"][0]["value"],
        "a.ngrok-free.app"
    );
    // a sanctioned first name does not cover the second
    let site =
        spanwatch::config::SiteConfig::parse("t.toml", "[allow]\nnames = [\"example.org\"]\n")
            .expect("config");
    let path = common::workspace().join("pcaps/evasion-second-client-hello.pcap");
    let r = common::run_with(&path, "x", EngineConfig::for_site(site));
    assert_eq!(of_type(&r, "alert").len(), 1);
}

/// QUIC Initials protected by rustls (not by the sensor's code): a hello in
/// pieces over two Initials sent out of order on an odd port, a Retry (v2),
/// two connections on one 5-tuple, junk before a draft-29 Initial.
#[test]
fn quic_hellos_are_read_in_every_shape() {
    let r = run("evasion-quic-shapes.pcap");
    let quic: Vec<(u64, &str, &str)> = of_type(&r, "quic")
        .iter()
        .map(|e| {
            (
                e["dest_port"].as_u64().unwrap_or(0),
                e["quic"]["version"].as_str().unwrap_or(""),
                e["quic"]["sni"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        quic,
        [
            (8443, "1", "a.ngrok-free.app"),
            (7844, "2", "quic.cftunnel.com"),
            (443, "1", "docs.example.org"),
            (443, "1", "demo.trycloudflare.com"),
            (443, "draft-29", "www.example.com"),
        ]
    );
    let q = of_type(&r, "quic");
    assert_eq!(q[1]["quic"]["retry"], true);
    assert_eq!(q[1]["quic"]["client_alpns"][0], "argotunnel");
    assert!(q.iter().all(|e| e["quic"]["tls_version"] == "TLS 1.3"));
    assert!(q.iter().all(|e| e["app_proto"] == "quic"));
    let mut alerted: Vec<&str> = of_type(&r, "alert")
        .iter()
        .filter_map(|e| e["quic"]["sni"].as_str())
        .collect();
    alerted.sort();
    assert_eq!(
        alerted,
        [
            "a.ngrok-free.app",
            "demo.trycloudflare.com",
            "quic.cftunnel.com"
        ]
    );
}

/// One packet dated far past the end of time (a pcapng timestamp of 2^63
/// microseconds, as a damaged capture has them) before a real handshake:
/// the clock follows the handshake's own time back, so its flows do not all
/// expire the moment they start.
#[test]
fn an_absurd_timestamp_does_not_leave_every_later_flow_idle() {
    let orig = std::fs::read(common::workspace().join("pcaps/tls12-chain.pcap")).expect("pcap");
    fn block(out: &mut Vec<u8>, ty: u32, body: &[u8]) {
        let len = (12 + body.len().div_ceil(4) * 4) as u32;
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        out.resize(out.len() + (4 - body.len() % 4) % 4, 0);
        out.extend_from_slice(&len.to_le_bytes());
    }
    fn epb(out: &mut Vec<u8>, ts_us: u64, data: &[u8]) {
        let mut b = 0u32.to_le_bytes().to_vec();
        b.extend_from_slice(&((ts_us >> 32) as u32).to_le_bytes());
        b.extend_from_slice(&(ts_us as u32).to_le_bytes());
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(data);
        block(out, 6, &b);
    }
    let mut ng = Vec::new();
    let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    block(&mut ng, 0x0A0D_0D0A, &shb);
    block(&mut ng, 1, &[1, 0, 0, 0, 0, 0, 4, 0]); // Ethernet, snaplen 256 KiB
    let mut at = 24;
    let mut first = true;
    while at + 16 <= orig.len() {
        let word = |o: usize| u32::from_le_bytes(orig[at + o..at + o + 4].try_into().expect("u32"));
        let (sec, usec, len) = (word(0) as u64, word(4) as u64, word(8) as usize);
        let data = &orig[at + 16..at + 16 + len];
        if first {
            epb(&mut ng, 1 << 63, data);
            first = false;
        }
        epb(&mut ng, sec * 1_000_000 + usec, data);
        at += 16 + len;
    }
    let dir = std::env::temp_dir().join(format!("sw-absurd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("absurd.pcapng");
    std::fs::write(&path, ng).expect("write");
    let mut r = common::run(&path, "absurd.pcapng");
    r.events = common::resolve_chains(&r.events);
    let plain = run("tls12-chain.pcap");
    let _ = std::fs::remove_dir_all(&dir);
    let chain = |r: &common::Run| {
        of_type(r, "tls")
            .iter()
            .map(|e| e["tls"]["chain"].as_array().map_or(0, Vec::len))
            .collect::<Vec<_>>()
    };
    assert_eq!(chain(&r), chain(&plain), "the handshake is read whole");
    assert_eq!(chain(&plain), [3]);
    // the same flows as without the absurd packet, each with all its
    // packets, and the absurd packet's own (ended when time went back)
    let flows = |r: &common::Run| {
        let mut v: Vec<(u64, u64)> = of_type(r, "flow")
            .iter()
            .map(|e| {
                let f = &e["flow"];
                let n = |k: &str| f[k].as_u64().unwrap_or(0);
                (
                    e["dest_port"].as_u64().unwrap_or(0),
                    n("pkts_toserver") + n("pkts_toclient"),
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut want = flows(&plain);
    want.push((53, 1));
    want.sort();
    assert_eq!(flows(&r), want);
}

/// Twenty throw-away requests first, an absolute-form target naming another
/// host than Host, a request pipelined after a body that holds a fake head:
/// every real head reaches the signatures; the flow's log stays bounded.
#[test]
fn every_http_head_reaches_the_signatures() {
    let r = run("evasion-http-heads.pcap");
    let hosts: Vec<&str> = of_type(&r, "alert")
        .iter()
        .map(|e| e["alert"]["evidence"][0]["value"].as_str().expect("value"))
        .collect();
    assert_eq!(hosts, ["abs.ngrok-free.app", "pipe.ngrok-free.app"]);
    assert_eq!(r.counters.http_transactions, 23);
    assert_eq!(
        of_type(&r, "http").len(),
        18,
        "16 logged, and the two that alert"
    );
    assert_eq!(r.counters.http_unlogged, 5);
}

/// A decoy copy of the ClientHello (harmless name, TTL 1) before the real
/// one at the same sequence number: the flow and its events are marked, and
/// the real version's name reaches the signatures.
#[test]
fn a_decoy_copy_of_the_client_hello_does_not_hide_the_real_one() {
    let r = run("evasion-decoy-overlap.pcap");
    let tls = of_type(&r, "tls");
    assert_eq!(tls[0]["tls"]["sni"], "docs.example.org");
    assert_eq!(
        tls[0]["tls"]["overlap_client_hello"]["sni"],
        "a.ngrok-free.app"
    );
    for e in r.events.iter().filter(|e| e["flow_id"].is_u64()) {
        assert_eq!(
            e["anomaly"], "stream.reassembly_overlap_different_data",
            "{e}"
        );
    }
    let alerts = of_type(&r, "alert");
    assert_eq!(alerts.len(), 1, "{:?}", r.lines);
    assert_eq!(
        alerts[0]["alert"]["evidence"][0]["value"],
        "a.ngrok-free.app"
    );
    assert_eq!(r.counters.stream_overlap_conflicts, 1);
}

/// The server's side: a decoy copy of the certificate flight names an
/// ordinary CA, the real one mitmproxy's; the signatures see both chains.
#[test]
fn a_decoy_copy_of_the_server_flight_does_not_hide_the_real_chain() {
    let r = run("evasion-decoy-server-overlap.pcap");
    let tls = of_type(&r, "tls");
    assert_eq!(tls[0]["tls"]["issuerdn"], "CN=examplecx, O=examplecx");
    assert_eq!(
        tls[0]["tls"]["overlap_chain"][0]["issuerdn"],
        "CN=mitmproxy, O=mitmproxy"
    );
    assert_eq!(
        tls[0]["anomaly"],
        "stream.reassembly_overlap_different_data"
    );
    let alerts = of_type(&r, "alert");
    assert_eq!(alerts.len(), 1, "{:?}", r.lines);
    assert_eq!(alerts[0]["alert"]["tool"], "mitmproxy");
    assert!(r.counters.stream_overlap_conflicts >= 1);
}

/// No event repeats a key in any object (a SIEM keeps one of the two, or
/// rejects the line): checked with a deserializer that sees every key.
#[test]
fn no_event_has_a_duplicate_key() {
    use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
    struct Unique;
    impl<'de> serde::de::DeserializeSeed<'de> for Unique {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(Unique)
        }
    }
    impl<'de> Visitor<'de> for Unique {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            let mut seen = std::collections::BTreeSet::new();
            while let Some(k) = m.next_key::<String>()? {
                if !seen.insert(k.clone()) {
                    return Err(serde::de::Error::custom(format!("duplicate key {k}")));
                }
                m.next_value_seed(Unique)?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
            while s.next_element_seed(Unique)?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
    let mut lines = 0;
    for path in captures() {
        let name = rel(&path);
        for line in run(&name).lines {
            let mut d = serde_json::Deserializer::from_str(&line);
            if let Err(e) = serde::de::DeserializeSeed::deserialize(Unique, &mut d) {
                panic!("{name}: {e}: {line}");
            }
            lines += 1;
        }
    }
    assert!(lines > 300, "{lines} lines checked");
}

/// Workers that read a file themselves stop where it is cut short, as the
/// in-thread pipeline does (the same events, the same error), and go on with
/// the next file.
#[test]
fn workers_walking_a_file_cut_short_stop_at_the_cut() {
    let all = captures();
    let biggest = all
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a pcap in pcaps/");
    let bytes = std::fs::read(biggest).expect("reads");
    // two thirds in, 7 bytes into whatever record is there
    let cut = std::env::temp_dir().join(format!("spanwatch-cut-{}.pcap", std::process::id()));
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3 + 7]).expect("writes");
    let next = common::workspace().join("pcaps/tls12-chain.pcap");
    let files = [
        (cut.as_path(), "cut.pcap"),
        (next.as_path(), "tls12-chain.pcap"),
    ];
    let inline = common::run_inline(&files, EngineConfig::default());
    std::fs::remove_file(&cut).ok();
    let error = inline.error.clone().expect("the cut is an error");
    assert!(error.contains("cut short"), "{error}");
    assert!(inline.lines.iter().any(|l| l.contains("tls12-chain.pcap")));
    for workers in [2, 3] {
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3 + 7]).expect("writes");
        let (walked, _) =
            common::run_workers(&files, EngineConfig::default(), (workers, true, true));
        std::fs::remove_file(&cut).ok();
        assert_eq!(walked.error, inline.error, "{workers} workers");
        assert_eq!(walked.lines, inline.lines, "{workers} workers");
        assert_eq!(
            common::comparable(&walked.counters),
            common::comparable(&inline.counters),
            "{workers} workers"
        );
    }
}
