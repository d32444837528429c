//! Flow timeouts end to end: `spanwatch read` on a capture written here.

mod common;

use etherparse::PacketBuilder;
use serde_json::Value;

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .expect("frame");
    v
}

/// A query for `a.example.com` A.
fn dns_query() -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["a", "example", "com"] {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

fn flow_reasons(events: &str) -> Vec<(u64, String)> {
    events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event_type"] == "flow")
        .map(|e| {
            (
                e["src_port"].as_u64().unwrap_or(0),
                e["flow"]["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_lookup_ends_ten_seconds_after_it_answered_or_not_other_udp_stays() {
    let c = [10, 0, 0, 1];
    let (resolver, other) = ([10, 0, 0, 53], [203, 0, 113, 9]);
    let frames = [
        // a lookup nobody answers
        (0.0, udp(c, 40001, resolver, 53, &dns_query())),
        // a datagram that is not DNS, to a port nothing follows
        (0.5, udp(c, 40002, other, 9999, &[0x42; 64])),
        // capture time goes on: ticks every second up to 30 s
        (30.0, udp(c, 40003, other, 9999, &[0x42; 64])),
    ];
    let dir = common::Scratch::new("flow-timeouts");
    let path = dir.join("lookup.pcap");
    let at = |t: f64| 1_700_000_000_000_000 + (t * 1e6) as u64;
    let frames: Vec<(u64, &[u8])> = frames.iter().map(|(t, f)| (at(*t), &f[..])).collect();
    std::fs::write(&path, common::classic_pcap(&frames)).expect("write");
    let (code, out, err) = common::spanwatch(&["read", "-q", path.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    let reasons = flow_reasons(&out);
    assert!(
        reasons.contains(&(40001, "timeout".into())),
        "the lookup ends by its 10 s timeout, before the capture does: {reasons:?}"
    );
    assert!(
        reasons.contains(&(40002, "shutdown".into())),
        "other UDP keeps 120 s: {reasons:?}"
    );
    assert_eq!(reasons.len(), 3, "{out}");
}
