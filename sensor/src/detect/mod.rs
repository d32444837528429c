//! Detection: signatures × facts → matches with their evidence.
//!
//! Analyzers expose [`Facts`] (names, HTTP head fields, certificates,
//! fingerprints); a compiled [`RuleSet`] finds the signatures they match and
//! the evidence. What a match means for a host (severity, the allow-list, the
//! ledger, suppression) is the verdict stage's (`crate::verdict`); the
//! findings it logs ([`AlertOut`], [`Activity`]) are declared here. Sans-IO.

pub mod names;
pub mod rules;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use regex::RegexSet;
use serde::Serialize;

use crate::analyzer::tls::cert::CertInfo;
use crate::config::{Segment, SegmentKind};
use crate::time::Timestamp;
use names::{Kind, NameIndex};
use rules::{Confidence, ExtCond, RawSignature, Signature, TextCond};

/// The built-in signature raised when a tool stays active on a host longer than
/// the ledger's `max_active`.
pub const LONG_RUNNING_ID: u32 = 9_000_001;

/// Everything the analyzers know about one event, for matching.
#[derive(Debug, Default, Clone)]
pub struct Facts<'a> {
    pub sni: Option<&'a str>,
    pub dns_query: Vec<&'a str>,
    pub dns_answer: Vec<&'a str>,
    pub http_host: Option<&'a str>,
    pub http_connect: Option<&'a str>,
    pub http_url: Option<&'a str>,
    pub http_server: Option<&'a str>,
    pub http_title: Option<&'a str>,
    pub http_reason: Option<&'a str>,
    pub http_cookie: Option<&'a str>,
    pub http_user_agent: Option<&'a str>,
    pub http_status: Option<u16>,
    pub http_header_count: Option<usize>,
    pub chain: &'a [Arc<CertInfo>],
    pub ja3: Option<&'a str>,
    pub ja4: Option<&'a str>,
    pub dest_port: u16,
}

impl Facts<'_> {
    /// Every name this event carries (for the allow-list).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sni
            .into_iter()
            .chain(self.dns_query.iter().copied())
            .chain(self.http_host)
            .chain(self.http_connect)
    }
}

/// Which fact matched which pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub fact: &'static str,
    pub value: String,
    pub pattern: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NameFact {
    Sni,
    DnsQuery,
    DnsAnswer,
    HttpHost,
    HttpConnect,
    CertSan,
}

const NAME_FACTS: [(NameFact, &str); 6] = [
    (NameFact::Sni, "sni"),
    (NameFact::DnsQuery, "dns_query"),
    (NameFact::DnsAnswer, "dns_answer"),
    (NameFact::HttpHost, "http_host"),
    (NameFact::HttpConnect, "http_connect"),
    (NameFact::CertSan, "cert_san"),
];

#[derive(Debug, Clone, Copy)]
enum TextFact {
    HttpUrl,
    HttpServer,
    HttpTitle,
    HttpReason,
    HttpCookie,
    HttpUserAgent,
    SubjectCn,
    SubjectO,
    SubjectOu,
    IssuerCn,
    IssuerO,
    IssuerOu,
    CrlUrl,
}

impl TextFact {
    fn name(self) -> &'static str {
        match self {
            TextFact::HttpUrl => "http_url",
            TextFact::HttpServer => "http_server",
            TextFact::HttpTitle => "http_title",
            TextFact::HttpReason => "http_reason",
            TextFact::HttpCookie => "http_cookie",
            TextFact::HttpUserAgent => "http_user_agent",
            TextFact::SubjectCn => "cert_subject_cn",
            TextFact::SubjectO => "cert_subject_o",
            TextFact::SubjectOu => "cert_subject_ou",
            TextFact::IssuerCn => "cert_issuer_cn",
            TextFact::IssuerO => "cert_issuer_o",
            TextFact::IssuerOu => "cert_issuer_ou",
            TextFact::CrlUrl => "cert_crl_url",
        }
    }
    fn is_cert(self) -> bool {
        matches!(
            self,
            TextFact::SubjectCn
                | TextFact::SubjectO
                | TextFact::SubjectOu
                | TextFact::IssuerCn
                | TextFact::IssuerO
                | TextFact::IssuerOu
                | TextFact::CrlUrl
        )
    }
}

/// A compiled text condition: ASCII case-insensitive exact/prefix/contains, or regex.
#[derive(Debug)]
struct TextMatcher {
    exact: Vec<String>,
    prefix: Vec<String>,
    contains: Vec<String>,
    regex: Option<(RegexSet, Vec<String>)>,
}

