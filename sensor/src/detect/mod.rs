//! Detection: signatures × facts → matches with their evidence.
//!
//! Analyzers expose [`Facts`] (names, HTTP head fields, certificates,
//! fingerprints: the model is declared once, in `analyzer::facts`); a compiled
//! [`RuleSet`] finds the signatures they match and the evidence. What a match
//! means for a host (severity, the allow-list, the ledger, suppression) is the
//! verdict stage's (`crate::verdict`); the findings it logs ([`AlertOut`],
//! [`Activity`]) are declared here. Sans-IO: signature text comes in as text.

mod certtext;
mod findings;
mod matcher;
pub mod names;
pub mod precheck;
pub mod rules;

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::analyzer::facts::{Shape, Shown, Source, FACTS};
use crate::analyzer::tls::cert::CertInfo;
use crate::config::Segment;
use matcher::TextMatcher;
use names::{Kind, NameIndex};
use rules::{Cond, ExtCond, Signature};

pub use crate::analyzer::facts::{self, Fact, Facts, OwnedFacts};
pub use findings::{Activity, AlertOut, SightingStat, LONG_RUNNING_ID, SIGHTINGS_PER_ENTRY};

/// Which fact matched which pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub fact: &'static str,
    pub value: String,
    pub pattern: String,
    /// What makes two sightings the same when the value alone does not (the
    /// shared-key condition: the key; its value also counts certificates).
    #[serde(skip)]
    pub key: Option<String>,
}

impl Evidence {
    /// What this evidence says about what was seen, for telling a new
    /// sighting from a repeat: its key if it has one, else the value, as DNS
    /// compares names (case and a final dot aside).
    pub fn identity(&self) -> String {
        let v = self.key.as_deref().unwrap_or(&self.value);
        v.trim_end_matches('.').to_ascii_lowercase()
    }
}

/// A condition, compiled.
#[derive(Debug)]
enum Test {
    /// Holds when the name index found one of the signature's names.
    Name,
    Text(TextMatcher),
    Numbers(Vec<i64>),
    /// Lower-case hex digests, compared ignoring case.
    Hex(Vec<String>),
    /// Lower-case JA4 fingerprints and prefixes (`…*`).
    Ja4(Vec<String>),
    Extensions(ExtCond),
    Flag(bool),
    Threshold(usize),
}

/// A signature ready to evaluate: its conditions in the order of [`FACTS`].
#[derive(Debug)]
pub struct Compiled {
    pub sig: Signature,
    conds: Vec<(Fact, Test)>,
    /// Has conditions on each certificate's text (`on_one_cert`).
    cert_text: bool,
    /// The facts ([`Facts::present`]) without which a condition cannot
    /// hold: a value set on the event, or a chain.
    needs: u64,
}

/// A name the index found: (signature, fact, value, pattern as shown).
type Hit<'a> = (usize, Fact, &'a str, &'a str);

/// The next rule set's id.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// All signatures, compiled: names go into one suffix trie per fact.
#[derive(Debug)]
pub struct RuleSet {
    pub sigs: Vec<Compiled>,
    names: Vec<(Fact, NameIndex)>,
    /// (signature index, pattern text) by name tag.
    tags: Vec<(usize, String)>,
    /// Signatures without a name condition: evaluated on every event.
    unindexed: Vec<usize>,
    /// Signatures with conditions on each certificate's text.
    text_sigs: Vec<u32>,
    /// This rule set among those made in the process (what a certificate's
    /// remembered text hits belong to).
    id: u64,
}

