//! The event format (`[events]`): each distinct certificate logged once as a
//! `certificate` event and named by SHA-256 in `tls` events (again after the
//! re-log interval), alerts carrying their certificates whole, the inline
//! format on request, `client_handshake` on request, and type filters that
//! change nothing but what is written.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use common::spanwatch;
use serde_json::Value;

/// Every capture of `pcaps/` and `pcaps/lab/`, in name order.
fn captures() -> Vec<String> {
    let mut v = Vec::new();
    for dir in ["pcaps", "pcaps/lab"] {
        for e in std::fs::read_dir(common::workspace().join(dir)).expect("dir") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                v.push(p.display().to_string());
            }
        }
    }
    v.sort();
    v
}

fn tmp(name: &str) -> common::Scratch {
    common::Scratch::new(&format!("events-{name}"))
}

/// `spanwatch read` of `files` with the lab's site policy plus `events`
/// (an `[events]` table's lines) and `extra` arguments: the lines written.
fn read(dir: &Path, events: &str, extra: &[&str], files: &[String]) -> Vec<String> {
    let lab =
        std::fs::read_to_string(common::workspace().join("pcaps/lab/site.toml")).expect("lab site");
    let site = dir.join("site.toml");
    std::fs::write(&site, format!("{lab}\n[events]\n{events}\n")).expect("site");
    let out = dir.join("events.json");
    let (site, out_s) = (site.display().to_string(), out.display().to_string());
    let mut args = vec!["read", "-q", "-c", &site, "-o", &out_s];
    args.extend(extra);
    args.extend(files.iter().map(String::as_str));
    let (code, _, err) = spanwatch(&args);
    assert_eq!(code, 0, "{err}");
    std::fs::read_to_string(&out)
        .expect("events")
        .lines()
        .map(String::from)
        .collect()
}

fn parse(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn of<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event_type"] == t).collect()
}

fn hashes(t: &Value) -> Vec<String> {
    [
        "chain_sha256",
        "client_chain_sha256",
        "overlap_chain_sha256",
    ]
    .iter()
    .flat_map(|k| t[k].as_array().cloned().unwrap_or_default())
    .filter_map(|h| h.as_str().map(String::from))
    .collect()
}

