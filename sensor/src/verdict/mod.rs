//! The verdict stage: signatures' matches × the site's policy × the state
//! that spans flows → alerts, sanctioned sightings and host activity.
//!
//! One thread owns it (the writer) and feeds it in input order, so its effects
//! (which alert of a repeated pair speaks, `first_seen`, the shared-key count)
//! are the same for every number of workers. Plain maps: nothing here is
//! shared between threads. A reload rebuilds everything that comes from the
//! configuration (signatures, allow-list, ledger and re-alert settings) and
//! keeps what was learnt from the traffic.

pub mod ledger;
pub mod spki;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{Segment, SegmentKind, SiteConfig};
use crate::detect::names::{Kind, NameIndex};
use crate::detect::rules::{Confidence, HostSide, Signature};
use crate::detect::{Activity, AlertOut, Ends, Evidence, Facts, RuleSet, LONG_RUNNING_ID};
use crate::time::{Duration, Timestamp};

pub use ledger::{Ledger, Observation};
pub use spki::SpkiTracker;

/// How long, by default, an alert for one host and signature silences repeats.
pub const DEFAULT_REALERT_AFTER: Duration = Duration::from_secs(3600);

/// Severity of a verdict about a host in a segment of this kind (1 = highest).
pub fn severity(kind: Option<SegmentKind>) -> u8 {
    match kind {
        Some(SegmentKind::Production) => 1,
        Some(SegmentKind::Development) => 4,
        Some(SegmentKind::Other) | None => 2,
    }
}

/// Is the verdict about the client (tunnels) or the server (interception)?
pub fn about_server(category: &str) -> bool {
    category.starts_with("interception-")
}

/// The site's allow-list.
#[derive(Debug, Default)]
pub struct Policy {
    allow: NameIndex,
    allow_names: Vec<String>,
}

impl Policy {
    pub fn new(site: &SiteConfig) -> Self {
        let mut allow = NameIndex::default();
        for (i, n) in site.allow.names.iter().enumerate() {
            allow.insert(n, Kind::Suffix, i as u32);
        }
        Policy {
            allow,
            allow_names: site.allow.names.clone(),
        }
    }

    /// The allow-list entry that sanctions one of these names, if any.
    pub fn sanctioned<'a>(&self, names: impl Iterator<Item = &'a str>) -> Option<&str> {
        for n in names {
            let mut hit = None;
            self.allow.lookup(n, &mut |t| hit = Some(t));
            if let Some(t) = hit {
                return self.allow_names.get(t as usize).map(String::as_str);
            }
        }
        None
    }
}

/// What the verdict stage decided for one protocol event.
#[derive(Debug, Default)]
pub struct Decision {
    pub alerts: Vec<AlertOut>,
    /// (allow-list entry, signature ids, tools) when the event is sanctioned.
    pub sanctioned: Option<(String, Vec<u32>, Vec<String>)>,
    /// Ledger entries to log as `host_activity`, with the reason.
    pub activity: Vec<(Activity, &'static str)>,
    /// Signature ids alerted now (the flow must not alert on them again).
    pub alerted: Vec<u32>,
    /// (host, tool) pairs this flow now counts for in the ledger.
    pub ledger_keys: Vec<(IpAddr, String)>,
}

/// The alert raised when a tool stays active past `max_active`.
pub fn long_running(a: &Activity, max: Duration) -> AlertOut {
    AlertOut {
        id: LONG_RUNNING_ID,
        rev: 1,
        name: format!(
            "{} active on one host longer than the allowed {} s",
            a.tool,
            max.0 / 1_000_000_000
        ),
        tool: a.tool.clone(),
        category: "long-running".into(),
        confidence: Confidence::High,
        references: Vec::new(),
        evidence: vec![Evidence {
            fact: "active_seconds",
            value: a.active_seconds.to_string(),
            pattern: format!("> {}", max.0 / 1_000_000_000),
        }],
        also_matched: Vec::new(),
        host: a.host,
        // production stays critical; elsewhere a forgotten tool is worth a look
        severity: if a.segment_kind == SegmentKind::Production {
            1
        } else {
            2
        },
        segment: a.segment.as_deref().map(Arc::from),
        segment_kind: a.segment_kind,
    }
}

/// What a flow has already done, as the verdict stage remembers it.
#[derive(Debug, Clone, Copy)]
pub struct FlowState<'a> {
    /// Signatures this flow has alerted on (one alert per flow and signature).
    pub alerted: &'a [u32],
    /// (host, tool) pairs this flow counts for in the ledger.
    pub ledger_keys: &'a [(IpAddr, String)],
}

/// The verdict stage's configuration and cross-flow state.
#[derive(Debug)]
pub struct Verdicts {
    rules: Arc<RuleSet>,
    policy: Policy,
    pub ledger: Ledger,
    pub spki: SpkiTracker,
    /// Last alert time by (host, signature).
    recent: HashMap<(IpAddr, u32), Timestamp, ahash::RandomState>,
    realert_after: Duration,
    /// Alerts not written because the same host and signature alerted lately.
    pub suppressed: u64,
}