impl RuleSet {
    pub fn compile(sigs: Vec<Signature>) -> RuleSet {
        let mut set = RuleSet {
            sigs: Vec::new(),
            names: FACTS
                .iter()
                .filter(|d| d.shape == Shape::Name)
                .map(|d| (d.fact, NameIndex::default()))
                .collect(),
            tags: Vec::new(),
            unindexed: Vec::new(),
            text_sigs: Vec::new(),
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        let low = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect();
        for (i, sig) in sigs.into_iter().enumerate() {
            let mut conds = Vec::new();
            for (fact, c) in &sig.raw.conds {
                let test = match c {
                    Cond::Name(n) => {
                        set.index(i, *fact, &n.exact, &n.suffix);
                        Test::Name
                    }
                    Cond::Text(t) => Test::Text(TextMatcher::new(t)),
                    Cond::Numbers(l) => Test::Numbers(l.clone()),
                    Cond::Strings(l) if fact.decl().shape == Shape::Ja4 => Test::Ja4(low(l)),
                    Cond::Strings(l) => Test::Hex(low(l)),
                    Cond::Extensions(x) => Test::Extensions(x.clone()),
                    Cond::Flag(b) => Test::Flag(*b),
                    Cond::Threshold(n) => Test::Threshold(*n),
                };
                conds.push((*fact, test));
            }
            if !conds.iter().any(|(_, t)| matches!(t, Test::Name)) {
                set.unindexed.push(i);
            }
            let cert_text = conds.iter().any(|(fact, t)| {
                matches!(
                    (t, fact.decl().source),
                    (Test::Text(_), Source::EachCert(_))
                )
            });
            if cert_text {
                set.text_sigs.push(i as u32);
            }
            let needs = conds.iter().fold(0, |m, (fact, t)| {
                m | match (fact.decl().source, t) {
                    (Source::Event, _) => fact.bit(),
                    (Source::CrossFlow, Test::Threshold(_)) => facts::CHAIN_BIT,
                    (Source::CrossFlow, _) => 0,
                    _ => facts::CHAIN_BIT,
                }
            });
            set.sigs.push(Compiled {
                sig,
                conds,
                cert_text,
                needs,
            });
        }
        set
    }

    /// Puts signature `sig`'s names for `fact` into that fact's index.
    fn index(&mut self, sig: usize, fact: Fact, exact: &[String], suffix: &[String]) {
        let Some((_, ix)) = self.names.iter_mut().find(|(f, _)| *f == fact) else {
            return;
        };
        for (kind, list) in [(Kind::Exact, exact), (Kind::Suffix, suffix)] {
            for p in list {
                ix.insert(p, kind, self.tags.len() as u32);
                let shown = match kind {
                    Kind::Exact => names::normalize(p),
                    Kind::Suffix => format!("*.{}", names::normalize(p)),
                };
                self.tags.push((sig, shown));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.sigs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sigs.is_empty()
    }

    /// Could some signature match these facts, whatever the cross-flow state?
    pub fn may_match(&self, f: &Facts<'_>) -> bool {
        !self.evaluate(f, None).is_empty()
    }

    /// Signatures that match, with their evidence, in signature order.
    ///
    /// Without a key tracker (`spki` None) the shared-key condition holds for
    /// any leaf: that is how a worker finds the events that *may* match
    /// before the verdict stage, which owns the tracker, decides.
    pub fn evaluate(
        &self,
        f: &Facts<'_>,
        spki: Option<&dyn KeySpread>,
    ) -> Vec<(usize, Vec<Evidence>)> {
        let mut out = self.evaluate_chain(f, spki);
        if !f.other_chain.is_empty() {
            // the server's other version: its chain's matches count too
            let mut other = f.clone();
            other.chain = f.other_chain;
            other.other_chain = &[];
            for (i, ev) in self.evaluate_chain(&other, spki) {
                if !out.iter().any(|(j, _)| *j == i) {
                    out.push((i, ev));
                }
            }
            out.sort_by_key(|(i, _)| *i);
        }
        out
    }

    fn evaluate_chain(
        &self,
        f: &Facts<'_>,
        spki: Option<&dyn KeySpread>,
    ) -> Vec<(usize, Vec<Evidence>)> {
        let hits = self.name_hits(f);
        // the signatures some name was found for, and those without a name
        // condition, in signature order, each once
        let mut named: smallvec::SmallVec<[usize; 8]> = hits.iter().map(|h| h.0).collect();
        named.sort_unstable();
        named.dedup();
        let mut out = Vec::new();
        let have = f.present();
        let text = self.chain_text(f.chain);
        let on_a_cert = |i: usize| text.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0);
        let (mut a, mut b) = (named.iter().peekable(), self.unindexed.iter().peekable());
        loop {
            let i = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x < y => a.next(),
                (Some(&&x), Some(&&y)) if x > y => b.next(),
                (Some(_), Some(_)) => {
                    b.next();
                    a.next()
                }
                (Some(_), None) => a.next(),
                (None, _) => b.next(),
            };
            let Some(&i) = i else { break };
            if self.sigs[i].needs & !have != 0 {
                continue; // a fact it tests has no value here
            }
            if self.sigs[i].cert_text && !on_a_cert(i) {
                continue; // no one certificate holds its text conditions
            }
            if let Some(ev) = self.check(i, f, &hits, spki) {
                out.push((i, ev));
            }
        }
        out
    }

    /// Every (signature, name) the name indexes find in these facts.
    fn name_hits<'s, 'f: 's>(&'s self, f: &'s Facts<'f>) -> Vec<Hit<'s>> {
        let mut hits = Vec::new();
        let leaf = f.chain.first();
        for (fact, ix) in &self.names {
            if ix.is_empty() {
                continue;
            }
            let mut look = |v: &'f str| {
                ix.lookup(v, &mut |t| {
                    if let Some((sig, pat)) = self.tags.get(t as usize) {
                        hits.push((*sig, *fact, v, pat.as_str()));
                    }
                })
            };
            match fact.decl().source {
                Source::Event => f.values(*fact).for_each(&mut look),
                Source::Leaf(read) => leaf
                    .into_iter()
                    .for_each(|c| read(c).into_iter().for_each(&mut look)),
                _ => {}
            }
        }
        hits
    }
}

