//! Detection on recordings of the real tools (`pcaps/lab/`, made by
//! `pcaps/lab/record.sh`), checked against `pcaps/lab/ground-truth.toml`.

mod common;

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::Value;
use spanwatch::config::SiteConfig;
use spanwatch::pipeline::engine::EngineConfig;
use spanwatch::pipeline::Inline;

#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Expected {
    tool: String,
    category: String,
    segment: String,
    host: String,
    severity: u8,
}

#[derive(Debug, Deserialize)]
struct Capture {
    file: String,
    what: String,
    alerts: Vec<Expected>,
    #[serde(default)]
    signatures: Vec<u32>,
    #[serde(default)]
    absent: Vec<u32>,
    #[serde(default)]
    sanctioned: bool,
    /// The QUIC handshakes the capture holds (compared when given).
    quic: Option<Vec<QuicHandshake>>,
    /// The proxies' leg pairs (`tls_legs` events), compared when given.
    legs: Option<Vec<LegPair>>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct LegPair {
    kind: String,
    mode: String,
    client: String,
    proxy: String,
    name: String,
}

fn leg_pairs(events: &[Value]) -> BTreeSet<LegPair> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    events
        .iter()
        .filter(|e| e["event_type"] == "tls_legs")
        .map(|e| {
            let l = &e["tls_legs"];
            LegPair {
                kind: s(&l["kind"]),
                mode: s(&l["mode"]),
                client: s(&l["client"]),
                proxy: s(&l["proxy"]),
                name: s(&l["name"]),
            }
        })
        .collect()
}

#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct QuicHandshake {
    client: String,
    port: u16,
    version: String,
    sni: String,
    alpn: Vec<String>,
}