impl TextMatcher {
    fn new(t: &TextCond) -> Self {
        let low = |v: &Vec<String>| v.iter().map(|s| s.to_ascii_lowercase()).collect();
        TextMatcher {
            exact: low(&t.exact),
            prefix: low(&t.prefix),
            contains: low(&t.contains),
            // validated when the file was loaded
            regex: (!t.regex.is_empty())
                .then(|| RegexSet::new(&t.regex).ok().map(|s| (s, t.regex.clone())))
                .flatten(),
        }
    }

    /// The pattern that matches `s`, as evidence. Patterns are stored lower
    /// case; `s` is compared without being copied (this runs on every
    /// certificate of every handshake).
    fn find(&self, s: &str) -> Option<String> {
        let b = s.as_bytes();
        if let Some(p) = self
            .exact
            .iter()
            .find(|p| b.eq_ignore_ascii_case(p.as_bytes()))
        {
            return Some(p.clone());
        }
        let starts = |p: &str| {
            b.get(..p.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes()))
        };
        if let Some(p) = self.prefix.iter().find(|p| starts(p)) {
            return Some(format!("{p}*"));
        }
        let contains = |p: &str| {
            let p = p.as_bytes();
            p.is_empty() || b.windows(p.len()).any(|w| w.eq_ignore_ascii_case(p))
        };
        if let Some(p) = self.contains.iter().find(|p| contains(p)) {
            return Some(format!("*{p}*"));
        }
        let (set, src) = self.regex.as_ref()?;
        set.matches(s)
            .iter()
            .next()
            .map(|i| format!("/{}/", src[i]))
    }
}

#[derive(Debug)]
enum Cond {
    Name(NameFact),
    Text(TextFact, TextMatcher),
    HttpStatus(Vec<u16>),
    HttpHeaderCount(Vec<usize>),
    CertSha256(Vec<String>),
    CertSpki(Vec<String>),
    Ja3(Vec<String>),
    Ja4(Vec<String>),
    DestPort(Vec<u16>),
    ChainLen(Vec<usize>),
    LeafValidityDays(Vec<i64>),
    LeafExtensions(ExtCond),
    LeafSelfSigned(bool),
    SharedSpki(usize),
}

/// A signature ready to evaluate.
#[derive(Debug)]
pub struct Compiled {
    pub sig: Signature,
    conds: Vec<Cond>,
}

/// All signatures, compiled: names go into one suffix trie per fact.
#[derive(Debug)]
pub struct RuleSet {
    pub sigs: Vec<Compiled>,
    names: Vec<(NameFact, NameIndex)>,
    /// (signature index, pattern text) by name tag.
    tags: Vec<(usize, String)>,
    /// Signatures without a name condition: evaluated on every event.
    unindexed: Vec<usize>,
}

impl RuleSet {
    pub fn compile(sigs: Vec<Signature>) -> RuleSet {
        let mut names: Vec<(NameFact, NameIndex)> = NAME_FACTS
            .iter()
            .map(|(f, _)| (*f, NameIndex::default()))
            .collect();
        let mut tags = Vec::new();
        let mut out = Vec::new();
        let mut unindexed = Vec::new();
        for (i, sig) in sigs.into_iter().enumerate() {
            let r = &sig.raw;
            let mut conds = Vec::new();
            let name_conds = [
                (NameFact::Sni, &r.sni),
                (NameFact::DnsQuery, &r.dns_query),
                (NameFact::DnsAnswer, &r.dns_answer),
                (NameFact::HttpHost, &r.http_host),
                (NameFact::HttpConnect, &r.http_connect),
                (NameFact::CertSan, &r.cert_san),
            ];
            for (fact, c) in name_conds {
                let Some(c) = c else { continue };
                let ix = &mut names
                    .iter_mut()
                    .find(|(f, _)| *f == fact)
                    .expect("every name fact has an index")
                    .1;
                for (kind, list) in [(Kind::Exact, &c.exact), (Kind::Suffix, &c.suffix)] {
                    for p in list {
                        ix.insert(p, kind, tags.len() as u32);
                        let shown = match kind {
                            Kind::Exact => names::normalize(p),
                            Kind::Suffix => format!("*.{}", names::normalize(p)),
                        };
                        tags.push((i, shown));
                    }
                }
                conds.push(Cond::Name(fact));
            }
            if !conds.iter().any(|c| matches!(c, Cond::Name(_))) {
                unindexed.push(i);
            }
            conds.extend(text_conds(r));
            conds.extend(other_conds(r));
            out.push(Compiled { sig, conds });
        }
        RuleSet {
            sigs: out,
            names,
            tags,
            unindexed,
        }
    }

