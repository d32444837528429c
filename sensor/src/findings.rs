//! Findings: what a run found, one row per tool and host, for people to read
//! (the table at the end of `read`).
//!
//! A finding joins the host activity ledger's entry (segment, first and last
//! seen, flows) with what the alerts about it said (worst severity, highest
//! confidence, the distinct evidence: endpoint names, certificate issuers …).
//! Strings from the traffic are escaped before they reach a terminal.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::analyzer::facts::{Fact, Shape};
use crate::config::SegmentKind;
use crate::detect::rules::Confidence;
use crate::detect::{Activity, AlertOut};
use crate::time::Timestamp;

/// Distinct evidence values kept per finding.
const MAX_EVIDENCE: usize = 16;
/// (host, tool) pairs whose alerts are summed up at most.
pub const MAX_FINDINGS: usize = 10_000;

/// What the alerts about one tool on one host said.
#[derive(Debug, Clone)]
pub struct Alerted {
    pub severity: u8,
    pub confidence: Confidence,
    pub alerts: u64,
    /// Distinct evidence values, first seen first (at most 16).
    pub evidence: Vec<String>,
    /// Distinct values beyond those kept.
    pub more: u64,
}

/// The alerts of a run, by host and tool (bounded).
#[derive(Debug, Default)]
pub struct Alerts {
    map: HashMap<(IpAddr, String), Alerted, ahash::RandomState>,
    /// Pairs not kept because the map was full.
    pub dropped: u64,
}

impl Alerts {
    pub fn add(&mut self, a: &AlertOut) {
        let evidence = a.evidence.iter().map(|e| (e.fact, e.value.as_str()));
        self.add_parts(a.host, &a.tool, a.severity, a.confidence, evidence);
    }

    /// An alert as its parts: (fact, value) evidence pairs.
    pub fn add_parts<'a>(
        &mut self,
        host: IpAddr,
        tool: &str,
        severity: u8,
        confidence: Confidence,
        evidence: impl Iterator<Item = (&'a str, &'a str)>,
    ) {
        let key = (host, tool.to_string());
        if !self.map.contains_key(&key) && self.map.len() >= MAX_FINDINGS {
            self.dropped += 1;
            return;
        }
        let e = self.map.entry(key).or_insert(Alerted {
            severity,
            confidence,
            alerts: 0,
            evidence: Vec::new(),
            more: 0,
        });
        e.severity = e.severity.min(severity);
        e.confidence = e.confidence.max(confidence);
        e.alerts += 1;
        // what a person asks about: names and texts (endpoints, issuers,
        // pages), not fingerprints or certificate profiles
        let readable = |fact: &str| {
            Fact::by_name(fact).is_some_and(|f| {
                // a proxy's legs are told in words (`client -> proxy -> …`)
                matches!(f.decl().shape, Shape::Name | Shape::Text) || f == Fact::TlsReoriginated
            })
        };
        for (_, value) in evidence.filter(|(f, _)| readable(f)) {
            if e.evidence.iter().any(|v| v == value) {
                continue;
            }
            if e.evidence.len() < MAX_EVIDENCE {
                e.evidence.push(value.to_string());
            } else {
                e.more += 1;
            }
        }
    }

    pub fn get(&self, host: IpAddr, tool: &str) -> Option<&Alerted> {
        self.map.get(&(host, tool.to_string()))
    }
}

/// One row: a tool on a host.
#[derive(Debug, Clone)]
pub struct Finding {
    pub activity: Activity,
    pub alerted: Option<Alerted>,
}

impl Finding {
    /// The ledger's entries joined with their alerts, production first, then
    /// by severity, then by first sighting.
    pub fn collect(activity: Vec<Activity>, alerts: &Alerts) -> Vec<Finding> {
        let mut v: Vec<Finding> = activity
            .into_iter()
            .map(|a| Finding {
                alerted: alerts.get(a.host, &a.tool).cloned(),
                activity: a,
            })
            .collect();
        v.sort_by_key(|f| {
            (
                f.activity.segment_kind != SegmentKind::Production,
                f.alerted.as_ref().map_or(u8::MAX, |a| a.severity),
                f.activity.first_seen,
                f.activity.host,
                f.activity.tool.clone(),
            )
        });
        v
    }
}

/// `s` with every control character (terminal escapes among them) shown as
/// `\x..` and cut to `max` characters: strings from the traffic are inert.
pub fn inert(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i >= max {
            out.push('…');
            break;
        }
        if c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}') {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

pub fn time(t: Timestamp) -> String {
    // `2026-11-23T11:43:53.779387+0000` → `2026-11-23 11:43:53`
    let mut buf = [0; 31];
    let s = t.rfc3339(&mut buf);
    s.get(..19).unwrap_or(s).replacen('T', " ", 1)
}

