//! `spanwatch report`: the findings of EVE event files, after the fact.
//!
//! Reads event lines one at a time (files or standard input, gzip too) and
//! keeps only what the findings need, bounded whatever the input's size:
//! the host activity ledger's latest entry per (host, tool), the alerts'
//! severity, confidence and distinct evidence, up to [`MAX_SIGHTINGS`]
//! alerts per finding for the evidence list, and the run's summary. Writes
//! the findings as the terminal table, JSON, Markdown, or a self-contained
//! HTML page ([`html`]).

pub mod html;

use std::collections::{BTreeSet, HashMap};
use std::io::BufRead;
use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use crate::config::SegmentKind;
use crate::detect::rules::Confidence;
use crate::detect::Activity;
use crate::findings::{Alerts, Finding, MAX_FINDINGS};
use crate::time::Timestamp;

/// Alerts kept per finding for its evidence list.
pub const MAX_SIGHTINGS: usize = 50;
/// Alerts kept for the evidence lists in all (about 15 MB).
pub const MAX_ALL_SIGHTINGS: usize = 50_000;
/// Distinct flow ids counted per finding that has no ledger entry (its
/// flows are counted from its alerts; beyond this, at least this many).
pub const MAX_FLOW_IDS: usize = 256;
/// Ledger entries (runs, periods) kept apart per finding.
pub const MAX_PERIODS: usize = 64;
/// Capture file names kept for the summary.
pub const MAX_CAPTURES: usize = 1_000;
/// Longest event line read (longer ones are counted and skipped).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// One alert, as the evidence list shows it (where to find it in Wireshark).
#[derive(Debug, Clone, Serialize)]
pub struct Sighting {
    pub timestamp: String,
    pub signature_id: u64,
    pub signature: String,
    pub category: String,
    /// `fact: value` of each piece of evidence.
    pub evidence: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcap_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcap_frame: Option<u64>,
    #[serde(skip)]
    pub at: Timestamp,
}

/// What the alerts of one finding add to the ledger's entry.
#[derive(Debug, Default)]
struct Trail {
    sightings: Vec<Sighting>,
    more: u64,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    flows: BTreeSet<u64>,
    segment: Option<(String, SegmentKind)>,
}

/// The run the events describe.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RunSummary {
    pub events: u64,
    /// Lines that were not an event (not JSON, or too long).
    pub unreadable: u64,
    pub captures: BTreeSet<String>,
    pub more_captures: u64,
    pub sensors: BTreeSet<String>,
    #[serde(skip)]
    pub first: Option<Timestamp>,
    #[serde(skip)]
    pub last: Option<Timestamp>,
    /// Packets: the largest count a `stats` event gave, or the sum over the
    /// `flow` events (whichever is larger).
    pub packets: u64,
    #[serde(skip)]
    stats_packets: u64,
    #[serde(skip)]
    flow_packets: u64,
    pub alerts: u64,
}

/// The findings of a stream of events, built line by line.
#[derive(Debug, Default)]
pub struct Report {
    /// Ledger entries by (host, tool): one per run or period (told apart by
    /// their first sighting), the latest version of each.
    activity: HashMap<(IpAddr, String), Vec<Activity>, ahash::RandomState>,
    alerts: Alerts,
    trails: HashMap<(IpAddr, String), Trail, ahash::RandomState>,
    sightings: usize,
    pub run: RunSummary,
}