/// A number-valued fact's value for this event.
fn number(f: &Facts<'_>, fact: Fact) -> Option<i64> {
    match fact.decl().source {
        Source::Event => f.number(fact),
        Source::Chain(read) => read(f.chain),
        Source::LeafNumber(read) => f.chain.first().map(|c| read(c)),
        _ => None,
    }
}

/// The first of `list` that equals `value` ignoring case, as evidence.
fn listed(fact: Fact, value: &str, list: &[String], ev: &mut Vec<Evidence>) -> bool {
    let hit = list.iter().find(|p| p.eq_ignore_ascii_case(value));
    if let Some(p) = hit {
        ev.push(Evidence {
            fact: fact.name(),
            value: value.to_string(),
            pattern: p.clone(),
            key: None,
        });
    }
    hit.is_some()
}

/// Does one condition hold? Pushes its evidence if it does. Conditions on
/// each certificate's text are checked together afterwards (`on_one_cert`).
fn holds(
    fact: Fact,
    test: &Test,
    f: &Facts<'_>,
    name_hit: Option<&Hit>,
    spki: Option<&dyn KeySpread>,
    ev: &mut Vec<Evidence>,
) -> bool {
    let leaf = f.chain.first().map(|c| &**c);
    let source = fact.decl().source;
    let mut show = |value: String, pattern: String| {
        ev.push(Evidence {
            fact: fact.name(),
            value,
            pattern,
            key: None,
        })
    };
    match (test, source) {
        (Test::Name, _) => name_hit.is_some_and(|h| {
            show(h.2.to_string(), h.3.to_string());
            true
        }),
        (Test::Text(_), Source::EachCert(_)) => true,
        (Test::Text(m), _) => {
            let hit = f.values(fact).find_map(|v| m.find(v).map(|p| (v, p)));
            hit.is_some_and(|(v, p)| {
                show(v.to_string(), p);
                true
            })
        }
        (Test::Numbers(l), _) => number(f, fact).is_some_and(|n| {
            let ok = l.contains(&n);
            match fact.decl().shape {
                Shape::Numbers {
                    shown: Shown::Value,
                    ..
                } if ok => show(n.to_string(), n.to_string()),
                Shape::Numbers {
                    shown: Shown::List, ..
                } if ok => show(n.to_string(), format!("{l:?}")),
                _ => {}
            }
            ok
        }),
        (Test::Hex(l), Source::AnyCert(read)) => f
            .chain
            .iter()
            .any(|c| read(c).iter().any(|v| listed(fact, v, l, ev))),
        (Test::Hex(l), _) => f.values(fact).any(|v| listed(fact, v, l, ev)),
        (Test::Ja4(l), _) => f.values(fact).any(|j| ja4_listed(j, l, &mut show)),
        (Test::Extensions(x), Source::Leaf(read)) => leaf.is_some_and(|c| {
            let have = read(c);
            let ok = x.all.iter().all(|o| have.contains(&o.as_str()))
                && !x.none.iter().any(|o| have.contains(&o.as_str()));
            if ok {
                show(
                    have.join(","),
                    format!("all {:?}, none {:?}", x.all, x.none),
                );
            }
            ok
        }),
        (Test::Flag(want), _) => number(f, fact).is_some_and(|n| {
            let ok = (n != 0) == *want;
            // a flag the verdict stage sets says what it rests on
            if let (true, Some(v)) = (ok, f.values(fact).next()) {
                show(v.to_string(), want.to_string());
            }
            ok
        }),
        (Test::Threshold(_), _) if spki.is_none() => leaf.is_some(),
        (Test::Threshold(n), _) => leaf.is_some_and(|c| shared_key(c, *n, spki, ev)),
        _ => false,
    }
}

