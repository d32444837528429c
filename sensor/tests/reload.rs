//! A reload of the site configuration in the middle of the input: flows keep
//! the segment they were placed in, new flows take the new configuration.

mod common;

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use spanwatch::config::SiteConfig;
use spanwatch::pipeline::engine::EngineConfig;
use spanwatch::pipeline::{Pipeline, Settings};

fn site(text: &str) -> Arc<SiteConfig> {
    Arc::new(SiteConfig::parse("site.toml", text).expect("valid site config"))
}

/// The lab's segments, in the given order, each name with `suffix`.
fn lab_site(order: [usize; 3], suffix: &str) -> Arc<SiteConfig> {
    let segs = [
        ("prod-core", "production", "10.1.0.0/16"),
        ("dev-lab", "development", "10.20.0.0/16"),
        ("internet", "other", "203.0.113.0/24"),
    ];
    let mut text = String::from("[sensor]\nname = \"lab-span\"\n");
    for i in order {
        let (n, k, c) = segs[i];
        text +=
            &format!("[[segment]]\nname = \"{n}{suffix}\"\nkind = \"{k}\"\ncidrs = [\"{c}\"]\n");
    }
    site(&text)
}

fn feed(p: &mut Pipeline<Vec<u8>>, path: &Path) {
    let mut r = spanwatch::capture::FileReader::open(path).expect("capture opens");
    p.set_origin(Some(path.display().to_string().into()));
    while let Some(Ok(pkt)) = r.next_range() {
        p.packet_in(r.data(), pkt);
    }
}

/// The segments of the flows that began in `file` (some protocol event of
/// theirs names it; a flow's own event names the file it ended in).
fn segment_names(events: &[Value], file: &str) -> Vec<(String, String)> {
    let began: Vec<&Value> = events
        .iter()
        .filter(|e| e["event_type"] != "flow" && e["pcap_file"].as_str() == Some(file))
        .map(|e| &e["flow_id"])
        .collect();
    events
        .iter()
        .filter(|e| e["event_type"] == "flow" && began.contains(&&e["flow_id"]))
        .map(|e| {
            let name = |k: &str| e[k]["name"].as_str().unwrap_or("-").to_string();
            (name("src_segment"), name("dest_segment"))
        })
        .collect()
}

#[test]
fn reload_that_reorders_segments_does_not_relabel_open_flows() {
    let lab = common::workspace().join("pcaps/lab");
    let (first, second) = (
        lab.join("lab-ngrok-v2-agent.pcap"),
        lab.join("lab-ngrok-rust-agent.pcap"),
    );
    for workers in [1, 3] {
        let before = lab_site([0, 1, 2], "");
        let settings = Settings {
            workers,
            engine: EngineConfig {
                site: Arc::clone(&before),
                ..EngineConfig::default()
            },
            types: Default::default(),
            live: false,
            latency: false,
            defer: None,
            decode_ahead: None,
        };
        let mut p = Pipeline::start(settings, Vec::new()).expect("threads start");
        feed(&mut p, &first);
        // Same networks, other order and other names: every flow of the first
        // capture is still open (no timeout has passed) and keeps its labels.
        let rules = spanwatch::load::bundled_rules();
        p.reload(lab_site([2, 1, 0], "-new"), rules);
        feed(&mut p, &second);
        p.end_flows();
        let out = p.close().into_inner();
        let events: Vec<Value> = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        let old = segment_names(&events, &first.display().to_string());
        let new = segment_names(&events, &second.display().to_string());
        assert!(!old.is_empty() && !new.is_empty(), "{workers} workers");
        assert!(
            old.iter().any(|(s, _)| s == "prod-core"),
            "{workers}: {old:?}"
        );
        for (s, d) in &old {
            assert!(
                !s.ends_with("-new") && !d.ends_with("-new"),
                "{workers}: {old:?}"
            );
        }
        assert!(
            new.iter().any(|(s, _)| s.ends_with("-new")),
            "{workers}: {new:?}"
        );
        for (s, d) in &new {
            assert!(s.ends_with("-new") || s == "-", "{workers}: {new:?}");
            assert!(d.ends_with("-new") || d == "-", "{workers}: {new:?}");
        }
    }
}