    /// Loads and compiles signatures from `dir`, or the bundled ones.
    pub fn load(dir: Option<&std::path::Path>) -> Result<RuleSet, rules::RuleError> {
        Ok(Self::compile(rules::load(dir)?))
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
    /// before the writer, which owns the tracker, decides.
    pub fn evaluate(
        &self,
        f: &Facts<'_>,
        spki: Option<&dyn KeySpread>,
    ) -> Vec<(usize, Vec<Evidence>)> {
        // name hits: (signature, fact, value, pattern)
        let mut hits: Vec<(usize, NameFact, String, String)> = Vec::new();
        let sans: Vec<&str> = f
            .chain
            .first()
            .map(|c| c.san.iter().map(String::as_str).collect())
            .unwrap_or_default();
        for (fact, ix) in &self.names {
            if ix.is_empty() {
                continue;
            }
            let one;
            let values: &[&str] = match fact {
                NameFact::Sni => {
                    one = f.sni;
                    one.as_slice()
                }
                NameFact::DnsQuery => &f.dns_query,
                NameFact::DnsAnswer => &f.dns_answer,
                NameFact::HttpHost => {
                    one = f.http_host;
                    one.as_slice()
                }
                NameFact::HttpConnect => {
                    one = f.http_connect;
                    one.as_slice()
                }
                NameFact::CertSan => &sans,
            };
            for v in values {
                ix.lookup(v, &mut |t| {
                    if let Some((sig, pat)) = self.tags.get(t as usize) {
                        hits.push((*sig, *fact, v.to_string(), pat.clone()));
                    }
                });
            }
        }
        let mut candidates: Vec<usize> = hits
            .iter()
            .map(|h| h.0)
            .chain(self.unindexed.iter().copied())
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut out = Vec::new();
        for i in candidates {
            if let Some(ev) = self.check(&self.sigs[i], f, &hits, i, spki) {
                out.push((i, ev));
            }
        }
        out
    }

    fn check(
        &self,
        c: &Compiled,
        f: &Facts<'_>,
        hits: &[(usize, NameFact, String, String)],
        idx: usize,
        spki: Option<&dyn KeySpread>,
    ) -> Option<Vec<Evidence>> {
        let mut ev = Vec::new();
        let leaf = f.chain.first().map(|c| &**c);
        let fact_name = |nf: NameFact| {
            NAME_FACTS
                .iter()
                .find(|(f, _)| *f == nf)
                .map(|(_, n)| *n)
                .unwrap_or("name")
        };
        let any =
            |fact: &'static str, value: String, list: &[String], ev: &mut Vec<Evidence>| -> bool {
                let hit = list.iter().find(|p| p.eq_ignore_ascii_case(&value));
                if let Some(p) = hit {
                    ev.push(Evidence {
                        fact,
                        value,
                        pattern: p.clone(),
                    });
                }
                hit.is_some()
            };
        for cond in &c.conds {
            let ok = match cond {
                Cond::Name(nf) => {
                    let h = hits.iter().find(|h| h.0 == idx && h.1 == *nf);
                    if let Some(h) = h {
                        ev.push(Evidence {
                            fact: fact_name(*nf),
                            value: h.2.clone(),
                            pattern: h.3.clone(),
                        });
                    }
                    h.is_some()
                }
                Cond::Text(tf, _) if tf.is_cert() => true, // below, per certificate
                Cond::Text(tf, m) => {
                    let v = match tf {
                        TextFact::HttpUrl => f.http_url,
                        TextFact::HttpServer => f.http_server,
                        TextFact::HttpTitle => f.http_title,
                        TextFact::HttpReason => f.http_reason,
                        TextFact::HttpCookie => f.http_cookie,
                        TextFact::HttpUserAgent => f.http_user_agent,
                        _ => None,
                    };
                    match v.and_then(|v| m.find(v).map(|p| (v, p))) {
                        Some((v, p)) => {
                            ev.push(Evidence {
                                fact: tf.name(),
                                value: v.to_string(),
                                pattern: p,
                            });
                            true
                        }
                        None => false,
                    }
                }
                Cond::HttpStatus(l) => f.http_status.is_some_and(|s| {
                    let ok = l.contains(&s);
                    if ok {
                        ev.push(Evidence {
                            fact: "http_status",
                            value: s.to_string(),
                            pattern: s.to_string(),
                        });
                    }
                    ok
                }),
                Cond::HttpHeaderCount(l) => f.http_header_count.is_some_and(|n| l.contains(&n)),
                Cond::CertSha256(l) => f
                    .chain
                    .iter()
                    .any(|c| any("cert_sha256", c.sha256.clone(), l, &mut ev)),
                Cond::CertSpki(l) => f
                    .chain
                    .iter()
                    .any(|c| any("cert_spki_sha256", c.spki_sha256.clone(), l, &mut ev)),
                Cond::Ja3(l) => f.ja3.is_some_and(|j| any("ja3", j.to_string(), l, &mut ev)),
                Cond::Ja4(l) => f.ja4.is_some_and(|j| {
                    let hit = l.iter().find(|p| match p.strip_suffix('*') {
                        Some(prefix) => j.starts_with(prefix),
                        None => p.as_str() == j,
                    });
                    if let Some(p) = hit {
                        ev.push(Evidence {
                            fact: "ja4",
                            value: j.to_string(),
                            pattern: p.clone(),
                        });
                    }
                    hit.is_some()
                }),
                Cond::DestPort(l) => l.contains(&f.dest_port),
                Cond::ChainLen(l) => !f.chain.is_empty() && l.contains(&f.chain.len()),
                Cond::LeafValidityDays(l) => leaf.is_some_and(|c| {
                    let ok = l.contains(&c.validity_days);
                    if ok {
                        ev.push(Evidence {
                            fact: "leaf_validity_days",
                            value: c.validity_days.to_string(),
                            pattern: format!("{l:?}"),
                        });
                    }
                    ok
                }),
                Cond::LeafExtensions(x) => leaf.is_some_and(|c| {
                    let ok = x.all.iter().all(|o| c.extensions.contains(o))
                        && !x.none.iter().any(|o| c.extensions.contains(o));
                    if ok {
                        ev.push(Evidence {
                            fact: "leaf_extensions",
                            value: c.extensions.join(","),
                            pattern: format!("all {:?}, none {:?}", x.all, x.none),
                        });
                    }
                    ok
                }),
                Cond::LeafSelfSigned(want) => {
                    leaf.is_some_and(|c| (c.subject == c.issuerdn) == *want)
                }
                Cond::SharedSpki(_) if spki.is_none() => leaf.is_some(),
                Cond::SharedSpki(n) => leaf.is_some_and(|c| {
                    let (certs, names) = spki.map(|t| t.spread(&c.spki_sha256)).unwrap_or_default();
                    let ok = certs >= *n;
                    if ok {
                        ev.push(Evidence {
                            fact: "shared_spki_names",
                            value: format!(
                                "key {} on {certs} certificates for {}",
                                c.spki_sha256,
                                names.join(", ")
                            ),
                            pattern: format!(">= {n} certificates for unrelated names"),
                        });
                    }
                    ok
                }),
            };
            if !ok {
                return None;
            }
        }
        // Certificate text conditions must all hold on one certificate.
        let cert_conds: Vec<(&TextFact, &TextMatcher)> = c
            .conds
            .iter()
            .filter_map(|c| match c {
                Cond::Text(tf, m) if tf.is_cert() => Some((tf, m)),
                _ => None,
            })
            .collect();
        if !cert_conds.is_empty() {
            let found = f.chain.iter().enumerate().find_map(|(i, cert)| {
                let mut e = Vec::new();
                for (tf, m) in &cert_conds {
                    let vals: Vec<&str> = match tf {
                        TextFact::SubjectCn => cert.subject_cn.as_deref().into_iter().collect(),
                        TextFact::SubjectO => cert.subject_o.as_deref().into_iter().collect(),
                        TextFact::SubjectOu => cert.subject_ou.as_deref().into_iter().collect(),
                        TextFact::IssuerCn => cert.issuer_cn.as_deref().into_iter().collect(),
                        TextFact::IssuerO => cert.issuer_o.as_deref().into_iter().collect(),
                        TextFact::IssuerOu => cert.issuer_ou.as_deref().into_iter().collect(),
                        TextFact::CrlUrl => cert.crl_urls.iter().map(String::as_str).collect(),
                        _ => Vec::new(),
                    };
                    let hit = vals.iter().find_map(|v| m.find(v).map(|p| (*v, p)));
                    let (v, p) = hit?;
                    e.push(Evidence {
                        fact: tf.name(),
                        value: if i == 0 {
                            v.to_string()
                        } else {
                            format!("{v} (chain[{i}])")
                        },
                        pattern: p,
                    });
                }
                Some(e)
            });
            ev.extend(found?);
        }
        Some(ev)
    }
}

