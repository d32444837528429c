//! A worker's memo of the rule pre-check ([`RuleSet::may_match`]).
//!
//! Whether some signature may match a handshake's facts is a pure function
//! of the rule set and those facts, and handshakes repeat: the same clients
//! ask the same servers for the same names, with the same fingerprints, and
//! get the same certificates. The memo is keyed on the exact bytes of every
//! fact ([`Facts::write_key`], each certificate by its SHA-256), so what it
//! answers is what the rules answer, never a guess. It holds at most
//! [`MAX_ENTRIES`] keys of at most [`MAX_KEY`] bytes (facts with a longer
//! key are checked every time), starts afresh when full, and forgets
//! everything when the rules change.

use std::collections::HashMap;

use super::RuleSet;
use crate::analyzer::facts::Facts;

/// Keys remembered at most (then the memo starts afresh, counted).
pub const MAX_ENTRIES: usize = 2048;
/// The longest key remembered, in bytes: some 1.5 MiB in all at most.
pub const MAX_KEY: usize = 768;

/// What the memo did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrecheckStats {
    pub hits: u64,
    pub misses: u64,
    /// Times it was full and started afresh.
    pub resets: u64,
}

/// The memo (one per worker).
#[derive(Debug, Default)]
pub struct Precheck {
    seen: HashMap<Box<[u8]>, bool, ahash::RandomState>,
    key: Vec<u8>,
    /// The rule set the answers are of.
    rules: u64,
    pub stats: PrecheckStats,
}