#[test]
fn certificates_are_logged_once_and_named_by_hash() {
    let dir = tmp("once");
    let all = captures();
    let events = parse(&read(&dir, "", &[], &all));
    let certs = of(&events, "certificate");
    let tls = of(&events, "tls");
    assert!(certs.len() >= 10, "{} certificate events", certs.len());
    // each certificate once a day at most
    let mut last: HashMap<&str, &str> = HashMap::new();
    for c in &certs {
        let h = c["certificate"]["sha256"].as_str().expect("sha256");
        let t = c["timestamp"].as_str().expect("time");
        if let Some(prev) = last.insert(h, t) {
            assert!(
                t[..10] != prev[..10],
                "{h} logged twice on one day: {prev}, {t}"
            );
        }
        assert!(c["flow_id"].is_u64() && c["certificate"]["subject"].is_string());
    }
    // every hash a tls event names was logged before it; none carries a chain
    let mut logged = HashSet::new();
    let mut named = HashSet::new();
    for e in &events {
        if e["event_type"] == "certificate" {
            logged.insert(
                e["certificate"]["sha256"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
        }
        if e["event_type"] == "tls" {
            for h in hashes(&e["tls"]) {
                assert!(logged.contains(&h), "{h} named before it was logged");
                named.insert(h);
            }
            assert!(e["tls"]["chain"].is_null() && e["tls"]["subjectaltname"].is_null());
            assert!(e["tls"]["client_handshake"].is_null());
        }
    }
    assert_eq!(
        named, logged,
        "every certificate logged is named by some tls event"
    );
    assert!(tls.iter().any(|t| !hashes(&t["tls"]).is_empty()));
    // alerts stand alone: the certificates they rest on, whole
    let with_certs: Vec<&Value> = of(&events, "alert")
        .into_iter()
        .filter(|a| a["tls"]["subject"].is_string())
        .collect();
    assert!(!with_certs.is_empty());
    for a in with_certs {
        assert!(
            a["tls"]["chain"].as_array().is_some_and(|c| !c.is_empty()),
            "{a}"
        );
        assert!(a["tls"]["chain_sha256"].is_null());
    }
}

#[test]
fn the_inline_format_is_the_compact_one_resolved() {
    let dir = tmp("inline");
    let all = captures();
    let compact = parse(&read(&dir, "", &[], &all));
    let inline = parse(&read(&dir, "certificates = \"inline\"", &[], &all));
    assert!(of(&inline, "certificate").is_empty());
    // the same events but the certificate ones, each tls event with its
    // chain where the compact one names it
    let resolved: Vec<Value> = common::resolve_chains(&compact)
        .into_iter()
        .filter(|e| e["event_type"] != "certificate")
        .collect();
    assert_eq!(resolved.len(), inline.len());
    for (r, i) in resolved.iter().zip(&inline) {
        assert_eq!(r, i);
    }
}

/// A copy of a classic pcap file with every packet `secs` later.
fn later(src: &Path, secs: u32, dst: &Path) {
    let mut b = std::fs::read(src).expect("capture");
    let little = b[..4] == [0xd4, 0xc3, 0xb2, 0xa1] || b[..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let u32_at = |b: &[u8], i: usize| {
        let x = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if little {
            u32::from_le_bytes(x)
        } else {
            u32::from_be_bytes(x)
        }
    };
    let mut i = 24;
    while i + 16 <= b.len() {
        let ts = u32_at(&b, i) + secs;
        let bytes = if little {
            ts.to_le_bytes()
        } else {
            ts.to_be_bytes()
        };
        b[i..i + 4].copy_from_slice(&bytes);
        i += 16 + u32_at(&b, i + 8) as usize;
    }
    std::fs::write(dst, b).expect("write");
}

#[test]
fn a_certificate_seen_again_after_the_relog_interval_is_logged_again() {
    let dir = tmp("relog");
    let src = common::workspace().join("pcaps/tls12-chain.pcap");
    let (soon, late) = (dir.join("soon.pcap"), dir.join("late.pcap"));
    later(&src, 30, &soon);
    later(&src, 3 * 3600, &late);
    let files: Vec<String> = [src.as_path(), &soon, &late]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let count = |events: &str| {
        let e = parse(&read(&dir, events, &[], &files));
        (of(&e, "tls").len(), of(&e, "certificate").len())
    };
    // three handshakes showing one chain of three certificates
    assert_eq!(count(""), (3, 3), "once a day");
    assert_eq!(
        count("certificate_relog = \"1h\""),
        (3, 6),
        "again 3 h later"
    );
    assert_eq!(count("certificate_relog = \"10s\""), (3, 9), "every time");
}

#[test]
fn client_handshake_only_when_asked() {
    let dir = tmp("handshake");
    let files: Vec<String> = [
        "pcaps/tls12-chain.pcap",
        "pcaps/lab/lab-cloudflared-quic.pcap",
    ]
    .iter()
    .map(|f| common::workspace().join(f).display().to_string())
    .collect();
    let without = parse(&read(&dir, "", &[], &files));
    let with = parse(&read(&dir, "client_handshake = true", &[], &files));
    for t in ["tls", "quic"] {
        assert!(!of(&without, t).is_empty());
        assert!(of(&without, t)
            .iter()
            .all(|e| e[t]["client_handshake"].is_null()));
        assert!(of(&with, t)
            .iter()
            .all(|e| e[t]["client_handshake"]["ciphers"].is_array()));
    }
}

/// What a filter keeps is exactly those lines of the unfiltered run.
#[test]
fn type_filters_write_exactly_the_lines_of_those_types() {
    let dir = tmp("filters");
    let all = captures();
    let everything = read(&dir, "", &[], &all);
    for types in ["alert", "certificate", "tls", "alert,flow", "host_activity"] {
        let picked: Vec<&String> = everything
            .iter()
            .filter(|l| {
                types
                    .split(',')
                    .any(|t| l.contains(&format!("\"event_type\":\"{t}\"")))
            })
            .collect();
        let filtered = read(&dir, "", &["--event-types", types], &all);
        assert!(!filtered.is_empty(), "{types}");
        assert_eq!(filtered.iter().collect::<Vec<_>>(), picked, "{types}");
    }
}
