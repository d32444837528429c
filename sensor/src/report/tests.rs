//! The report on hand-made event lines: hostile strings, bounds, formats.

use super::*;

fn alert(host: &str, tool: &str, sev: u8, value: &str, flow: u64, ts: &str) -> String {
    serde_json::json!({
        "timestamp": ts, "flow_id": flow, "pcap_file": "case/a.pcap", "pcap_frame": 7,
        "event_type": "alert", "community_id": "1:abc=", "src_ip": host, "dest_ip": "203.0.113.9",
        "alert": {"signature_id": 9100020, "signature": "ngrok endpoint", "category": "tunnel-endpoint",
            "tool": tool, "confidence": "high", "severity": sev, "host": host,
            "segment": "prod-core", "segment_kind": "production",
            "evidence": [{"fact": "sni", "value": value, "pattern": "ngrok-free.app"}]}
    })
    .to_string()
}

fn report(lines: &[String]) -> Report {
    let mut r = Report::default();
    r.read(lines.join("\n").as_bytes()).expect("read");
    r
}

const HOSTILE: &str = "<script>alert(1)</script>\u{1b}[2J\u{202e}.ngrok-free.app";

#[test]
fn alerts_alone_make_findings_with_their_span_and_flows() {
    let r = report(&[
        alert(
            "10.1.0.10",
            "ngrok",
            1,
            "a.ngrok-free.app",
            1,
            "2026-11-01T10:00:00.000000+0000",
        ),
        alert(
            "10.1.0.10",
            "ngrok",
            1,
            "b.ngrok-free.app",
            2,
            "2026-11-01T10:05:00.000000+0000",
        ),
        "not json".into(),
        String::new(),
    ]);
    let f = r.findings();
    assert_eq!(f.len(), 1);
    let row = Row::of(&f[0]);
    assert_eq!((row.tool, row.severity, row.flows), ("ngrok", Some(1), 2));
    assert_eq!(row.segment, Some("prod-core"));
    assert_eq!(row.last_seen.since(row.first_seen).0, 300_000_000_000);
    assert_eq!(row.evidence, ["a.ngrok-free.app", "b.ngrok-free.app"]);
    assert_eq!((r.run.events, r.run.unreadable, r.run.alerts), (2, 1, 2));
    let j: Value = serde_json::from_str(&json(&r, &f)).expect("json");
    for k in [
        "tool",
        "host",
        "segment",
        "severity",
        "confidence",
        "first_seen",
        "last_seen",
        "flows",
        "evidence",
    ] {
        assert!(!j["findings"][0][k].is_null(), "{k}");
    }
}

#[test]
fn host_activity_entries_give_the_ledger_view() {
    let ha = serde_json::json!({"timestamp": "2026-11-01T11:00:00.000000+0000", "event_type": "host_activity",
        "host_activity": {"reason": "end_of_run", "host": "10.1.0.10", "tool": "ngrok",
            "first_seen": "2026-11-01T09:00:00.000000+0000", "last_seen": "2026-11-01T11:00:00.000000+0000",
            "active_seconds": 7200, "flows": 40, "bytes": 1000, "sanctioned_flows": 0,
            "categories": ["tunnel-agent"], "evidence": ["sni"], "segment": "prod-core", "segment_kind": "production"}});
    let r = report(&[
        alert(
            "10.1.0.10",
            "ngrok",
            1,
            "a.ngrok-free.app",
            1,
            "2026-11-01T10:00:00.000000+0000",
        ),
        ha.to_string(),
    ]);
    let f = r.findings();
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].activity.flows, f[0].activity.active_seconds),
        (40, 7200)
    );
    assert_eq!(f[0].alerted.as_ref().map(|a| a.severity), Some(1));
}

#[test]
fn memory_is_bounded_whatever_the_input() {
    let mut lines = Vec::new();
    for i in 0..(MAX_SIGHTINGS as u64 * 3) {
        lines.push(alert(
            "10.1.0.10",
            "ngrok",
            2,
            &format!("n{i}.ngrok-free.app"),
            i,
            "2026-11-01T10:00:00Z",
        ));
    }
    let r = report(&lines);
    let (kept, more) = r.sightings("10.1.0.10".parse().expect("ip"), "ngrok");
    assert_eq!(
        (kept.len(), more),
        (MAX_SIGHTINGS, 2 * MAX_SIGHTINGS as u64)
    );
    let f = r.findings();
    let a = f[0].alerted.as_ref().expect("alerted");
    assert_eq!(a.evidence.len() as u64 + a.more, 3 * MAX_SIGHTINGS as u64);
    // a line longer than the bound is skipped, not held
    let mut big = b"{\"event_type\":\"alert\",\"x\":\"".to_vec();
    big.resize(MAX_LINE + 100, b'a');
    big.extend_from_slice(b"\"}\n");
    let mut r = Report::default();
    r.read(&big[..]).expect("read");
    assert_eq!((r.run.events, r.run.unreadable), (0, 1));
}

#[test]
fn hostile_strings_are_inert_in_every_format() {
    let r = report(&[alert(
        "10.1.0.10",
        "ngrok",
        1,
        HOSTILE,
        1,
        "2026-11-01T10:00:00Z",
    )]);
    let f = r.findings();
    let t = crate::findings::table(&f, false);
    assert!(!t.contains('\u{1b}') && !t.contains('\u{202e}'), "{t}");
    let m = markdown(&f);
    assert!(!m.contains("<script") && !m.contains('\u{1b}'), "{m}");
    let h = html::page(&r, &f);
    assert!(!h.contains("<script>alert"), "markup from the traffic");
    assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert_eq!(
        h.matches("<script").count(),
        1,
        "only the page's own script"
    );
    assert!(!h.contains('\u{1b}') && !h.contains('\u{202e}'));
    assert!(
        !h.contains("http://") || h.matches("http://").count() == 1,
        "only the SVG namespace"
    );
    assert!(!h.contains("https://"));
}

#[test]
fn the_page_has_a_row_per_finding_and_a_lane_per_host() {
    let r = report(&[
        alert(
            "10.1.0.10",
            "ngrok",
            1,
            "a.ngrok-free.app",
            1,
            "2026-11-01T10:00:00Z",
        ),
        alert(
            "10.1.0.10",
            "cloudflared",
            1,
            "x.trycloudflare.com",
            2,
            "2026-11-01T10:01:00Z",
        ),
        alert(
            "10.20.0.10",
            "ngrok",
            4,
            "b.ngrok-free.app",
            3,
            "2026-11-01T10:02:00Z",
        ),
    ]);
    let f = r.findings();
    let h = html::page(&r, &f);
    assert_eq!(h.matches("<tr class=\"finding").count(), 3);
    assert_eq!(h.matches("<g class=\"lane\"").count(), 2);
    assert_eq!(h.matches("<details class=\"evidence\"").count(), 3);
    assert!(h.contains("case/a.pcap") && h.contains("1:abc="));
}