fn text_conds(r: &RawSignature) -> Vec<Cond> {
    let list = [
        (TextFact::HttpUrl, &r.http_url),
        (TextFact::HttpServer, &r.http_server),
        (TextFact::HttpTitle, &r.http_title),
        (TextFact::HttpReason, &r.http_reason),
        (TextFact::HttpCookie, &r.http_cookie),
        (TextFact::HttpUserAgent, &r.http_user_agent),
        (TextFact::SubjectCn, &r.cert_subject_cn),
        (TextFact::SubjectO, &r.cert_subject_o),
        (TextFact::SubjectOu, &r.cert_subject_ou),
        (TextFact::IssuerCn, &r.cert_issuer_cn),
        (TextFact::IssuerO, &r.cert_issuer_o),
        (TextFact::IssuerOu, &r.cert_issuer_ou),
        (TextFact::CrlUrl, &r.cert_crl_url),
    ];
    list.into_iter()
        .filter_map(|(f, c)| c.as_ref().map(|c| Cond::Text(f, TextMatcher::new(c))))
        .collect()
}

fn other_conds(r: &RawSignature) -> Vec<Cond> {
    let low = |v: &Vec<String>| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
    let mut v = Vec::new();
    if let Some(l) = &r.http_status {
        v.push(Cond::HttpStatus(l.clone()));
    }
    if let Some(l) = &r.http_header_count {
        v.push(Cond::HttpHeaderCount(l.clone()));
    }
    if let Some(l) = &r.cert_sha256 {
        v.push(Cond::CertSha256(low(l)));
    }
    if let Some(l) = &r.cert_spki_sha256 {
        v.push(Cond::CertSpki(low(l)));
    }
    if let Some(l) = &r.ja3 {
        v.push(Cond::Ja3(low(l)));
    }
    if let Some(l) = &r.ja4 {
        v.push(Cond::Ja4(low(l)));
    }
    if let Some(l) = &r.dest_port {
        v.push(Cond::DestPort(l.clone()));
    }
    if let Some(l) = &r.chain_len {
        v.push(Cond::ChainLen(l.clone()));
    }
    if let Some(l) = &r.leaf_validity_days {
        v.push(Cond::LeafValidityDays(l.clone()));
    }
    if let Some(x) = &r.leaf_extensions {
        v.push(Cond::LeafExtensions(x.clone()));
    }
    if let Some(b) = r.leaf_self_signed {
        v.push(Cond::LeafSelfSigned(b));
    }
    if let Some(n) = r.shared_spki_names {
        v.push(Cond::SharedSpki(n));
    }
    v
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

/// An alert ready to log (owned: alerts are rare).
#[derive(Debug, Clone)]
pub struct AlertOut {
    pub id: u32,
    pub rev: u32,
    pub name: String,
    pub tool: String,
    pub category: String,
    pub confidence: Confidence,
    pub references: Vec<String>,
    pub evidence: Vec<Evidence>,
    /// Other signatures of the same tool and category that matched the same
    /// event (folded into this alert rather than alerting again).
    pub also_matched: Vec<u32>,
    pub host: IpAddr,
    pub severity: u8,
    pub segment: Option<Arc<str>>,
    pub segment_kind: SegmentKind,
}

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
    pub segment_kind: SegmentKind,
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
        let f = Facts {
            chain: &chain,
            ..Default::default()
        };
        let v = r.evaluate(&f, None);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].1[0].fact, "cert_issuer_cn");
        // CN on one certificate and O on another do not make a match
        let chain = [
            cert("a.example", "mitmproxy", "Other"),
            cert("b", "Other", "mitmproxy"),
        ];
        let f = Facts {
            chain: &chain,
            ..Default::default()
        };
        assert!(r.evaluate(&f, None).is_empty());
    }

    #[test]
    fn name_and_text_conditions_combine() {
        let r = set(&format!("{HEAD}http_host = {{ exact = [\"mitm.it\"] }}\nhttp_url = {{ prefix = [\"/cert/\"] }}\n"));
        let mut f = Facts {
            http_host: Some("MITM.IT"),
            http_url: Some("/cert/pem"),
            ..Default::default()
        };
        let v = r.evaluate(&f, None);
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].1[0],
            Evidence {
                fact: "http_host",
                value: "MITM.IT".into(),
                pattern: "mitm.it".into()
            }
        );
        assert_eq!(v[0].1[1].pattern, "/cert/*");
        f.http_url = Some("/");
        assert!(r.evaluate(&f, None).is_empty());
    }
}
