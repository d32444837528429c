//! The fact model: every fact a signature can test, declared once.
//!
//! A fact has a name (the key a signature writes), a [`Shape`] (how a
//! condition on it is written, validated and matched) and a [`Source`] (where
//! its values are read: set on the event by an analyzer, or read from the
//! certificate chain). Signature parsing, validation, evaluation and the owned
//! copy of an event's facts that crosses to the verdict stage all derive from
//! [`FACTS`]; adding a fact is one line there plus the analyzer that sets it.
//!
//! The table's order is the order in which a signature's conditions are
//! evaluated and their evidence listed.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::analyzer::tls::cert::CertInfo;

/// How a condition on a fact is written and matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// DNS names: `{ exact = […], suffix = […] }`, label-aligned, ignoring
    /// case and a trailing dot; indexed in one suffix trie per fact.
    Name,
    /// Text: `{ exact, prefix, contains, regex }`, ASCII case-insensitive.
    Text,
    /// A list of integers in `min..=max`, one of which must equal the fact.
    Numbers { min: i64, max: i64, shown: Shown },
    /// A list of hex digests of this many digits, compared ignoring case.
    Hex(usize),
    /// JA4 fingerprints, or prefixes of one ending in `*`.
    Ja4,
    /// Certificate extension OIDs: `{ all = […], none = […] }`.
    Extensions,
    /// `true` or `false`.
    Flag,
    /// A count that state kept across flows must reach (at least 2).
    Threshold,
}

/// What a matched number condition shows as evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Nothing (the fact is context, not evidence).
    Nothing,
    /// The value, as value and pattern.
    Value,
    /// The value, and the whole list as the pattern.
    List,
}

/// Values a certificate gives for a fact.
pub type CertValues<'a> = SmallVec<[&'a str; 2]>;

/// Where a fact's values come from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// Set on the event by an analyzer ([`Facts::push`], [`Facts::set`]).
    Event,
    /// Each certificate of the chain; a signature's conditions on facts of
    /// this source must all hold on one certificate.
    EachCert(for<'c> fn(&'c CertInfo) -> CertValues<'c>),
    /// Any certificate of the chain, each condition on its own.
    AnyCert(for<'c> fn(&'c CertInfo) -> CertValues<'c>),
    /// The leaf certificate.
    Leaf(for<'c> fn(&'c CertInfo) -> CertValues<'c>),
    /// A number read from the chain as a whole (not set when it is empty).
    Chain(fn(&[Arc<CertInfo>]) -> Option<i64>),
    /// A number read from the leaf certificate.
    LeafNumber(fn(&CertInfo) -> i64),
    /// State the verdict stage keeps across flows (the shared-key tracker).
    CrossFlow,
}

/// The bit of [`Facts::present`] that says the chain is not empty.
pub const CHAIN_BIT: u64 = 1 << 63;

/// One fact.
#[derive(Debug, Clone, Copy)]
pub struct Decl {
    pub fact: Fact,
    pub name: &'static str,
    pub shape: Shape,
    pub source: Source,
    /// Too common to make a signature alone (ports, status codes, counts).
    pub weak: bool,
    /// A name the site's allow-list is checked against.
    pub allow_listed: bool,
}

fn one(v: Option<&str>) -> CertValues<'_> {
    v.into_iter().collect()
}

fn all(v: &[String]) -> CertValues<'_> {
    v.iter().map(String::as_str).collect()
}

const NUM_SHOWN: Shape = Shape::Numbers {
    min: 0,
    max: 65_535,
    shown: Shown::Value,
};
const PORT: Shape = Shape::Numbers {
    min: 0,
    max: 65_535,
    shown: Shown::Nothing,
};
const COUNT: Shape = Shape::Numbers {
    min: 0,
    max: u32::MAX as i64,
    shown: Shown::Nothing,
};
const DAYS: Shape = Shape::Numbers {
    min: i64::MIN,
    max: i64::MAX,
    shown: Shown::List,
};

