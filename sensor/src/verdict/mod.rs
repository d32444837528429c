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
pub mod legs;
pub mod spki;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{Segment, SegmentKind, SiteConfig};
use crate::detect::names::{Kind, NameIndex};
use crate::detect::rules::{Confidence, HostSide, Signature};
use crate::detect::{Activity, AlertOut, Ends, Evidence, Facts, RuleSet, LONG_RUNNING_ID};
use crate::stats::Held;
use crate::time::{Duration, Timestamp};

pub use ledger::{Ledger, Observation};
pub use spki::SpkiTracker;

/// The tool of a signature that finds a behaviour, not a product.
pub const UNKNOWN_TOOL: &str = "unknown";

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
    /// Interceptors run on purpose: addresses and networks, and the names
    /// their clients use.
    interceptor_nets: Vec<(ipnet::IpNet, String)>,
    interceptor_names: NameIndex,
    interceptor_list: Vec<String>,
}

impl Policy {
    pub fn new(site: &SiteConfig) -> Self {
        let mut allow = NameIndex::default();
        for (i, n) in site.allow.names.iter().enumerate() {
            allow.insert(n, Kind::Suffix, i as u32);
        }
        let mut p = Policy {
            allow,
            allow_names: site.allow.names.clone(),
            ..Default::default()
        };
        for (i, e) in site.allow.interceptors.iter().enumerate() {
            let net = e
                .parse::<ipnet::IpNet>()
                .ok()
                .or_else(|| e.parse::<IpAddr>().ok().map(ipnet::IpNet::from));
            match net {
                Some(n) => p.interceptor_nets.push((n, e.clone())),
                None => p.interceptor_names.insert(e, Kind::Suffix, i as u32),
            }
        }
        p.interceptor_list = site.allow.interceptors.clone();
        p
    }

    /// The `[allow] interceptors` entry that sanctions a proxy at `proxy`
    /// whose clients asked for `name`.
    pub fn interceptor(&self, proxy: IpAddr, name: &str) -> Option<&str> {
        if let Some((_, e)) = self
            .interceptor_nets
            .iter()
            .find(|(n, _)| n.contains(&proxy))
        {
            return Some(e);
        }
        let mut hit = None;
        self.interceptor_names.lookup(name, &mut |t| hit = Some(t));
        self.interceptor_list.get(hit? as usize).map(String::as_str)
    }

    /// The allow-list entry that sanctions these names: only when every one
    /// of them is on the list (a sanctioned name next to another, e.g. in a
    /// second ClientHello, sanctions nothing).
    pub fn sanctioned<'a>(&self, names: impl Iterator<Item = &'a str>) -> Option<&str> {
        let mut first = None;
        for n in names {
            let mut hit = None;
            self.allow.lookup(n, &mut |t| hit = Some(t));
            let t = hit?;
            first.get_or_insert(t);
        }
        self.allow_names.get(first? as usize).map(String::as_str)
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
    /// (signature id, evidence) alerted now: the flow does not alert on the
    /// same again.
    pub alerted: Vec<(u32, u64)>,
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
            key: None,
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
        peer: None,
    }
}

/// What a flow has already done, as the verdict stage remembers it.
#[derive(Debug, Clone, Copy)]
pub struct FlowState<'a> {
    /// (signature id, evidence) this flow has alerted on.
    pub alerted: &'a [(u32, u64)],
    /// (host, tool) pairs this flow counts for in the ledger.
    pub ledger_keys: &'a [(IpAddr, String)],
}

/// A tool named by its fingerprints speaks for a finding instead of the
/// `unknown` signature of the same category.
fn prefer_named(rules: &RuleSet, verdicts: &mut Vec<(usize, Vec<Evidence>)>) {
    let named: Vec<&str> = verdicts
        .iter()
        .map(|(i, _)| &rules.sigs[*i].sig)
        .filter(|s| s.raw.tool != UNKNOWN_TOOL)
        .map(|s| s.category())
        .collect();
    verdicts.retain(|(i, _)| {
        let s = &rules.sigs[*i].sig;
        s.raw.tool != UNKNOWN_TOOL || !named.contains(&s.category())
    });
}