pub fn duration(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The cells of one row.
fn cells(f: &Finding) -> [String; 10] {
    let a = &f.activity;
    let (sev, conf, evidence) = match &f.alerted {
        Some(x) => {
            let mut ev: Vec<String> = x.evidence.iter().take(3).map(|e| inert(e, 48)).collect();
            let rest = x.evidence.len().saturating_sub(3) as u64 + x.more;
            if rest > 0 {
                ev.push(format!("(+{rest})"));
            }
            if ev.is_empty() {
                // no name or text: say what kind of evidence it was
                let kinds: Vec<&str> = a.evidence.iter().map(String::as_str).collect();
                ev.push(format!("({})", kinds.join(", ")));
            }
            (
                x.severity.to_string(),
                format!("{:?}", x.confidence).to_lowercase(),
                ev.join(", "),
            )
        }
        None if a.sanctioned_flows > 0 && !a.unsanctioned => {
            ("-".into(), "-".into(), "sanctioned".into())
        }
        None => ("-".into(), "-".into(), "(no alert)".into()),
    };
    let segment = match &a.segment {
        Some(n) => format!("{} ({})", inert(n, 24), a.segment_kind.as_str()),
        None => a.segment_kind.as_str().to_string(),
    };
    [
        sev,
        segment,
        inert(&a.tool, 20),
        a.host.to_string(),
        conf,
        time(a.first_seen),
        time(a.last_seen),
        duration(a.active_seconds),
        a.flows.to_string(),
        evidence,
    ]
}

const HEAD: [&str; 10] = [
    "SEV",
    "SEGMENT",
    "TOOL",
    "HOST",
    "CONFIDENCE",
    "FIRST SEEN",
    "LAST SEEN",
    "ACTIVE",
    "FLOWS",
    "EVIDENCE",
];

/// The findings as an aligned table (empty when there are none); `color`
/// marks severity 1 red and 2 yellow (ANSI).
pub fn table(findings: &[Finding], color: bool) -> String {
    if findings.is_empty() {
        return String::new();
    }
    let rows: Vec<[String; 10]> = findings.iter().map(cells).collect();
    let mut width = HEAD.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ");
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(&HEAD.map(String::from)) + "\n";
    for (r, f) in rows.iter().zip(findings) {
        let text = line(r);
        let paint = match f.alerted.as_ref().map(|a| a.severity) {
            Some(1) if color => Some("\u{1b}[1;31m"),
            Some(2) if color => Some("\u{1b}[33m"),
            _ => None,
        };
        match paint {
            Some(p) => {
                let _ = writeln!(out, "{p}{text}\u{1b}[0m");
            }
            None => {
                let _ = writeln!(out, "{text}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Evidence;
    use std::collections::BTreeSet;

    fn activity(host: &str, tool: &str, kind: SegmentKind, first: i64) -> Activity {
        Activity {
            host: host.parse().expect("ip"),
            tool: tool.into(),
            first_seen: Timestamp(first * 1_000_000_000),
            last_seen: Timestamp((first + 4000) * 1_000_000_000),
            active_seconds: 4000,
            flows: 3,
            bytes: 0,
            sanctioned_flows: 0,
            categories: BTreeSet::new(),
            evidence: BTreeSet::new(),
            segment: Some("prod-core".into()),
            segment_kind: kind,
            strong: true,
            unsanctioned: true,
            max_active_reported: false,
            sightings: Vec::new(),
        }
    }

    fn alert(host: &str, tool: &str, sev: u8, values: &[&str]) -> AlertOut {
        AlertOut {
            id: 1,
            rev: 1,
            name: "n".into(),
            tool: tool.into(),
            category: "tunnel-endpoint".into(),
            confidence: Confidence::High,
            references: Vec::new(),
            evidence: values
                .iter()
                .map(|v| Evidence {
                    fact: "sni",
                    value: v.to_string(),
                    pattern: "*".into(),
                    key: None,
                })
                .collect(),
            also_matched: Vec::new(),
            host: host.parse().expect("ip"),
            severity: sev,
            segment: None,
            segment_kind: SegmentKind::Production,
            peer: None,
        }
    }

    #[test]
    fn rows_production_first_with_distinct_evidence() {
        let mut alerts = Alerts::default();
        alerts.add(&alert("10.20.0.10", "mitmproxy", 4, &["mitmproxy"]));
        for v in [
            "a.ngrok.io",
            "b.ngrok.io",
            "a.ngrok.io",
            "c.ngrok.io",
            "d.ngrok.io",
        ] {
            alerts.add(&alert("10.1.0.10", "ngrok", 1, &[v]));
        }
        let f = Finding::collect(
            vec![
                activity("10.20.0.10", "mitmproxy", SegmentKind::Development, 1),
                activity("10.1.0.10", "ngrok", SegmentKind::Production, 2),
            ],
            &alerts,
        );
        let t = table(&f, false);
        let lines: Vec<&str> = t.lines().collect();
        let words = |l: &str| l.split_whitespace().take(5).collect::<Vec<_>>().join(" ");
        assert_eq!(words(lines[0]), "SEV SEGMENT TOOL HOST CONFIDENCE", "{t}");
        assert_eq!(
            words(lines[1]),
            "1 prod-core (production) ngrok 10.1.0.10",
            "{t}"
        );
        assert!(
            lines[1].ends_with("a.ngrok.io, b.ngrok.io, c.ngrok.io, (+1)"),
            "{t}"
        );
        assert!(lines[1].contains("1h06m"), "{t}");
        assert!(
            lines[2].contains("mitmproxy") && lines[2].starts_with('4'),
            "{t}"
        );
        assert!(!t.contains('\u{1b}'));
        assert!(table(&f, true).contains("\u{1b}[1;31m"));
        assert_eq!(table(&[], false), "");
    }

    #[test]
    fn strings_from_the_traffic_are_inert() {
        assert_eq!(inert("a\u{1b}[2Jb\n", 80), "a\\x1b[2Jb\\x0a");
        assert_eq!(inert("\u{202e}evil", 80), "\\x202eevil");
        assert_eq!(inert("abcdef", 3), "abc…");
        let mut alerts = Alerts::default();
        alerts.add(&alert(
            "10.1.0.10",
            "ngrok",
            1,
            &["x\u{1b}]0;pwned\u{7}.ngrok.io"],
        ));
        let f = Finding::collect(
            vec![activity("10.1.0.10", "ngrok", SegmentKind::Production, 2)],
            &alerts,
        );
        let t = table(&f, false);
        assert!(!t.contains('\u{1b}') && !t.contains('\u{7}'), "{t}");
        assert!(t.contains("x\\x1b]0;pwned\\x07.ngrok.io"), "{t}");
    }
}
