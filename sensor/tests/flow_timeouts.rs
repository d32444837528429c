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

/// A capture in `dir`: a lookup nobody answers (port 40001), then a
/// datagram that is not DNS to a port nothing follows (40002), then capture
/// time goes on to 30 s (40003; ticks every second).
fn lookup_capture(dir: &common::Scratch) -> std::path::PathBuf {
    let c = [10, 0, 0, 1];
    let (resolver, other) = ([10, 0, 0, 53], [203, 0, 113, 9]);
    let frames = [
        (0.0, udp(c, 40001, resolver, 53, &dns_query())),
        (0.5, udp(c, 40002, other, 9999, &[0x42; 64])),
        (30.0, udp(c, 40003, other, 9999, &[0x42; 64])),
    ];
    let path = dir.join("lookup.pcap");
    let at = |t: f64| 1_700_000_000_000_000 + (t * 1e6) as u64;
    let frames: Vec<(u64, &[u8])> = frames.iter().map(|(t, f)| (at(*t), &f[..])).collect();
    std::fs::write(&path, common::classic_pcap(&frames)).expect("write");
    path
}

#[test]
fn a_lookup_ends_ten_seconds_after_it_answered_or_not_other_udp_stays() {
    let dir = common::Scratch::new("flow-timeouts");
    let path = lookup_capture(&dir);
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

/// `[flow]` in the site configuration sets the timeouts and the table's
/// size; `--max-flows` wins over it.
#[test]
fn the_site_configuration_sets_timeouts_and_the_table_size() {
    let dir = common::Scratch::new("flow-config");
    let path = lookup_capture(&dir);
    let site = dir.join("site.toml");
    std::fs::write(&site, "[flow.timeouts]\nudp = \"5s\"\ndns = \"1m\"\n").expect("write");
    let (pcap, site_s) = (path.to_str().expect("utf-8"), site.to_str().expect("utf-8"));
    let (code, out, err) = common::spanwatch(&["read", "-q", "--config", site_s, pcap]);
    assert_eq!(code, 0, "{err}");
    let reasons = flow_reasons(&out);
    assert!(
        reasons.contains(&(40001, "shutdown".into())),
        "the lookup keeps 1 m: {reasons:?}"
    );
    assert!(
        reasons.contains(&(40002, "timeout".into())),
        "other UDP ends after 5 s: {reasons:?}"
    );

    // a table of one flow: each new flow pushes the last one out
    std::fs::write(&site, "[flow]\nmax_flows = 1\n").expect("write");
    let (code, out, err) =
        common::spanwatch(&["read", "-q", "--workers", "1", "--config", site_s, pcap]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        flow_reasons(&out)
            .iter()
            .filter(|(_, r)| r == "evicted")
            .count(),
        2,
        "{out}"
    );
    let args = [
        "read",
        "-q",
        "--workers",
        "1",
        "--max-flows",
        "10",
        "--config",
        site_s,
        pcap,
    ];
    let (code, out, err) = common::spanwatch(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        flow_reasons(&out).iter().all(|(_, r)| r != "evicted"),
        "the flag wins: {out}"
    );

    // a bad value names the file, its line and the key
    std::fs::write(&site, "[flow.timeouts]\nudp = \"0s\"\n").expect("write");
    let (code, _, err) = common::spanwatch(&["read", "-q", "--config", site_s, pcap]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("site.toml:2:1: flow.timeouts.udp: must be at least 1s"),
        "{err}"
    );
}