impl Verdicts {
    pub fn new(site: &SiteConfig, rules: Arc<RuleSet>) -> Self {
        let mut v = Verdicts {
            rules,
            policy: Policy::default(),
            ledger: Ledger::default(),
            spki: SpkiTracker::default(),
            recent: HashMap::default(),
            realert_after: DEFAULT_REALERT_AFTER,
            suppressed: 0,
        };
        v.configure(site);
        v
    }

    /// New configuration and signatures: everything that comes from them is
    /// rebuilt; the ledger, the key tracker and suppression keep what they
    /// learnt.
    pub fn reload(&mut self, site: &SiteConfig, rules: Arc<RuleSet>) {
        self.rules = rules;
        self.configure(site);
    }

    fn configure(&mut self, site: &SiteConfig) {
        self.policy = Policy::new(site);
        self.ledger
            .set_max_active(site.ledger.max_active.map(|d| d.0));
        self.realert_after = site
            .ledger
            .realert_after
            .map_or(DEFAULT_REALERT_AFTER, |d| d.0);
    }

    pub fn realert_after(&self) -> Duration {
        self.realert_after
    }

    /// Evaluates one event's facts and applies the policy.
    pub fn decide(
        &mut self,
        facts: &Facts<'_>,
        ends: &Ends<'_>,
        flow: FlowState<'_>,
        at: Timestamp,
    ) -> Decision {
        self.spki.observe(facts.chain);
        let rules = Arc::clone(&self.rules);
        let verdicts = rules.evaluate(facts, Some(&self.spki));
        let mut d = Decision::default();
        if verdicts.is_empty() {
            return d;
        }
        let allowed = self.policy.sanctioned(facts.names()).map(String::from);
        let (mut ids, mut tools) = (Vec::new(), Vec::<String>::new());
        for (i, evidence) in verdicts {
            let sig = &rules.sigs[i].sig;
            let server_side = match sig.raw.host {
                Some(HostSide::Server) => true,
                Some(HostSide::Client) => false,
                None => about_server(sig.category()),
            };
            let (host, seg) = if server_side {
                (ends.server, ends.server_seg)
            } else {
                (ends.client, ends.client_seg)
            };
            let kind = seg.map_or(SegmentKind::Other, |s| s.kind);
            let mut sev = severity(seg.map(|s| s.kind));
            if server_side {
                // interception concerns the proxy's clients too: the worse of both
                sev = sev.min(severity(ends.client_seg.map(|s| s.kind)));
            }
            let key = (host, sig.raw.tool.clone());
            let new_flow = !flow.ledger_keys.contains(&key) && !d.ledger_keys.contains(&key);
            let facts_used: Vec<&str> = evidence.iter().map(|e| e.fact).collect();
            let obs = self.ledger.observe(&ledger::Sighting {
                host,
                tool: &sig.raw.tool,
                at,
                new_flow,
                category: sig.category(),
                evidence: &facts_used,
                strong: !sig.raw.supporting,
                sanctioned: allowed.is_some(),
                segment: seg.map(|s| &*s.name),
                segment_kind: kind,
            });
            if new_flow {
                d.ledger_keys.push(key);
            }
            self.ledger_news(&mut d, host, &sig.raw.tool, obs);
            if allowed.is_some() {
                ids.push(sig.id());
                if !tools.contains(&sig.raw.tool) {
                    tools.push(sig.raw.tool.clone());
                }
                continue;
            }
            if flow.alerted.contains(&sig.id()) || (sig.raw.supporting && !obs.strong) {
                continue;
            }
            let mut a = alert(sig, evidence, host, seg);
            a.severity = sev;
            fold(&mut d.alerts, a);
        }
        self.suppress(&mut d, at);
        if let Some(a) = allowed {
            d.sanctioned = Some((a, ids, tools));
        }
        d
    }

    /// What the ledger's observation means for the log: a first sighting, a
    /// tool active past `max_active`.
    fn ledger_news(&self, d: &mut Decision, host: IpAddr, tool: &str, obs: Observation) {
        if obs.first {
            if let Some(a) = self.ledger.get(host, tool) {
                d.activity.push((a, "first_seen"));
            }
        }
        if obs.passed_max_active {
            if let (Some(a), Some(max)) = (self.ledger.get(host, tool), self.ledger.max_active()) {
                d.alerts.push(long_running(&a, max));
                d.activity.push((a, "max_active"));
            }
        }
    }