macro_rules! facts {
    ($( $(#[$doc:meta])* $v:ident = $name:literal, $shape:expr, $source:expr $(, $flag:ident)* ; )*) => {
        /// A fact signatures can test (see [`FACTS`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Fact {
            $( $(#[$doc])* $v, )*
        }

        /// Every fact, in evaluation order.
        pub const FACTS: &[Decl] = &[
            $( Decl {
                fact: Fact::$v,
                name: $name,
                shape: $shape,
                source: $source,
                weak: facts!(@has weak $($flag)*),
                allow_listed: facts!(@has allow $($flag)*),
            }, )*
        ];
    };
    (@has $want:ident) => { false };
    (@has weak weak $($rest:ident)*) => { true };
    (@has allow allow $($rest:ident)*) => { true };
    (@has $want:ident $other:ident $($rest:ident)*) => { facts!(@has $want $($rest)*) };
}

facts! {
    /// The TLS ClientHello's server name.
    Sni = "sni", Shape::Name, Source::Event, allow;
    /// Names asked in a DNS query.
    DnsQuery = "dns_query", Shape::Name, Source::Event, allow;
    /// Names in DNS answers (owner names and name-valued data).
    DnsAnswer = "dns_answer", Shape::Name, Source::Event;
    /// An HTTP request's host (the Host header).
    HttpHost = "http_host", Shape::Name, Source::Event, allow;
    /// The target of an HTTP CONNECT.
    HttpConnect = "http_connect", Shape::Name, Source::Event, allow;
    /// The leaf certificate's subject alternative names.
    CertSan = "cert_san", Shape::Name, Source::Leaf(|c| all(&c.san));
    /// An HTTP request's path.
    HttpUrl = "http_url", Shape::Text, Source::Event;
    HttpServer = "http_server", Shape::Text, Source::Event;
    /// The `<title>` of an HTML response.
    HttpTitle = "http_title", Shape::Text, Source::Event;
    HttpReason = "http_reason", Shape::Text, Source::Event;
    /// A response's Set-Cookie.
    HttpCookie = "http_cookie", Shape::Text, Source::Event;
    HttpUserAgent = "http_user_agent", Shape::Text, Source::Event;
    CertSubjectCn = "cert_subject_cn", Shape::Text, Source::EachCert(|c| one(c.subject_cn.as_deref()));
    CertSubjectO = "cert_subject_o", Shape::Text, Source::EachCert(|c| one(c.subject_o.as_deref()));
    CertSubjectOu = "cert_subject_ou", Shape::Text, Source::EachCert(|c| one(c.subject_ou.as_deref()));
    CertIssuerCn = "cert_issuer_cn", Shape::Text, Source::EachCert(|c| one(c.issuer_cn.as_deref()));
    CertIssuerO = "cert_issuer_o", Shape::Text, Source::EachCert(|c| one(c.issuer_o.as_deref()));
    CertIssuerOu = "cert_issuer_ou", Shape::Text, Source::EachCert(|c| one(c.issuer_ou.as_deref()));
    CertCrlUrl = "cert_crl_url", Shape::Text, Source::EachCert(|c| all(&c.crl_urls));
    HttpStatus = "http_status", NUM_SHOWN, Source::Event, weak;
    HttpHeaderCount = "http_header_count", COUNT, Source::Event, weak;
    CertSha256 = "cert_sha256", Shape::Hex(64), Source::AnyCert(|c| one(Some(&c.sha256)));
    CertSpkiSha256 = "cert_spki_sha256", Shape::Hex(64), Source::AnyCert(|c| one(Some(&c.spki_sha256)));
    Ja3 = "ja3", Shape::Hex(32), Source::Event;
    Ja4 = "ja4", Shape::Ja4, Source::Event;
    /// The protocols a ClientHello offers (ALPN, RFC 7301), TLS or QUIC.
    Alpn = "alpn", Shape::Text, Source::Event;
    /// Set by the verdict stage: a host sent its own ClientHello for a name
    /// it had just received one for (an intercepting proxy's two legs); the
    /// value names the legs.
    TlsReoriginated = "tls_reoriginated", Shape::Flag, Source::Event;
    /// The server's port.
    DestPort = "dest_port", PORT, Source::Event, weak;
    /// Certificates in the server's chain.
    ChainLen = "chain_len", COUNT, Source::Chain(|c| (!c.is_empty()).then_some(c.len() as i64)), weak;
    LeafValidityDays = "leaf_validity_days", DAYS, Source::LeafNumber(|c| c.validity_days);
    LeafExtensions = "leaf_extensions", Shape::Extensions, Source::Leaf(|c| all(&c.extensions));
    LeafSelfSigned = "leaf_self_signed", Shape::Flag, Source::LeafNumber(|c| i64::from(c.subject == c.issuerdn));
    /// Stateful: the leaf's public key has been seen on certificates for at
    /// least this many unrelated names (a proxy signing every leaf with one key).
    SharedSpkiNames = "shared_spki_names", Shape::Threshold, Source::CrossFlow;
}

impl Fact {
    pub fn decl(self) -> &'static Decl {
        &FACTS[self as usize]
    }

    /// This fact's bit in [`Facts::present`] (facts past the 63rd would
    /// share bits: a shared bit only makes the test less selective).
    pub fn bit(self) -> u64 {
        1 << (self as u32 % 63)
    }

    pub fn name(self) -> &'static str {
        self.decl().name
    }

    pub fn by_name(name: &str) -> Option<Fact> {
        FACTS.iter().find(|d| d.name == name).map(|d| d.fact)
    }
}

/// Everything the analyzers know about one event, for matching: the values
/// they set, and the certificate chain the certificate facts are read from.
/// Borrowed from the event; most events fit inline (no allocation).
#[derive(Debug, Default, Clone)]
pub struct Facts<'a> {
    strs: SmallVec<[(Fact, &'a str); 6]>,
    nums: SmallVec<[(Fact, i64); 3]>,
    pub chain: &'a [Arc<CertInfo>],
    /// The chain as another copy of the server's bytes had it (see
    /// `reassembly`): signatures are evaluated on each chain.
    pub other_chain: &'a [Arc<CertInfo>],
}

impl<'a> Facts<'a> {
    /// Facts about a certificate chain (values added with [`push`](Self::push)).
    pub fn of_chain(chain: &'a [Arc<CertInfo>]) -> Self {
        Facts {
            chain,
            ..Default::default()
        }
    }

    /// Adds a value of a text-valued fact the analyzer sets (one of several
    /// for list facts such as `dns_query`).
    pub fn push(&mut self, fact: Fact, value: &'a str) {
        debug_assert!(matches!(fact.decl().source, Source::Event));
        self.strs.push((fact, value));
    }

    /// Adds the value if there is one.
    pub fn push_opt(&mut self, fact: Fact, value: Option<&'a str>) {
        if let Some(v) = value {
            self.push(fact, v);
        }
    }

    /// Sets a number-valued fact.
    pub fn set(&mut self, fact: Fact, value: i64) {
        debug_assert!(matches!(fact.decl().source, Source::Event));
        self.nums.push((fact, value));
    }

    /// The values of a fact the analyzer set, in the order they were set.
    pub fn values(&self, fact: Fact) -> impl Iterator<Item = &'a str> + '_ {
        self.strs
            .iter()
            .filter(move |(f, _)| *f == fact)
            .map(|(_, v)| *v)
    }

    /// Which facts have a value here, as bits by [`Fact::bit`]; the chain's
    /// facts as [`CHAIN_BIT`] when there is a chain.
    pub fn present(&self) -> u64 {
        let set = self
            .strs
            .iter()
            .map(|(f, _)| f)
            .chain(self.nums.iter().map(|(f, _)| f));
        let chain = if self.chain.is_empty() { 0 } else { CHAIN_BIT };
        set.fold(chain, |m, f| m | f.bit())
    }

    pub fn number(&self, fact: Fact) -> Option<i64> {
        self.nums.iter().find(|(f, _)| *f == fact).map(|(_, n)| *n)
    }

    /// Every value, in order, as bytes that differ whenever the facts do
    /// (each part counted, each value's length given, each certificate by
    /// its SHA-256, which every other certificate fact is read from): a key
    /// under which to remember what a pure function of the facts gave.
    pub fn write_key(&self, out: &mut Vec<u8>) {
        let count = |out: &mut Vec<u8>, n: usize| out.extend_from_slice(&(n as u32).to_le_bytes());
        let bytes = |out: &mut Vec<u8>, b: &[u8]| {
            count(out, b.len());
            out.extend_from_slice(b);
        };
        count(out, self.strs.len());
        for (f, v) in &self.strs {
            out.extend_from_slice(&(*f as u16).to_le_bytes());
            bytes(out, v.as_bytes());
        }
        count(out, self.nums.len());
        for (f, n) in &self.nums {
            out.extend_from_slice(&(*f as u16).to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        for chain in [self.chain, self.other_chain] {
            count(out, chain.len());
            for c in chain {
                bytes(out, c.sha256.as_bytes());
            }
        }
    }

    /// Every name this event carries that the allow-list is checked against.
    pub fn names(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.strs
            .iter()
            .filter(|(f, _)| f.decl().allow_listed)
            .map(|(_, v)| *v)
    }
}

/// [`Facts`], owned: what crosses to the verdict stage with a pending event.
#[derive(Debug, Default, Clone)]
pub struct OwnedFacts {
    strs: Vec<(Fact, String)>,
    nums: Vec<(Fact, i64)>,
    chain: Vec<Arc<CertInfo>>,
    other_chain: Vec<Arc<CertInfo>>,
}

impl OwnedFacts {
    pub fn of(f: &Facts<'_>) -> Self {
        OwnedFacts {
            strs: f.strs.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            nums: f.nums.to_vec(),
            chain: f.chain.to_vec(),
            other_chain: f.other_chain.to_vec(),
        }
    }

    pub fn facts(&self) -> Facts<'_> {
        Facts {
            strs: self.strs.iter().map(|(k, v)| (*k, v.as_str())).collect(),
            nums: self.nums.iter().copied().collect(),
            chain: &self.chain,
            other_chain: &self.other_chain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_indexed_by_the_enum_and_names_are_unique() {
        for (i, d) in FACTS.iter().enumerate() {
            assert_eq!(d.fact as usize, i, "{}", d.name);
            assert_eq!(Fact::by_name(d.name), Some(d.fact));
        }
        assert_eq!(Fact::by_name("snii"), None);
        assert!(Fact::DestPort.decl().weak && !Fact::Sni.decl().weak);
        assert!(Fact::HttpConnect.decl().allow_listed && !Fact::DnsAnswer.decl().allow_listed);
    }

    #[test]
    fn owned_facts_round_trip() {
        let mut f = Facts::default();
        f.push(Fact::DnsQuery, "a.example");
        f.push(Fact::DnsQuery, "b.example");
        f.push(Fact::DnsAnswer, "c.example");
        f.set(Fact::DestPort, 53);
        let o = OwnedFacts::of(&f);
        let g = o.facts();
        assert_eq!(
            g.values(Fact::DnsQuery).collect::<Vec<_>>(),
            ["a.example", "b.example"]
        );
        assert_eq!(g.names().collect::<Vec<_>>(), ["a.example", "b.example"]);
        assert_eq!(g.number(Fact::DestPort), Some(53));
        assert_eq!(g.values(Fact::Sni).next(), None);
    }
}