/// What makes two alerts the same sighting: the host, the signature, the
/// evidence values, and for a verdict about a server (an interceptor) the
/// client it served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Sighting {
    host: IpAddr,
    id: u32,
    peer: Option<IpAddr>,
    evidence: u64,
}

/// The verdict stage's configuration and cross-flow state.
#[derive(Debug)]
pub struct Verdicts {
    rules: Arc<RuleSet>,
    policy: Policy,
    pub ledger: Ledger,
    pub spki: SpkiTracker,
    /// Last alert time by sighting.
    recent: HashMap<Sighting, Timestamp, ahash::RandomState>,
    /// Hashes evidence values for [`Sighting`] (fixed keys: the same input
    /// gives the same decisions in every run).
    hasher: ahash::RandomState,
    realert_after: Duration,
    /// Alerts not raised, by reason.
    pub held: Held,
}

impl Verdicts {
    pub fn new(site: &SiteConfig, rules: Arc<RuleSet>) -> Self {
        let mut v = Verdicts {
            rules,
            policy: Policy::default(),
            ledger: Ledger::default(),
            spki: SpkiTracker::default(),
            recent: HashMap::default(),
            hasher: ahash::RandomState::with_seeds(1, 2, 3, 4),
            realert_after: DEFAULT_REALERT_AFTER,
            held: Held::default(),
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
        self.ledger.set_idle_after(
            site.ledger
                .idle_after
                .map_or(ledger::DEFAULT_IDLE_AFTER, |d| d.0),
        );
        self.realert_after = site
            .ledger
            .realert_after
            .map_or(DEFAULT_REALERT_AFTER, |d| d.0);
    }

    pub fn realert_after(&self) -> Duration {
        self.realert_after
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
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
        let mut verdicts = rules.evaluate(facts, Some(&self.spki));
        prefer_named(&rules, &mut verdicts);
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
            let facts_used: Vec<(&str, &str)> = evidence
                .iter()
                .map(|e| (e.fact, e.value.as_str()))
                .collect();
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
            if sig.raw.supporting && !obs.strong {
                self.held.supporting_only += 1;
                continue;
            }
            let mut a = alert(sig, evidence, host, seg);
            a.severity = sev;
            a.peer = server_side.then_some(ends.client);
            fold(&mut d.alerts, a);
        }
        self.suppress(&mut d, flow.alerted, at);
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
                let reason = if obs.resumed { "resumed" } else { "first_seen" };
                d.activity.push((a, reason));
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

    /// Every matched id counts as alerted for this flow; a repeat of the same
    /// sighting (host, signature, evidence values, and the client of an
    /// interceptor) within `realert_after` of capture time is suppressed. A
    /// new endpoint name, proxy, key or client always alerts, and so does an
    /// alert that is earlier than the last one (time never runs backwards
    /// into a suppression).
    fn suppress(&mut self, d: &mut Decision, flow_alerted: &[(u32, u64)], at: Timestamp) {
        let alerted = &mut d.alerted;
        let mut alerts = std::mem::take(&mut d.alerts);
        alerts.retain_mut(|a| {
            a.also_matched.sort_unstable();
            let evidence = self.hasher.hash_one(
                a.evidence
                    .iter()
                    .map(|e| (e.fact, e.identity()))
                    .collect::<Vec<_>>(),
            );
            let ids: Vec<u32> = std::iter::once(a.id)
                .chain(a.also_matched.iter().copied())
                .collect();
            // already said in this flow, for every signature folded in
            if a.id != LONG_RUNNING_ID
                && ids.iter().all(|id| flow_alerted.contains(&(*id, evidence)))
            {
                self.held.same_flow += 1;
                return false;
            }
            alerted.extend(ids.iter().map(|id| (*id, evidence)));
            // Silent only if every signature folded into it alerted lately.
            let fresh = ids.iter().fold(false, |fresh, &id| {
                let s = Sighting {
                    host: a.host,
                    id,
                    peer: a.peer,
                    evidence,
                };
                self.may_alert(s, at) | fresh
            });
            if !fresh && a.id != LONG_RUNNING_ID {
                self.held.repeat += 1;
            }
            a.id == LONG_RUNNING_ID || fresh
        });
        d.alerts = alerts;
    }

    /// Records an alert; false when the same sighting alerted less than
    /// `realert_after` before `at` (capture time).
    fn may_alert(&mut self, s: Sighting, at: Timestamp) -> bool {
        if self.recent.len() >= ledger::LEDGER_CAPACITY && !self.recent.contains_key(&s) {
            // Full: forget everything rather than grow (alerts may then repeat once).
            self.recent.clear();
        }
        match self.recent.get_mut(&s) {
            Some(last) if at >= *last && at.since(*last) < self.realert_after => false,
            Some(last) => {
                *last = (*last).max(at);
                true
            }
            None => {
                self.recent.insert(s, at);
                true
            }
        }
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
        peer: None,
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
        // every name must be sanctioned
        assert_eq!(
            p.sanctioned(["x.tunnels.example.com", "a.ngrok-free.app"].into_iter()),
            None
        );
        assert_eq!(p.sanctioned(std::iter::empty()), None);
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

    /// The alerts one TLS event with this SNI raises from `client`, in a new
    /// flow, at second `t`.
    fn sni_alerts(v: &mut Verdicts, client: &str, sni: &str, t: i64) -> Vec<u32> {
        let mut f = Facts::default();
        f.push(crate::detect::Fact::Sni, sni);
        f.set(crate::detect::Fact::DestPort, 443);
        let ends = Ends {
            client: client.parse().expect("ip"),
            server: "198.51.100.7".parse().expect("ip"),
            client_seg: None,
            server_seg: None,
        };
        let flow = FlowState {
            alerted: &[],
            ledger_keys: &[],
        };
        let d = v.decide(&f, &ends, flow, Timestamp(t * 1_000_000_000));
        d.alerts.iter().map(|a| a.id).collect()
    }

    fn verdicts(site: &str) -> Verdicts {
        let site = SiteConfig::parse("t", site).expect("cfg");
        Verdicts::new(&site, crate::load::bundled_rules())
    }

    #[test]
    fn a_new_endpoint_name_always_alerts_and_only_a_repeat_is_held() {
        let mut v = verdicts("");
        let host = "10.1.0.5";
        let first = sni_alerts(&mut v, host, "foo.ngrok.io", 0);
        assert!(!first.is_empty());
        // other names of the same signature: new sightings, each alerts
        assert_eq!(sni_alerts(&mut v, host, "bar.ngrok.app", 10), first);
        assert_eq!(sni_alerts(&mut v, host, "x.ngrok-free.dev", 20), first);
        // the same name again within realert_after: a repeat
        assert!(sni_alerts(&mut v, host, "foo.ngrok.io", 30).is_empty());
        // written otherwise, it is the same name
        assert!(sni_alerts(&mut v, host, "FOO.ngrok.io.", 40).is_empty());
        assert_eq!(v.held.repeat, 2);
        // another host with the same name is another sighting
        assert_eq!(sni_alerts(&mut v, "10.1.0.6", "foo.ngrok.io", 50), first);
        // after realert_after the same sighting speaks again
        assert_eq!(sni_alerts(&mut v, host, "foo.ngrok.io", 3700), first);
    }

    #[test]
    fn time_running_backwards_never_suppresses() {
        for site in ["", "[ledger]\nrealert_after = \"0s\"\n"] {
            let mut v = verdicts(site);
            let first = sni_alerts(&mut v, "10.1.0.5", "foo.ngrok.io", 100);
            assert!(!first.is_empty());
            assert_eq!(
                sni_alerts(&mut v, "10.1.0.5", "foo.ngrok.io", 50),
                first,
                "{site}"
            );
            assert_eq!(v.held.repeat, 0, "{site}");
        }
    }
}