impl Report {
    /// Reads every line of `r`.
    pub fn read(&mut self, mut r: impl BufRead) -> std::io::Result<()> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = read_line_bounded(&mut r, &mut line)?;
            if n == 0 {
                return Ok(());
            }
            if line.len() > MAX_LINE {
                self.run.unreadable += 1;
                continue;
            }
            match serde_json::from_slice::<Value>(&line) {
                Ok(v) => self.event(&v),
                Err(_) if line.iter().all(u8::is_ascii_whitespace) => {}
                Err(_) => self.run.unreadable += 1,
            }
        }
    }

    /// One event.
    pub fn event(&mut self, e: &Value) {
        self.run.events += 1;
        let at = e["timestamp"].as_str().and_then(Timestamp::parse_rfc3339);
        if let Some(t) = at {
            self.run.first = Some(self.run.first.map_or(t, |f| f.min(t)));
            self.run.last = Some(self.run.last.map_or(t, |l| l.max(t)));
        }
        if let Some(f) = e["pcap_file"].as_str() {
            if !self.run.captures.contains(f) {
                if self.run.captures.len() < MAX_CAPTURES {
                    self.run.captures.insert(f.to_string());
                } else {
                    self.run.more_captures += 1;
                }
            }
        }
        if let Some(s) = e["sensor"].as_str() {
            if self.run.sensors.len() < 64 && !self.run.sensors.contains(s) {
                self.run.sensors.insert(s.to_string());
            }
        }
        match e["event_type"].as_str() {
            Some("alert") => self.alert(e, at.unwrap_or_default()),
            Some("host_activity") => self.host_activity(&e["host_activity"]),
            Some("stats") => {
                let p = e["stats"]["packets"].as_u64().unwrap_or(0);
                self.run.stats_packets = self.run.stats_packets.max(p);
            }
            Some("flow") => {
                let f = &e["flow"];
                let n = |k: &str| f[k].as_u64().unwrap_or(0);
                self.run.flow_packets += n("pkts_toserver") + n("pkts_toclient");
            }
            _ => {}
        }
        self.run.packets = self.run.stats_packets.max(self.run.flow_packets);
    }

    fn alert(&mut self, e: &Value, at: Timestamp) {
        let a = &e["alert"];
        let (Some(host), Some(tool)) = (
            a["host"].as_str().and_then(|h| h.parse::<IpAddr>().ok()),
            a["tool"].as_str(),
        ) else {
            return;
        };
        self.run.alerts += 1;
        let severity = a["severity"].as_u64().unwrap_or(4).clamp(1, 4) as u8;
        let confidence = match a["confidence"].as_str() {
            Some("high") => Confidence::High,
            Some("medium") => Confidence::Medium,
            _ => Confidence::Low,
        };
        let ev: Vec<(&str, &str)> = a["evidence"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| Some((x["fact"].as_str()?, x["value"].as_str()?)))
            .collect();
        self.alerts
            .add_parts(host, tool, severity, confidence, ev.iter().copied());
        let key = (host, tool.to_string());
        if !self.trails.contains_key(&key) && self.trails.len() >= MAX_FINDINGS {
            return;
        }
        let t = self.trails.entry(key).or_default();
        t.first = Some(t.first.map_or(at, |f| f.min(at)));
        t.last = Some(t.last.map_or(at, |l| l.max(at)));
        if let Some(f) = e["flow_id"].as_u64() {
            if t.flows.len() < MAX_FLOW_IDS {
                t.flows.insert(f);
            }
        }
        if t.segment.is_none() {
            let kind = match a["segment_kind"].as_str() {
                Some("production") => SegmentKind::Production,
                Some("development") => SegmentKind::Development,
                _ => SegmentKind::Other,
            };
            t.segment = a["segment"].as_str().map(|s| (s.to_string(), kind));
            if t.segment.is_none() {
                t.segment = Some((String::new(), kind));
            }
        }
        if t.sightings.len() >= MAX_SIGHTINGS || self.sightings >= MAX_ALL_SIGHTINGS {
            t.more += 1;
            return;
        }
        self.sightings += 1;
        t.sightings.push(Sighting {
            timestamp: e["timestamp"].as_str().unwrap_or("").to_string(),
            signature_id: a["signature_id"].as_u64().unwrap_or(0),
            signature: a["signature"].as_str().unwrap_or("").to_string(),
            category: a["category"].as_str().unwrap_or("").to_string(),
            evidence: ev.iter().map(|(f, v)| format!("{f}: {v}")).collect(),
            flow_id: e["flow_id"].as_u64(),
            community_id: e["community_id"].as_str().map(String::from),
            pcap_file: e["pcap_file"].as_str().map(String::from),
            pcap_frame: e["pcap_frame"].as_u64(),
            at,
        });
    }

    fn host_activity(&mut self, h: &Value) {
        let Ok(a) = serde_json::from_value::<Activity>(h.clone()) else {
            return;
        };
        let key = (a.host, a.tool.clone());
        if !self.activity.contains_key(&key) && self.activity.len() >= MAX_FINDINGS {
            return;
        }
        let entries = self.activity.entry(key).or_default();
        let full = entries.len() >= MAX_PERIODS;
        match entries.iter().position(|e| e.first_seen == a.first_seen) {
            // the same ledger entry, later: it knows the most
            Some(i) => entries[i] = a,
            None if !full => entries.push(a),
            None => {
                if let Some(last) = entries.last_mut() {
                    merge(last, a);
                }
            }
        }
    }

    /// The ledger's view of each (host, tool): its entries summed.
    fn ledger(&self) -> Vec<Activity> {
        self.activity
            .values()
            .filter_map(|v| {
                let mut it = v.iter().cloned();
                let first = it.next()?;
                Some(it.fold(first, |mut acc, a| {
                    merge(&mut acc, a);
                    acc
                }))
            })
            .collect()
    }

    /// The findings: the ledger's entries joined with their alerts; a tool
    /// alerted on without a ledger entry (an events file of alerts only)
    /// gets one made from its alerts.
    pub fn findings(&self) -> Vec<Finding> {
        let mut activity = self.ledger();
        for ((host, tool), t) in &self.trails {
            if self.activity.contains_key(&(*host, tool.clone())) {
                continue;
            }
            let (first, last) = (t.first.unwrap_or_default(), t.last.unwrap_or_default());
            let (segment, kind) = t
                .segment
                .clone()
                .unwrap_or((String::new(), SegmentKind::Other));
            activity.push(Activity {
                host: *host,
                tool: tool.clone(),
                first_seen: first,
                last_seen: last,
                active_seconds: last.since(first).0 / 1_000_000_000,
                flows: t.flows.len() as u64,
                bytes: 0,
                sanctioned_flows: 0,
                categories: t.sightings.iter().map(|s| s.category.clone()).collect(),
                evidence: BTreeSet::new(),
                segment: (!segment.is_empty()).then_some(segment),
                segment_kind: kind,
                strong: true,
                unsanctioned: true,
                max_active_reported: false,
                sightings: Vec::new(),
            });
        }
        Finding::collect(activity, &self.alerts)
    }

    /// The alerts of a finding kept for its evidence list, and how many more.
    pub fn sightings(&self, host: IpAddr, tool: &str) -> (&[Sighting], u64) {
        self.trails
            .get(&(host, tool.to_string()))
            .map_or((&[][..], 0), |t| (&t.sightings[..], t.more))
    }
}

