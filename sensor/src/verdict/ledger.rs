//! Host activity ledger: per (host, tool), when it was first and last seen
//! active, over how many flows and bytes, on what evidence. Capture time only.
//! Kept by the verdict stage, which applies sightings in input order.
//! Bounded.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use crate::config::SegmentKind;
use crate::detect::Activity;
use crate::time::{Duration, Timestamp};

/// (host, tool) pairs tracked at most; past that, new pairs are counted, not kept.
pub const LEDGER_CAPACITY: usize = 100_000;

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
    pub segment_kind: SegmentKind,
}

#[derive(Debug, Default)]
pub struct Ledger {
    map: HashMap<(IpAddr, String), Activity, ahash::RandomState>,
    max_active: Option<Duration>,
    /// New (host, tool) pairs not kept because the ledger was full.
    pub dropped: u64,
}

impl Ledger {
    pub fn new(max_active: Option<Duration>) -> Self {
        Ledger {
            max_active,
            ..Default::default()
        }
    }

    pub fn set_max_active(&mut self, max: Option<Duration>) {
        self.max_active = max;
    }

    pub fn max_active(&self) -> Option<Duration> {
        self.max_active
    }

    pub fn observe(&mut self, s: &Sighting<'_>) -> Observation {
        let key = (s.host, s.tool.to_string());
        let mut obs = Observation::default();
        if !self.map.contains_key(&key) && self.map.len() >= LEDGER_CAPACITY {
            self.dropped += 1;
            return obs;
        }
        let max = self.max_active;
        let a = self.map.entry(key).or_insert_with(|| Activity {
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
        obs.passed_max_active = a.unsanctioned && check_max_active(max, a);
        obs
    }

    /// Extends a host's activity to `at` (a flow with a verdict went on until
    /// then) and adds its bytes.
    pub fn extend(
        &mut self,
        host: IpAddr,
        tool: &str,
        at: Timestamp,
        bytes: u64,
    ) -> Option<Observation> {
        let max = self.max_active;
        let a = self.map.get_mut(&(host, tool.to_string()))?;
        a.last_seen = a.last_seen.max(at);
        a.active_seconds = a.last_seen.since(a.first_seen).0 / 1_000_000_000;
        a.bytes += bytes;
        let passed = a.unsanctioned && check_max_active(max, a);
        Some(Observation {
            passed_max_active: passed,
            strong: a.unsanctioned,
            first: false,
        })
    }

    pub fn get(&self, host: IpAddr, tool: &str) -> Option<Activity> {
        self.map.get(&(host, tool.to_string())).cloned()
    }

    /// Every entry with more than supporting evidence, sorted by first
    /// sighting then host and tool.
    pub fn snapshot(&self) -> Vec<Activity> {
        let mut v: Vec<Activity> = self.map.values().filter(|e| e.strong).cloned().collect();
        v.sort_by(|a, b| (a.first_seen, a.host, &a.tool).cmp(&(b.first_seen, b.host, &b.tool)));
        v
    }
}

/// Active longer than `max`, and not reported yet: marks it reported.
fn check_max_active(max: Option<Duration>, a: &mut Activity) -> bool {
    let Some(max) = max else {
        return false;
    };
    if !a.max_active_reported && a.last_seen.since(a.first_seen) > max {
        a.max_active_reported = true;
        return true;
    }
    false
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
            segment_kind: SegmentKind::Production,
        }
    }

    #[test]
    fn first_last_and_max_active_from_capture_time() {
        let mut l = Ledger::new(Some(Duration::from_secs(3600)));
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