/// Is the fingerprint one of `l`, or does it start with one ending in `*`?
fn ja4_listed(j: &str, l: &[String], show: &mut impl FnMut(String, String)) -> bool {
    let hit = l.iter().find(|p| match p.strip_suffix('*') {
        Some(prefix) => j.starts_with(prefix),
        None => p.as_str() == j,
    });
    if let Some(p) = hit {
        show(j.to_string(), p.clone());
    }
    hit.is_some()
}

/// Has the leaf's key signed certificates for at least `n` unrelated names?
fn shared_key(
    c: &CertInfo,
    n: usize,
    spki: Option<&dyn KeySpread>,
    ev: &mut Vec<Evidence>,
) -> bool {
    let (certs, names) = spki.map(|t| t.spread(&c.spki_sha256)).unwrap_or_default();
    let ok = certs >= n;
    if ok {
        ev.push(Evidence {
            fact: Fact::SharedSpkiNames.name(),
            value: format!(
                "key {} on {certs} certificates for {}",
                c.spki_sha256,
                names.join(", ")
            ),
            pattern: format!(">= {n} certificates for unrelated names"),
            // the count grows with every site the proxy forges for: the key
            // is what stays the same
            key: Some(c.spki_sha256.clone()),
        });
    }
    ok
}

/// The certificate of a chain the shared-key tracker takes note of: a lone
/// leaf (what proxies send) that is not self-signed.
pub fn lone_leaf(chain: &[Arc<CertInfo>]) -> Option<&Arc<CertInfo>> {
    match chain {
        [leaf] if !leaf.spki_sha256.is_empty() && leaf.subject != leaf.issuerdn => Some(leaf),
        _ => None,
    }
}

/// What the `shared_spki_names` condition asks of the state kept across flows.
pub trait KeySpread {
    /// How many certificates with this key each brought a new unrelated name,
    /// and the names. One certificate with many names counts once: a CDN
    /// certificate is not a proxy.
    fn spread(&self, spki: &str) -> (usize, Vec<String>);
}