impl Precheck {
    /// [`RuleSet::may_match`], remembered by the facts' key.
    pub fn may_match(&mut self, rules: &RuleSet, f: &Facts<'_>) -> bool {
        if self.rules != rules.id {
            self.seen.clear();
            self.rules = rules.id;
        }
        // (a certificate without its digest, which only tests make, would
        // stand for every other: such facts are checked every time)
        let unnamed = f
            .chain
            .iter()
            .chain(f.other_chain)
            .any(|c| c.sha256.is_empty());
        self.key.clear();
        f.write_key(&mut self.key);
        if unnamed || self.key.len() > MAX_KEY {
            return rules.may_match(f);
        }
        if let Some(&p) = self.seen.get(self.key.as_slice()) {
            self.stats.hits += 1;
            // every answer remembered is the rules' own (checked on every
            // hit in debug builds: the whole test suite runs through here)
            debug_assert_eq!(p, rules.may_match(f), "the pre-check's memo differs");
            return p;
        }
        self.stats.misses += 1;
        let p = rules.may_match(f);
        if self.seen.len() >= MAX_ENTRIES {
            self.seen.clear();
            self.stats.resets += 1;
        }
        self.seen.insert(self.key.as_slice().into(), p);
        p
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::analyzer::facts::Fact;
    use crate::analyzer::tls::cert::CertInfo;

    fn cert(sha: &str) -> Arc<CertInfo> {
        Arc::new(CertInfo {
            sha256: sha.repeat(64 / sha.len().max(1)),
            subject_cn: Some(format!("{sha}.example")),
            ..Default::default()
        })
    }

    fn tls<'a>(sni: &'a str, chain: &'a [Arc<CertInfo>]) -> Facts<'a> {
        let mut f = Facts::of_chain(chain);
        f.push(Fact::Sni, sni);
        f.push(Fact::Alpn, "h2");
        f.set(Fact::DestPort, 443);
        f
    }

    fn key(f: &Facts<'_>) -> Vec<u8> {
        let mut k = Vec::new();
        f.write_key(&mut k);
        k
    }

    /// Its answers are the rules' own, the first time and when remembered,
    /// for facts that may match (an ngrok name, a lone leaf) and facts that
    /// may not.
    #[test]
    fn remembers_what_the_rules_answer() {
        let rules = crate::load::bundled_rules();
        let (a, b) = (cert("a"), cert("b"));
        // issued by a mitmproxy CA: a certificate-text signature may match
        let m = Arc::new(CertInfo {
            issuer_cn: Some("mitmproxy".into()),
            issuer_o: Some("mitmproxy".into()),
            ..(*cert("m")).clone()
        });
        let (lone, two, mitm) = ([Arc::clone(&a)], [a, Arc::clone(&b)], [m, b]);
        let cases = [
            tls("abc.ngrok-free.app", &[]),
            tls("www.example.com", &[]),
            tls("www.example.com", &lone),
            tls("www.example.com", &two),
            tls("www.example.com", &mitm),
        ];
        let want: Vec<bool> = cases.iter().map(|f| rules.may_match(f)).collect();
        // (a lone leaf may feed the shared-key signature)
        assert_eq!(want, [true, false, true, false, true]);
        let mut memo = Precheck::default();
        let m = &mut memo;
        for round in 0..3 {
            for (f, w) in cases.iter().zip(&want) {
                assert_eq!(m.may_match(&rules, f), *w, "round {round}");
            }
        }
        assert_eq!(m.stats.misses, 5);
        assert_eq!(m.stats.hits, 10);
        // other rules: the memo forgets the first set's answers
        let none = RuleSet::compile(Vec::new());
        assert!(!m.may_match(&none, &cases[0]));
        assert_eq!(m.stats.misses, 6);
        assert!(m.may_match(&rules, &cases[0]), "the first set again");
    }

    /// Facts that differ in anything a signature can read have different
    /// keys: a value, which fact holds it, where a list of values splits, a
    /// number, a certificate, which chain a certificate is in.
    #[test]
    fn keys_differ_when_facts_do() {
        let (a, b) = ([cert("a")], [cert("b")]);
        let base = tls("x.example", &a);
        let other_value = tls("y.example", &a);
        let mut other_fact = Facts::of_chain(&a);
        other_fact.push(Fact::Alpn, "x.example");
        other_fact.push(Fact::Alpn, "h2");
        other_fact.set(Fact::DestPort, 443);
        let mut split = Facts::of_chain(&a);
        split.push(Fact::Sni, "x.exampleh");
        split.push(Fact::Alpn, "2");
        split.set(Fact::DestPort, 443);
        let mut port = Facts::of_chain(&a);
        port.push(Fact::Sni, "x.example");
        port.push(Fact::Alpn, "h2");
        port.set(Fact::DestPort, 8443);
        let other_cert = tls("x.example", &b);
        let mut moved = tls("x.example", &[]);
        moved.other_chain = &a;
        let variants = [&other_value, &other_fact, &split, &port];
        let mut keys: Vec<Vec<u8>> = variants.into_iter().map(key).collect();
        keys.push(key(&other_cert));
        keys.push(key(&moved));
        keys.push(key(&base));
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "two different facts share a key");
        assert_eq!(
            key(&base),
            key(&tls("x.example", &a)),
            "the same facts, the same key"
        );
    }

    /// Bounded: a key too long is not kept, and a full memo starts afresh.
    #[test]
    fn is_bounded() {
        let rules = crate::load::bundled_rules();
        let mut m = Precheck::default();
        let long = "a".repeat(MAX_KEY);
        let f = tls(&long, &[]);
        assert_eq!(m.may_match(&rules, &f), rules.may_match(&f));
        assert!(m.seen.is_empty());
        // nor one with a certificate that has no digest
        let anonymous = [Arc::new(CertInfo::default())];
        let f = tls("x.example", &anonymous);
        assert_eq!(m.may_match(&rules, &f), rules.may_match(&f));
        assert!(m.seen.is_empty());
        let names: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("h{i}.example")).collect();
        for n in &names {
            m.may_match(&rules, &tls(n, &[]));
        }
        assert_eq!(m.stats.resets, 1);
        assert_eq!(m.seen.len(), 1, "started afresh with the last one");
    }
}