    /// A flow that had verdicts ended at `last` after `bytes`: the ledger
    /// hears how long and how much its (host, tool) pairs went on.
    pub fn flow_end(&mut self, keys: &[(IpAddr, String)], last: Timestamp, bytes: u64) -> Decision {
        let mut late = Decision::default();
        for (host, tool) in keys {
            let o = self.ledger.extend(*host, tool, last, bytes);
            if o.is_some_and(|o| o.passed_max_active) {
                if let (Some(a), Some(max)) =
                    (self.ledger.get(*host, tool), self.ledger.max_active())
                {
                    late.alerts.push(long_running(&a, max));
                    late.activity.push((a, "max_active"));
                }
            }
        }
        late
    }

    /// Every matched id counts as alerted for this flow; repeats of the same
    /// host and signature within `realert_after` are suppressed.
    fn suppress(&mut self, d: &mut Decision, at: Timestamp) {
        let alerted = &mut d.alerted;
        let mut alerts = std::mem::take(&mut d.alerts);
        alerts.retain_mut(|a| {
            a.also_matched.sort_unstable();
            alerted.push(a.id);
            alerted.extend(&a.also_matched);
            // Silent only if every signature folded into it alerted lately:
            // new evidence (a shared key seen for the third site) still speaks.
            let fresh = std::iter::once(a.id)
                .chain(a.also_matched.iter().copied())
                .fold(false, |fresh, id| self.may_alert(a.host, id, at) | fresh);
            a.id == LONG_RUNNING_ID || fresh
        });
        d.alerts = alerts;
    }

    /// Records an alert; false when the same host and signature alerted less
    /// than `realert_after` ago (capture time).
    fn may_alert(&mut self, host: IpAddr, id: u32, at: Timestamp) -> bool {
        if self.recent.len() >= ledger::LEDGER_CAPACITY && !self.recent.contains_key(&(host, id)) {
            // Full: forget everything rather than grow (alerts may then repeat once).
            self.recent.clear();
        }
        let e = self.recent.entry((host, id)).or_insert(Timestamp(i64::MIN));
        if e.0 != i64::MIN && at.since(*e) < self.realert_after {
            self.suppressed += 1;
            return false;
        }
        *e = at;
        true
    }
}

/// The alert a signature raises about `host` (severity set by the caller).
fn alert(
    sig: &Signature,
    evidence: Vec<Evidence>,
    host: IpAddr,
    seg: Option<&Segment>,
) -> AlertOut {
    AlertOut {
        id: sig.id(),
        rev: sig.raw.rev.unwrap_or(1),
        name: sig.raw.name.clone(),
        tool: sig.raw.tool.clone(),
        category: sig.category().to_string(),
        confidence: sig.raw.confidence,
        references: sig.raw.references.clone(),
        evidence,
        also_matched: Vec::new(),
        host,
        severity: 0,
        segment: seg.map(|s| Arc::clone(&s.name)),
        segment_kind: seg.map_or(SegmentKind::Other, |s| s.kind),
    }
}

/// One alert per tool, category and host for one event: the most confident
/// signature speaks, the others add their evidence.
fn fold(alerts: &mut Vec<AlertOut>, candidate: AlertOut) {
    match alerts.iter_mut().find(|a| {
        a.host == candidate.host && a.tool == candidate.tool && a.category == candidate.category
    }) {
        Some(a) => {
            let better = (candidate.confidence, std::cmp::Reverse(candidate.id))
                > (a.confidence, std::cmp::Reverse(a.id));
            let mut other = candidate;
            if better {
                std::mem::swap(a, &mut other);
                a.also_matched = std::mem::take(&mut other.also_matched);
            }
            a.also_matched.push(other.id);
            for e in other.evidence {
                if !a.evidence.contains(&e) {
                    a.evidence.push(e);
                }
            }
        }
        None => alerts.push(candidate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_is_label_aligned() {
        let site =
            SiteConfig::parse("t", "[allow]\nnames = [\"tunnels.example.com\"]\n").expect("cfg");
        let p = Policy::new(&site);
        assert_eq!(
            p.sanctioned(["x.tunnels.example.com"].into_iter()),
            Some("tunnels.example.com")
        );
        assert_eq!(p.sanctioned(["eviltunnels.example.com"].into_iter()), None);
    }

    #[test]
    fn reload_applies_ledger_settings() {
        let site = SiteConfig::parse("t", "[ledger]\nrealert_after = \"1h\"\n").expect("cfg");
        let rules = Arc::new(RuleSet::compile(Vec::new()));
        let mut v = Verdicts::new(&site, Arc::clone(&rules));
        assert_eq!(v.ledger.max_active(), None);
        let site = SiteConfig::parse(
            "t",
            "[ledger]\nmax_active = \"2h\"\nrealert_after = \"90s\"\n",
        )
        .expect("cfg");
        v.reload(&site, rules);
        assert_eq!(v.ledger.max_active(), Some(Duration::from_secs(7200)));
        assert_eq!(v.realert_after(), Duration::from_secs(90));
    }
}