/// The two ends of a flow, with the segments the flow was placed in.
#[derive(Debug, Clone, Copy)]
pub struct Ends<'a> {
    pub client: IpAddr,
    pub server: IpAddr,
    pub client_seg: Option<&'a Segment>,
    pub server_seg: Option<&'a Segment>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> RuleSet {
        RuleSet::compile(rules::parse_file("t.toml", text).expect("valid"))
    }

    const HEAD: &str = "format = 1\n[[signature]]\nid = 1\nname = \"n\"\ntool = \"t\"\ncategory = \"interception-cert\"\nconfidence = \"high\"\n";

    fn cert(subject_cn: &str, issuer_cn: &str, issuer_o: &str) -> Arc<CertInfo> {
        Arc::new(CertInfo {
            subject: format!("CN={subject_cn}"),
            issuerdn: format!("CN={issuer_cn}, O={issuer_o}"),
            subject_cn: Some(subject_cn.into()),
            issuer_cn: Some(issuer_cn.into()),
            issuer_o: Some(issuer_o.into()),
            spki_sha256: "aa".into(),
            sha256: subject_cn.into(),
            ..Default::default()
        })
    }

    #[test]
    fn cert_conditions_hold_on_one_certificate() {
        let r = set(&format!("{HEAD}cert_issuer_cn = {{ exact = [\"mitmproxy\"] }}\ncert_issuer_o = {{ exact = [\"mitmproxy\"] }}\n"));
        let chain = [cert("a.example", "mitmproxy", "mitmproxy")];
        let f = Facts::of_chain(&chain);
        let v = r.evaluate(&f, None);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].1[0].fact, "cert_issuer_cn");
        // CN on one certificate and O on another do not make a match
        let chain = [
            cert("a.example", "mitmproxy", "Other"),
            cert("b", "Other", "mitmproxy"),
        ];
        let f = Facts::of_chain(&chain);
        assert!(r.evaluate(&f, None).is_empty());
    }

    #[test]
    fn name_and_text_conditions_combine() {
        let r = set(&format!("{HEAD}http_host = {{ exact = [\"mitm.it\"] }}\nhttp_url = {{ prefix = [\"/cert/\"] }}\n"));
        let mut f = Facts::default();
        f.push(Fact::HttpHost, "MITM.IT");
        f.push(Fact::HttpUrl, "/cert/pem");
        let v = r.evaluate(&f, None);
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].1[0],
            Evidence {
                fact: "http_host",
                value: "MITM.IT".into(),
                pattern: "mitm.it".into(),
                key: None,
            }
        );
        assert_eq!(v[0].1[1].pattern, "/cert/*");
        let mut f = Facts::default();
        f.push(Fact::HttpHost, "MITM.IT");
        f.push(Fact::HttpUrl, "/");
        assert!(r.evaluate(&f, None).is_empty());
    }

    /// A signature is skipped when a fact it tests has no value, and only
    /// then: an event value and a chain each required, and enough together.
    #[test]
    fn signatures_needing_an_absent_fact_are_skipped_and_only_those() {
        let r = set(&format!("{HEAD}http_server = {{ exact = [\"x\"] }}\ncert_issuer_o = {{ exact = [\"mitmproxy\"] }}\n"));
        let chain = [cert("leaf", "ca", "mitmproxy")];
        let both = {
            let mut f = Facts::of_chain(&chain);
            f.push(Fact::HttpServer, "x");
            f
        };
        assert_eq!(both.present() & facts::CHAIN_BIT, facts::CHAIN_BIT);
        assert_eq!(r.evaluate(&both, None).len(), 1);
        let mut no_chain = Facts::default();
        no_chain.push(Fact::HttpServer, "x");
        assert_eq!(no_chain.present(), Fact::HttpServer.bit());
        assert!(r.evaluate(&no_chain, None).is_empty());
        let no_value = Facts::of_chain(&chain);
        assert!(r.evaluate(&no_value, None).is_empty());
        assert_ne!(r.sigs[0].needs & !no_value.present(), 0);
        assert_eq!(r.sigs[0].needs & !both.present(), 0);
    }
}