/// Two ledger entries of one (host, tool) (other runs or periods) as one.
fn merge(into: &mut Activity, a: Activity) {
    into.first_seen = into.first_seen.min(a.first_seen);
    into.last_seen = into.last_seen.max(a.last_seen);
    into.active_seconds += a.active_seconds;
    into.flows += a.flows;
    into.bytes += a.bytes;
    into.sanctioned_flows += a.sanctioned_flows;
    into.categories.extend(a.categories);
    into.evidence.extend(a.evidence);
}

/// Reads one line into `buf` (newline included), keeping at most
/// [`MAX_LINE`] + 1 bytes of it (the rest is read and dropped). Returns the
/// bytes read.
fn read_line_bounded(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(total);
        }
        let (used, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = (MAX_LINE + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..used.min(room)]);
        r.consume(used);
        total += used;
        if done {
            return Ok(total);
        }
    }
}

/// A finding as a JSON row.
#[derive(Debug, Serialize)]
pub struct Row<'a> {
    pub tool: &'a str,
    pub host: IpAddr,
    pub segment: Option<&'a str>,
    pub segment_kind: SegmentKind,
    pub severity: Option<u8>,
    pub confidence: Option<Confidence>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub active_seconds: i64,
    pub flows: u64,
    pub alerts: u64,
    pub categories: &'a BTreeSet<String>,
    pub evidence: Vec<&'a str>,
    pub more_evidence: u64,
}

impl<'a> Row<'a> {
    pub fn of(f: &'a Finding) -> Self {
        let a = &f.activity;
        let al = f.alerted.as_ref();
        Row {
            tool: &a.tool,
            host: a.host,
            segment: a.segment.as_deref(),
            segment_kind: a.segment_kind,
            severity: al.map(|x| x.severity),
            confidence: al.map(|x| x.confidence),
            first_seen: a.first_seen,
            last_seen: a.last_seen,
            active_seconds: a.active_seconds,
            flows: a.flows,
            alerts: al.map_or(0, |x| x.alerts),
            categories: &a.categories,
            evidence: al
                .map(|x| x.evidence.iter().map(String::as_str).collect())
                .unwrap_or_default(),
            more_evidence: al.map_or(0, |x| x.more),
        }
    }
}

/// The findings as JSON: the run's summary and one object per finding.
pub fn json(r: &Report, findings: &[Finding]) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        run: &'a RunSummary,
        first_seen: Option<Timestamp>,
        last_seen: Option<Timestamp>,
        findings: Vec<Row<'a>>,
    }
    let out = Out {
        run: &r.run,
        first_seen: r.run.first,
        last_seen: r.run.last,
        findings: findings.iter().map(Row::of).collect(),
    };
    serde_json::to_string_pretty(&out).unwrap_or_default() + "\n"
}

/// A Markdown table cell: inert, pipes and markup escaped.
fn md(s: &str) -> String {
    let mut out = String::new();
    for c in crate::findings::inert(s, 200).chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// The findings as a Markdown table (for a ticket).
pub fn markdown(findings: &[Finding]) -> String {
    let mut out = String::from(
        "| severity | segment | tool | host | confidence | first seen | last seen | flows | evidence |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for f in findings {
        let r = Row::of(f);
        let ev: Vec<String> = r.evidence.iter().take(3).map(|e| md(e)).collect();
        let more = r.evidence.len().saturating_sub(3) as u64 + r.more_evidence;
        let mut evidence = ev.join(", ");
        if more > 0 {
            evidence.push_str(&format!(" (+{more})"));
        }
        out.push_str(&format!(
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} |\n",
            r.severity.map_or("-".into(), |s| s.to_string()),
            md(r.segment.unwrap_or("unknown")),
            r.segment_kind.as_str(),
            md(r.tool),
            r.host,
            r.confidence.map_or("-", |c| match c {
                Confidence::High => "high",
                Confidence::Medium => "medium",
                Confidence::Low => "low",
            }),
            r.first_seen.rfc3339(&mut [0; 31]),
            r.last_seen.rfc3339(&mut [0; 31]),
            r.flows,
            evidence
        ));
    }
    out
}

#[cfg(test)]
mod tests;
