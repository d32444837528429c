//! Host activity ledger: per (host, tool), when it was first and last seen
//! active, over how many flows and bytes, on what evidence and with which
//! values. Capture time only. Kept by the verdict stage, which applies
//! sightings in input order. Bounded.
//!
//! Activity comes in periods: a tool not seen on a host for longer than
//! `idle_after` starts a new period when it comes back (reported as
//! `resumed`). The ledger keeps each pair's current period; when a store
//! listens (`[ledger] database`, `--ledger`), every change is also kept as an
//! [`Update`] (increments, plus the period's whole interval) for the store
//! to merge, and the store's view of a period (other sensors', or an earlier
//! run's) comes back through [`Ledger::restore`] and [`Ledger::merged`].

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use crate::config::SegmentKind;
use crate::detect::{Activity, SightingStat, SIGHTINGS_PER_ENTRY};
use crate::time::{Duration, Timestamp};

/// (host, tool) pairs tracked at most; past that, new pairs are counted, not kept.
pub const LEDGER_CAPACITY: usize = 100_000;
/// Updates of closed periods held for the store at most (the store takes
/// them within milliseconds; this only binds a store that stopped reading).
pub const CLOSED_CAPACITY: usize = 10_000;
/// A tool unseen this long on a host starts a new activity period.
pub const DEFAULT_IDLE_AFTER: Duration = Duration(3_600 * 1_000_000_000);

/// What one observation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observation {
    /// The first strong sighting of this tool on this host (in this period).
    pub first: bool,
    /// ... after an earlier period: the tool came back after a pause.
    pub resumed: bool,
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
    /// (fact, value) of each piece of evidence.
    pub evidence: &'a [(&'a str, &'a str)],
    pub strong: bool,
    pub sanctioned: bool,
    pub segment: Option<&'a str>,
    pub segment_kind: SegmentKind,
}

/// What changed in one activity period since the store last heard: counts
/// are increments, the interval is the period's whole interval as this
/// sensor knows it, sets and flags are what it has (the store unions them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub host: IpAddr,
    pub tool: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub flows: u64,
    pub bytes: u64,
    pub sanctioned_flows: u64,
    pub categories: BTreeSet<String>,
    pub evidence: BTreeSet<String>,
    pub segment: Option<String>,
    pub segment_kind: SegmentKind,
    pub strong: bool,
    pub unsanctioned: bool,
    pub max_active_reported: bool,
    /// Each value's first and last time in this update, and how many times.
    pub sightings: Vec<SightingStat>,
}

impl Update {
    /// An update with nothing added yet for `a`'s period.
    fn of(a: &Activity) -> Self {
        Update {
            host: a.host,
            tool: a.tool.clone(),
            first_seen: a.first_seen,
            last_seen: a.last_seen,
            flows: 0,
            bytes: 0,
            sanctioned_flows: 0,
            categories: a.categories.clone(),
            evidence: a.evidence.clone(),
            segment: a.segment.clone(),
            segment_kind: a.segment_kind,
            strong: a.strong,
            unsanctioned: a.unsanctioned,
            max_active_reported: a.max_active_reported,
            sightings: Vec::new(),
        }
    }

    /// Takes `a`'s interval, sets and flags (counts stay increments).
    fn sync(&mut self, a: &Activity) {
        self.first_seen = self.first_seen.min(a.first_seen);
        self.last_seen = self.last_seen.max(a.last_seen);
        self.categories.extend(a.categories.iter().cloned());
        self.evidence.extend(a.evidence.iter().cloned());
        if a.segment.is_some() {
            self.segment.clone_from(&a.segment);
            self.segment_kind = a.segment_kind;
        }
        self.strong |= a.strong;
        self.unsanctioned |= a.unsanctioned;
        self.max_active_reported |= a.max_active_reported;
    }

    /// Folds a later update of the same period into this one.
    pub fn absorb(&mut self, o: Update) {
        self.first_seen = self.first_seen.min(o.first_seen);
        self.last_seen = self.last_seen.max(o.last_seen);
        self.flows += o.flows;
        self.bytes += o.bytes;
        self.sanctioned_flows += o.sanctioned_flows;
        self.categories.extend(o.categories);
        self.evidence.extend(o.evidence);
        if o.segment.is_some() {
            self.segment = o.segment;
            self.segment_kind = o.segment_kind;
        }
        self.strong |= o.strong;
        self.unsanctioned |= o.unsanctioned;
        self.max_active_reported |= o.max_active_reported;
        for s in o.sightings {
            add_sighting(&mut self.sightings, s);
        }
    }
}