fn quic_handshakes(events: &[Value]) -> BTreeSet<QuicHandshake> {
    events
        .iter()
        .filter(|e| e["event_type"] == "quic")
        .map(|e| QuicHandshake {
            client: e["src_ip"].as_str().unwrap_or("").into(),
            port: e["dest_port"].as_u64().unwrap_or(0) as u16,
            version: e["quic"]["version"].as_str().unwrap_or("").into(),
            sni: e["quic"]["sni"].as_str().unwrap_or("").into(),
            alpn: e["quic"]["client_alpns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(String::from))
                .collect(),
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct Truth {
    capture: Vec<Capture>,
}

fn lab() -> std::path::PathBuf {
    common::workspace().join("pcaps/lab")
}

fn site(extra: &str) -> SiteConfig {
    let text = std::fs::read_to_string(lab().join("site.toml")).expect("site.toml") + extra;
    SiteConfig::parse("pcaps/lab/site.toml", &text).expect("lab site config")
}

/// Reads captures in order through one engine and returns every event,
/// ledger report included.
fn read(files: &[&str], site: SiteConfig) -> Vec<Value> {
    let cfg = EngineConfig::for_site(site);
    let mut sensor = Inline::new(cfg, Default::default(), Vec::new());
    for f in files {
        let path = lab().join(f);
        sensor.set_origin(Some((*f).into()));
        let mut r = spanwatch::capture::FileReader::open(&path).expect("capture opens");
        while let Some(p) = r.next() {
            sensor.packet(p.expect("packet"));
        }
    }
    let out = sensor.finish().into_inner();
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

fn alerts(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["event_type"] == "alert")
        .collect()
}

#[test]
fn recordings_alert_exactly_as_the_ground_truth_says() {
    let truth: Truth =
        toml::from_str(&std::fs::read_to_string(lab().join("ground-truth.toml")).expect("truth"))
            .expect("ground truth parses");
    assert!(truth.capture.len() >= 8);
    let mut failures = Vec::new();
    for c in &truth.capture {
        let events = read(&[&c.file], site(""));
        let got: BTreeSet<Expected> = alerts(&events)
            .iter()
            .map(|e| {
                let a = &e["alert"];
                Expected {
                    tool: a["tool"].as_str().unwrap_or("").into(),
                    category: a["category"].as_str().unwrap_or("").into(),
                    segment: a["segment"].as_str().unwrap_or("").into(),
                    host: a["host"].as_str().unwrap_or("").into(),
                    severity: a["severity"].as_u64().unwrap_or(0) as u8,
                }
            })
            .collect();
        let want: BTreeSet<Expected> = c.alerts.iter().cloned().collect();
        if got != want {
            failures.push(format!(
                "{} ({}):\n  want {want:?}\n  got  {got:?}",
                c.file, c.what
            ));
        }
        let ids: BTreeSet<u64> = alerts(&events)
            .iter()
            .flat_map(|e| {
                let a = &e["alert"];
                std::iter::once(a["signature_id"].as_u64().unwrap_or(0)).chain(
                    a["also_matched"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_u64),
                )
            })
            .collect();
        for s in &c.signatures {
            if !ids.contains(&(*s as u64)) {
                failures.push(format!(
                    "{}: signature {s} did not fire (fired: {ids:?})",
                    c.file
                ));
            }
        }
        for s in &c.absent {
            if ids.contains(&(*s as u64)) {
                failures.push(format!("{}: signature {s} must not fire", c.file));
            }
        }
        if let Some(want) = &c.quic {
            let want: BTreeSet<QuicHandshake> = want.iter().cloned().collect();
            let got = quic_handshakes(&events);
            if got != want {
                failures.push(format!(
                    "{}: QUIC handshakes\n  want {want:?}\n  got  {got:?}",
                    c.file
                ));
            }
        }
        if let Some(want) = &c.legs {
            let want: BTreeSet<LegPair> = want.iter().cloned().collect();
            let got = leg_pairs(&events);
            if got != want {
                failures.push(format!(
                    "{}: proxy legs\n  want {want:?}\n  got  {got:?}",
                    c.file
                ));
            }
        }
        let sanctioned = events.iter().any(|e| e["sanctioned"].is_object());
        if sanctioned != c.sanctioned {
            failures.push(format!(
                "{}: sanctioned events {sanctioned}, expected {}",
                c.file, c.sanctioned
            ));
        }
        // every alert names its evidence
        for a in alerts(&events) {
            assert!(
                a["alert"]["evidence"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty()),
                "{a}"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn sanctioned_use_is_counted_in_the_ledger_without_alerting() {
    let events = read(&["lab-ngrok-sanctioned.pcap"], site(""));
    assert!(alerts(&events).is_empty());
    let s = events
        .iter()
        .find(|e| e["sanctioned"].is_object())
        .expect("a sanctioned event");
    assert_eq!(s["sanctioned"]["allowed_by"], "tunnels.example.com");
    assert_eq!(s["sanctioned"]["tools"], serde_json::json!(["ngrok"]));
    let end = events
        .iter()
        .find(|e| {
            e["event_type"] == "host_activity" && e["host_activity"]["reason"] == "end_of_run"
        })
        .expect("ledger report");
    assert_eq!(end["host_activity"]["host"], "10.20.0.10");
    assert!(end["host_activity"]["sanctioned_flows"]
        .as_u64()
        .is_some_and(|n| n > 0));
}

#[test]
fn ledger_reports_first_and_last_seen_and_max_active_from_capture_time() {
    // The 2.x agent retried for about 40 s of capture time on a production host.
    let events = read(&["lab-ngrok-v2-agent.pcap"], site("").with_ledger("20s"));
    let first = events
        .iter()
        .find(|e| {
            e["event_type"] == "host_activity" && e["host_activity"]["reason"] == "first_seen"
        })
        .expect("first_seen");
    let h = &first["host_activity"];
    assert_eq!(
        (h["host"].as_str(), h["tool"].as_str()),
        (Some("10.1.0.10"), Some("ngrok"))
    );
    assert_eq!(
        h["first_seen"], first["timestamp"],
        "first seen is the capture time of the sighting"
    );
    let long = alerts(&events)
        .into_iter()
        .find(|e| e["alert"]["signature_id"] == 9_000_001)
        .expect("max_active alert");
    assert_eq!(long["alert"]["severity"], 1, "production");
    assert_eq!(long["alert"]["category"], "long-running");
    let report = events
        .iter()
        .find(|e| {
            e["event_type"] == "host_activity" && e["host_activity"]["reason"] == "max_active"
        })
        .expect("max_active report");
    let a = &report["host_activity"];
    assert!(a["active_seconds"].as_i64().is_some_and(|s| s > 20), "{a}");
    assert!(a["last_seen"].as_str() > a["first_seen"].as_str());
    // only once, however long it goes on
    assert_eq!(
        alerts(&events)
            .iter()
            .filter(|e| e["alert"]["signature_id"] == 9_000_001)
            .count(),
        1
    );

    // the same in development: sightings are informational (4), but a tool
    // forgotten for longer than max_active is severity 2. The development host
    // runs the Rust agent, then (5 s later, next capture) the 2.x agent.
    let events = read(
        &["lab-ngrok-rust-agent.pcap", "lab-ngrok-sanctioned.pcap"],
        site("").with_ledger("5s"),
    );
    let sev: Vec<u64> = alerts(&events)
        .iter()
        .filter_map(|e| e["alert"]["severity"].as_u64())
        .collect();
    assert!(sev.contains(&4), "{sev:?}");
    let long = alerts(&events)
        .into_iter()
        .find(|e| e["alert"]["signature_id"] == 9_000_001)
        .expect("the Rust agent retried for longer than 1 s");
    assert_eq!(long["alert"]["severity"], 2, "development: 2, not 4");
    // sanctioned use alone never raises it, however long it goes on
    let events = read(&["lab-ngrok-sanctioned.pcap"], site("").with_ledger("1s"));
    assert!(alerts(&events).is_empty(), "{:?}", alerts(&events));
    // without max_active there is no such alert
    let events = read(&["lab-ngrok-v2-agent.pcap"], SiteConfig::default());
    assert!(alerts(&events)
        .iter()
        .all(|e| e["alert"]["signature_id"] != 9_000_001));
}

trait WithLedger {
    fn with_ledger(self, max_active: &str) -> Self;
}

impl WithLedger for SiteConfig {
    fn with_ledger(mut self, max_active: &str) -> Self {
        self.ledger.max_active =
            spanwatch::config::parse_duration(max_active).map(spanwatch::config::HumanDuration);
        self
    }
}

#[test]
fn unknown_segments_get_severity_two() {
    let events = read(&["lab-ngrok-endpoints.pcap"], SiteConfig::default());
    let a = alerts(&events);
    assert!(!a.is_empty());
    for e in a {
        assert_eq!(e["alert"]["severity"], 2);
        assert_eq!(e["alert"]["segment_kind"], "other");
        assert!(e["alert"]["segment"].is_null());
    }
}

#[test]
fn alerts_carry_the_protocol_object_and_flow_fields() {
    let events = read(&["lab-ngrok-rust-agent.pcap"], site(""));
    let tls_alert = alerts(&events)
        .into_iter()
        .find(|e| e["tls"].is_object())
        .expect("an alert from the TLS handshake");
    assert_eq!(tls_alert["tls"]["sni"], "connect.ngrok-agent.com");
    assert_eq!(tls_alert["tls"]["version"], "TLS 1.3");
    assert!(
        tls_alert["tls"]["chain"].is_null(),
        "TLS 1.3: the certificate is encrypted, the SNI speaks"
    );
    assert!(tls_alert["flow_id"].is_u64() && tls_alert["community_id"].is_string());
    assert_eq!(tls_alert["alert"]["confidence"], "high");
    let ev = &tls_alert["alert"]["evidence"][0];
    assert_eq!(
        (ev["fact"].as_str(), ev["pattern"].as_str()),
        (Some("sni"), Some("connect.ngrok-agent.com"))
    );
    // the flow event says it alerted
    let flow = events
        .iter()
        .find(|e| e["event_type"] == "flow" && e["flow_id"] == tls_alert["flow_id"])
        .expect("flow event");
    assert_eq!(flow["flow"]["alerted"], true);
}

#[test]
fn alerts_from_quic_carry_the_quic_object_and_the_alpn_evidence() {
    let events = read(&["lab-cloudflared-quic.pcap"], site(""));
    let a = alerts(&events)
        .into_iter()
        .find(|e| e["quic"].is_object())
        .expect("an alert from the QUIC handshake");
    assert_eq!(a["app_proto"], "quic");
    assert_eq!(a["proto"], "UDP");
    assert_eq!(a["dest_port"], 7844);
    assert_eq!(a["quic"]["sni"], "quic.cftunnel.com");
    assert_eq!(a["quic"]["version"], "1");
    assert_eq!(a["quic"]["tls_version"], "TLS 1.3");
    assert!(a["quic"]["ja4"]
        .as_str()
        .is_some_and(|j| j.starts_with("q13d")));
    let facts: BTreeSet<(String, String)> = a["alert"]["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["fact"].as_str().unwrap_or("").into(),
                e["value"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert!(
        facts.contains(&("sni".into(), "quic.cftunnel.com".into())),
        "{facts:?}"
    );
    let ids: Vec<u64> = std::iter::once(&a["alert"]["signature_id"])
        .chain(a["alert"]["also_matched"].as_array().into_iter().flatten())
        .filter_map(Value::as_u64)
        .collect();
    assert!(ids.contains(&9400006), "ALPN argotunnel: {ids:?}");
}

#[test]
fn interceptors_run_on_purpose_are_sanctioned_not_alerted() {
    for entry in ["10.20.0.20", "10.20.0.0/24", "api.example.com"] {
        let text = std::fs::read_to_string(lab().join("site.toml"))
            .expect("site.toml")
            .replace(
                "[allow]\n",
                &format!("[allow]\ninterceptors = [\"{entry}\"]\n"),
            );
        let cfg = SiteConfig::parse("site.toml", &text).expect("config");
        let events = read(&["lab-nginx-reencrypt.pcap"], cfg);
        assert!(alerts(&events).is_empty(), "{entry}");
        let legs: Vec<&Value> = events
            .iter()
            .filter(|e| e["event_type"] == "tls_legs")
            .collect();
        assert_eq!(legs.len(), 1, "{entry}");
        assert_eq!(legs[0]["sanctioned"]["allowed_by"], entry);
    }
    // without the entry it alerts
    assert_eq!(
        alerts(&read(&["lab-nginx-reencrypt.pcap"], site(""))).len(),
        1
    );
}

#[test]
fn the_interceptor_alert_names_both_legs() {
    let events = read(&["lab-mitm-tls13-transparent.pcap"], site(""));
    let a = alerts(&events)
        .into_iter()
        .find(|e| e["alert"]["category"] == "interception-relay")
        .expect("interception-relay alert");
    assert_eq!(a["alert"]["host"], "10.1.0.20");
    assert_eq!(a["src_ip"], "10.1.0.20", "the proxy's own leg");
    let legs = &a["tls_legs"];
    assert_eq!(
        (legs["client"].as_str(), legs["mode"].as_str()),
        (Some("10.1.0.10"), Some("transparent"))
    );
    assert_ne!(legs["client_flow_id"], legs["proxy_flow_id"]);
    // the client's leg was answered nearby, the proxy's from the internet
    assert!(legs["client_rtt_ms"].as_f64() < Some(5.0), "{legs}");
    assert!(legs["proxy_rtt_ms"].as_f64() > Some(30.0), "{legs}");
    let ev: Vec<&str> = a["alert"]["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["value"].as_str())
        .collect();
    assert!(
        ev.contains(&"10.1.0.10 -> 10.1.0.20 -> 198.51.100.10 for www.example.com"),
        "{ev:?}"
    );
}

/// (host, tool, evidence values) of every alert: the sightings alerted.
fn sightings(events: &[Value]) -> BTreeSet<(String, String, Vec<String>)> {
    alerts(events)
        .iter()
        .map(|a| {
            let al = &a["alert"];
            let mut ev: Vec<String> = al["evidence"]
                .as_array()
                .expect("evidence")
                .iter()
                .filter(|e| e["fact"] != "shared_spki_names")
                .map(|e| format!("{}={}", e["fact"], e["value"]).to_ascii_lowercase())
                .collect();
            ev.sort();
            (
                al["host"].as_str().expect("host").to_string(),
                al["tool"].as_str().expect("tool").to_string(),
                ev,
            )
        })
        .collect()
}

/// With the default suppression, every distinct sighting (host, tool and
/// evidence: an endpoint name, a proxy's certificate …) in the recordings
/// still alerts at least once: suppression only holds back repeats. All
/// recordings are read as one stream, so one host's names follow each other.
#[test]
fn suppression_never_hides_a_new_sighting() {
    let files: Vec<String> = std::fs::read_dir(lab())
        .expect("lab")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".pcap"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    let default = read(&names, site(""));
    let every = read(&names, site("realert_after = \"0s\"\n"));
    let (seen, all) = (sightings(&default), sightings(&every));
    assert!(all.len() > 5, "{all:?}");
    assert_eq!(
        seen, all,
        "sightings that never alerted with suppression on"
    );
    assert!(
        alerts(&every).len() > alerts(&default).len(),
        "some repeats were held"
    );
}

/// The issue asks that every client connection through mitmproxy alert. By
/// default a second connection of the same client through the same proxy
/// for the same name is a repeat of that sighting (held, counted, in the
/// ledger); with `realert_after = "0s"` nothing is a repeat, and then every
/// re-originated connection alerts, each with its own legs.
#[test]
fn with_repeats_not_held_every_reoriginated_connection_alerts() {
    let truth: Truth =
        toml::from_str(&std::fs::read_to_string(lab().join("ground-truth.toml")).expect("truth"))
            .expect("ground truth parses");
    let cfg = site("realert_after = \"0s\"\n");
    let mut checked = 0;
    for c in truth.capture.iter().filter(|c| c.legs.is_some()) {
        let events = read(&[&c.file], cfg.clone());
        let connections: BTreeSet<String> = events
            .iter()
            .filter(|e| e["event_type"] == "tls_legs")
            .map(|e| &e["tls_legs"])
            .filter(|l| l["kind"] == "reoriginated" && !l["sanctioned"].is_object())
            .map(|l| l["client_flow_id"].to_string())
            .collect();
        let alerted: BTreeSet<String> = alerts(&events)
            .iter()
            .filter(|a| a["tls_legs"]["kind"] == "reoriginated")
            .map(|a| a["tls_legs"]["client_flow_id"].to_string())
            .collect();
        assert_eq!(alerted, connections, "{}: {}", c.file, c.what);
        checked += connections.len();
    }
    assert!(checked >= 5, "{checked} re-originated connections");
}
