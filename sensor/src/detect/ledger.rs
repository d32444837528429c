//! Host activity ledger: per (host, tool), when it was first and last seen
//! active, over how many flows and bytes, on what evidence. Capture time only.
//! Kept by the writer, which applies sightings in input order (see `writer`).
//! Bounded.

use std::collections::BTreeSet;
use std::net::IpAddr;

use dashmap::DashMap;
use serde::Serialize;

use crate::time::{Duration, Timestamp};

/// (host, tool) pairs tracked at most; past that, new pairs are counted, not kept.
pub const LEDGER_CAPACITY: usize = 100_000;

/// What the ledger knows of one tool on one host.
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    pub host: IpAddr,
    pub tool: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub active_seconds: i64,
    pub flows: u64,
    pub bytes: u64,
    pub sanctioned_flows: u64,
    pub categories: BTreeSet<String>,
    pub evidence: BTreeSet<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    pub segment_kind: &'static str,
    /// Seen on evidence that is more than supporting (entries with only
    /// supporting evidence are kept for correlation but not reported).
    #[serde(skip)]
    pub strong: bool,
    /// Seen on strong evidence that was not sanctioned.
    #[serde(skip)]
    pub unsanctioned: bool,
    #[serde(skip)]
    pub max_active_reported: bool,
}

/// What one observation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observation {
    /// The first strong sighting of this tool on this host.
    pub first: bool,
    /// Active longer than `max_active`, reported now for the first time.
    pub passed_max_active: bool,
    /// The host has (had, or now has) unsanctioned strong evidence for this tool:
    /// supporting evidence may then alert too.
    pub strong: bool,
}

/// One sighting to record.
#[derive(Debug, Clone)]
pub struct Sighting<'a> {
    pub host: IpAddr,
    pub tool: &'a str,
    pub at: Timestamp,
    pub new_flow: bool,
    pub category: &'a str,
    pub evidence: &'a [&'a str],
    pub strong: bool,
    pub sanctioned: bool,
    pub segment: Option<&'a str>,
    pub segment_kind: &'static str,
}

#[derive(Debug, Default)]
pub struct Ledger {
    map: DashMap<(IpAddr, String), Activity, ahash::RandomState>,
    max_active: Option<Duration>,
    pub dropped: std::sync::atomic::AtomicU64,
}

impl Ledger {
    pub fn new(max_active: Option<Duration>) -> Self {
        Ledger {
            max_active,
            ..Default::default()
        }
    }

    pub fn max_active(&self) -> Option<Duration> {
        self.max_active
    }

    pub fn observe(&self, s: &Sighting<'_>) -> Observation {
        let key = (s.host, s.tool.to_string());
        let mut obs = Observation::default();
        if !self.map.contains_key(&key) && self.map.len() >= LEDGER_CAPACITY {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return obs;
        }
        let mut a = self.map.entry(key).or_insert_with(|| Activity {
            host: s.host,
            tool: s.tool.to_string(),
            first_seen: s.at,
            last_seen: s.at,
            active_seconds: 0,
            flows: 0,
            bytes: 0,
            sanctioned_flows: 0,
            categories: BTreeSet::new(),
            evidence: BTreeSet::new(),
            segment: s.segment.map(String::from),
            segment_kind: s.segment_kind,
            strong: false,
            unsanctioned: false,
            max_active_reported: false,
        });
        a.first_seen = a.first_seen.min(s.at);
        a.last_seen = a.last_seen.max(s.at);
        a.active_seconds = a.last_seen.since(a.first_seen).0 / 1_000_000_000;
        if s.new_flow {
            a.flows += 1;
            if s.sanctioned {
                a.sanctioned_flows += 1;
            }
        }
        a.categories.insert(s.category.to_string());
        for e in s.evidence {
            a.evidence.insert(e.to_string());
        }
        obs.first = s.strong && !a.strong;
        a.strong |= s.strong;
        a.unsanctioned |= s.strong && !s.sanctioned;
        obs.strong = a.unsanctioned;
        obs.passed_max_active = a.unsanctioned && self.check_max_active(&mut a);
        obs
    }

    /// Extends a host's activity to `at` (a flow with a verdict went on until
    /// then) and adds its bytes.
    pub fn extend(
        &self,
        host: IpAddr,
        tool: &str,
        at: Timestamp,
        bytes: u64,
    ) -> Option<Observation> {
        let mut a = self.map.get_mut(&(host, tool.to_string()))?;
        a.last_seen = a.last_seen.max(at);
        a.active_seconds = a.last_seen.since(a.first_seen).0 / 1_000_000_000;
        a.bytes += bytes;
        let passed = a.unsanctioned && self.check_max_active(&mut a);
        Some(Observation {
            passed_max_active: passed,
            strong: a.unsanctioned,
            first: false,
        })
    }

    fn check_max_active(&self, a: &mut Activity) -> bool {
        let Some(max) = self.max_active else {
            return false;
        };
        if !a.max_active_reported && a.last_seen.since(a.first_seen) > max {
            a.max_active_reported = true;
            return true;
        }
        false
    }

    pub fn get(&self, host: IpAddr, tool: &str) -> Option<Activity> {
        self.map.get(&(host, tool.to_string())).map(|a| a.clone())
    }

    /// Every entry with more than supporting evidence, sorted by first
    /// sighting then host and tool.
    pub fn snapshot(&self) -> Vec<Activity> {
        let mut v: Vec<Activity> = self
            .map
            .iter()
            .filter(|e| e.strong)
            .map(|e| e.value().clone())
            .collect();
        v.sort_by(|a, b| (a.first_seen, a.host, &a.tool).cmp(&(b.first_seen, b.host, &b.tool)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: i64, new_flow: bool) -> Sighting<'static> {
        Sighting {
            host: "10.1.0.5".parse().expect("ip"),
            tool: "ngrok",
            at: Timestamp(at * 1_000_000_000),
            new_flow,
            category: "tunnel-agent",
            evidence: &["sni"],
            strong: true,
            sanctioned: false,
            segment: Some("prod"),
            segment_kind: "production",
        }
    }

    #[test]
    fn first_last_and_max_active_from_capture_time() {
        let l = Ledger::new(Some(Duration::from_secs(3600)));
        assert!(l.observe(&s(100, true)).first);
        let o = l.observe(&s(200, true));
        assert!(!o.first && !o.passed_max_active);
        let host = "10.1.0.5".parse().expect("ip");
        let o = l
            .extend(host, "ngrok", Timestamp(3701 * 1_000_000_000), 5000)
            .expect("known");
        assert!(o.passed_max_active);
        // reported once
        assert!(!l.observe(&s(8000, false)).passed_max_active);
        let a = l.get(host, "ngrok").expect("entry");
        assert_eq!((a.flows, a.bytes, a.active_seconds), (2, 5000, 7900));
        assert_eq!(a.first_seen, Timestamp(100 * 1_000_000_000));
    }
}