/// Adds a sighting to a list of distinct ones; false when the list is full.
fn add_sighting(list: &mut Vec<SightingStat>, s: SightingStat) -> bool {
    if let Some(e) = list
        .iter_mut()
        .find(|e| e.same(&s.category, &s.fact, &s.value))
    {
        e.merge(&s);
        return true;
    }
    if list.len() >= SIGHTINGS_PER_ENTRY {
        return false;
    }
    list.push(s);
    true
}

type Key = (IpAddr, String);

#[derive(Debug)]
pub struct Ledger {
    map: HashMap<Key, Activity, ahash::RandomState>,
    max_active: Option<Duration>,
    idle_after: Duration,
    /// New (host, tool) pairs not kept because the ledger was full.
    pub dropped: u64,
    /// Distinct values not kept because a pair had [`SIGHTINGS_PER_ENTRY`].
    pub sightings_dropped: u64,
    /// Updates of closed periods lost because the store did not take them.
    pub updates_dropped: u64,
    /// Keep [`Update`]s (a store listens).
    persist: bool,
    dirty: HashMap<Key, Update, ahash::RandomState>,
    closed: Vec<Update>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            map: HashMap::default(),
            max_active: None,
            idle_after: DEFAULT_IDLE_AFTER,
            dropped: 0,
            sightings_dropped: 0,
            updates_dropped: 0,
            persist: false,
            dirty: HashMap::default(),
            closed: Vec::new(),
        }
    }
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

    pub fn set_idle_after(&mut self, idle: Duration) {
        self.idle_after = idle;
    }

    /// Keep every change as an [`Update`] for a store.
    pub fn persist(&mut self) {
        self.persist = true;
    }

    pub fn observe(&mut self, s: &Sighting<'_>) -> Observation {
        let key = (s.host, s.tool.to_string());
        let mut obs = Observation::default();
        if let Some(a) = self.map.get(&key) {
            if s.at.0.saturating_add(self.idle_after.0) < a.first_seen.0 {
                // long before the current period: a period of its own
                obs.strong = a.unsanctioned;
                self.earlier_period(s);
                return obs;
            }
            if s.at.0 > a.last_seen.0.saturating_add(self.idle_after.0) {
                obs.resumed = a.strong;
                self.close(&key);
            }
        } else if self.map.len() >= LEDGER_CAPACITY {
            self.dropped += 1;
            return obs;
        }
        let max = self.max_active;
        let a = self
            .map
            .entry(key.clone())
            .or_insert_with(|| new_activity(s));
        let flows_before = (a.flows, a.sanctioned_flows);
        let kept = record(a, s);
        obs.first = s.strong && !a.strong;
        obs.resumed &= obs.first;
        a.strong |= s.strong;
        a.unsanctioned |= s.strong && !s.sanctioned;
        obs.strong = a.unsanctioned;
        obs.passed_max_active = a.unsanctioned && check_max_active(max, a);
        self.sightings_dropped += (s.evidence.len() - kept) as u64;
        if self.persist {
            let a = &self.map[&key];
            let u = self.dirty.entry(key).or_insert_with(|| Update::of(a));
            u.sync(a);
            u.flows += a.flows - flows_before.0;
            u.sanctioned_flows += a.sanctioned_flows - flows_before.1;
            for (fact, value) in s.evidence {
                let one = sighting(s.category, fact, value, s.at);
                add_sighting(&mut u.sightings, one);
            }
        }
        obs
    }

    /// A sighting from before the current period (captures read out of
    /// order): the store gets it as a period of its own.
    fn earlier_period(&mut self, s: &Sighting<'_>) {
        if !self.persist {
            return;
        }
        let mut a = new_activity(s);
        record(&mut a, s);
        a.strong = s.strong;
        a.unsanctioned = s.strong && !s.sanctioned;
        let mut u = Update::of(&a);
        (u.flows, u.sanctioned_flows) = (a.flows, a.sanctioned_flows);
        u.sightings = a.sightings;
        self.push_closed(u);
    }

    /// Ends the current period of `key`: what the store has not heard of it
    /// waits among the closed periods' updates.
    fn close(&mut self, key: &Key) {
        self.map.remove(key);
        if let Some(u) = self.dirty.remove(key) {
            self.push_closed(u);
        }
    }

    fn push_closed(&mut self, u: Update) {
        if self.closed.len() >= CLOSED_CAPACITY {
            self.updates_dropped += 1;
        } else {
            self.closed.push(u);
        }
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
        let key = (host, tool.to_string());
        let a = self.map.get_mut(&key)?;
        if at.0.saturating_add(self.idle_after.0) < a.first_seen.0 {
            // a flow of an earlier period (captures read out of order)
            if self.persist {
                // bytes and time only: no flags of the current period
                let mut u = Update::of(a);
                (u.first_seen, u.last_seen, u.bytes) = (at, at, bytes);
                (u.categories, u.evidence) = Default::default();
                (u.strong, u.unsanctioned, u.max_active_reported) = (false, false, false);
                self.push_closed(u);
            }
            return None;
        }
        a.last_seen = a.last_seen.max(at);
        a.active_seconds = a.last_seen.since(a.first_seen).0 / 1_000_000_000;
        a.bytes += bytes;
        let passed = a.unsanctioned && check_max_active(max, a);
        if self.persist {
            let u = self.dirty.entry(key).or_insert_with(|| Update::of(a));
            u.sync(a);
            u.bytes += bytes;
        }
        Some(Observation {
            passed_max_active: passed,
            strong: a.unsanctioned,
            ..Observation::default()
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

    /// Whether changes wait for the store.
    pub fn has_updates(&self) -> bool {
        !self.dirty.is_empty() || !self.closed.is_empty()
    }

    /// What changed since the last call, closed periods first, then by
    /// host and tool (one order for every run of the same input).
    pub fn take_updates(&mut self) -> Vec<Update> {
        let mut v: Vec<Update> = std::mem::take(&mut self.closed);
        let mut open: Vec<Update> = self.dirty.drain().map(|(_, u)| u).collect();
        open.sort_by(|a, b| (a.host, &a.tool).cmp(&(b.host, &b.tool)));
        v.extend(open);
        v
    }

    /// Puts back updates the store could not take (they are merged with
    /// what changed since).
    pub fn untake(&mut self, updates: Vec<Update>) {
        for u in updates {
            let key = (u.host, u.tool.clone());
            let current = self
                .map
                .get(&key)
                .is_some_and(|a| a.first_seen <= u.last_seen && u.first_seen <= a.last_seen);
            match (current, self.dirty.remove(&key)) {
                (true, Some(later)) => {
                    let mut u = u;
                    u.absorb(later);
                    self.dirty.insert(key, u);
                }
                (true, None) => {
                    self.dirty.insert(key, u);
                }
                (false, later) => {
                    if let Some(l) = later {
                        self.dirty.insert(key, l);
                    }
                    self.push_closed(u);
                }
            }
        }
    }

    /// The store's latest period of each pair, at start: a tool seen before
    /// a restart (or by an earlier run) goes on from there.
    pub fn restore(&mut self, entries: Vec<Activity>) {
        for a in entries {
            if self.map.len() >= LEDGER_CAPACITY {
                self.dropped += 1;
                continue;
            }
            self.map.insert((a.host, a.tool.clone()), a);
        }
    }

    /// The store's merged interval of a period this sensor is in (other
    /// sensors saw the same tool on the same host): `max_active` is judged
    /// on it.
    pub fn merged(&mut self, host: IpAddr, tool: &str, first: Timestamp, last: Timestamp) {
        let idle = self.idle_after.0;
        let Some(a) = self.map.get_mut(&(host, tool.to_string())) else {
            return;
        };
        let overlaps = first.0 <= a.last_seen.0.saturating_add(idle)
            && a.first_seen.0 <= last.0.saturating_add(idle);
        if overlaps {
            a.first_seen = a.first_seen.min(first);
            a.last_seen = a.last_seen.max(last);
            a.active_seconds = a.last_seen.since(a.first_seen).0 / 1_000_000_000;
        }
    }
}

fn new_activity(s: &Sighting<'_>) -> Activity {
    Activity {
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
        sightings: Vec::new(),
    }
}

fn sighting(category: &str, fact: &str, value: &str, at: Timestamp) -> SightingStat {
    SightingStat {
        category: category.to_string(),
        fact: fact.to_string(),
        value: value.to_string(),
        first_seen: at,
        last_seen: at,
        count: 1,
    }
}

/// Applies a sighting's time, flow, category, evidence and values to an
/// entry; returns how many values were kept.
fn record(a: &mut Activity, s: &Sighting<'_>) -> usize {
    a.first_seen = a.first_seen.min(s.at);
    a.last_seen = a.last_seen.max(s.at);
    a.active_seconds = a.last_seen.since(a.first_seen).0 / 1_000_000_000;
    if s.new_flow {
        a.flows += 1;
        if s.sanctioned {
            a.sanctioned_flows += 1;
        }
    }
    if a.segment.is_none() && s.segment.is_some() {
        a.segment = s.segment.map(String::from);
        a.segment_kind = s.segment_kind;
    }
    a.categories.insert(s.category.to_string());
    let mut kept = 0;
    for (fact, value) in s.evidence {
        a.evidence.insert(fact.to_string());
        kept += usize::from(add_sighting(
            &mut a.sightings,
            sighting(s.category, fact, value, s.at),
        ));
    }
    kept
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
mod tests;
