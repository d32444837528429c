//! Conditions on each certificate's text, and the memo that spares
//! re-checking them on a certificate seen again.
//!
//! A signature's conditions on certificate text (issuer organisation,
//! subject, …) must all hold on one certificate of the chain. Whether they
//! do is a pure function of the certificate and the signature, and a site
//! sees the same few certificates on most of its handshakes (the parser's
//! cache hands out the same `Arc<CertInfo>`): so the first rule set to ask
//! stores, in the certificate, which of its signatures hold on it. A
//! certificate another rule set filled (before a reload) is checked
//! afresh each time, never mistaken.

use std::borrow::Cow;
use std::sync::Arc;

use smallvec::SmallVec;

use super::{Compiled, Evidence, Facts, Hit, KeySpread, RuleSet, Test};
use crate::analyzer::facts::{Fact, Source};
use crate::analyzer::tls::cert::CertInfo;

/// A signature's conditions on each certificate's text.
fn text_conds(c: &Compiled) -> impl Iterator<Item = (Fact, &super::TextMatcher, CertRead)> {
    c.conds
        .iter()
        .filter_map(|(fact, t)| match (t, fact.decl().source) {
            (Test::Text(m), Source::EachCert(read)) => Some((*fact, m, read)),
            _ => None,
        })
}

type CertRead = for<'c> fn(&'c CertInfo) -> crate::analyzer::facts::CertValues<'c>;

impl RuleSet {
    /// Does signature `idx` hold on these facts? Its evidence if so.
    pub(super) fn check(
        &self,
        idx: usize,
        f: &Facts<'_>,
        hits: &[Hit],
        spki: Option<&dyn KeySpread>,
    ) -> Option<Vec<Evidence>> {
        let c = &self.sigs[idx];
        let mut ev = Vec::new();
        for (fact, test) in &c.conds {
            let hit = hits.iter().find(|h| h.0 == idx && h.1 == *fact);
            if !super::holds(*fact, test, f, hit, spki, &mut ev) {
                return None;
            }
        }
        ev.extend(self.on_one_cert(idx, f)?);
        Some(ev)
    }

    /// Signature `idx`'s conditions on certificate text must all hold on
    /// one certificate of the chain: the evidence from the first that does.
    fn on_one_cert(&self, idx: usize, f: &Facts<'_>) -> Option<Vec<Evidence>> {
        let c = &self.sigs[idx];
        if !c.cert_text {
            return Some(Vec::new());
        }
        let (i, cert) = f
            .chain
            .iter()
            .enumerate()
            .find(|(_, cert)| self.text_hits(cert).contains(&(idx as u32)))?;
        text_conds(c)
            .map(|(fact, m, read)| {
                let (v, p) = read(cert)
                    .into_iter()
                    .find_map(|v| m.find(v).map(|p| (v, p)))?;
                Some(Evidence {
                    fact: fact.name(),
                    value: if i == 0 {
                        v.to_string()
                    } else {
                        format!("{v} (chain[{i}])")
                    },
                    pattern: p,
                    key: None,
                })
            })
            .collect()
    }

    /// The signatures (indices, ascending) whose conditions on certificate
    /// text all hold on `cert`: remembered in the certificate for this rule
    /// set, computed afresh for a certificate another rule set filled.
    pub(super) fn text_hits<'c>(&self, cert: &'c CertInfo) -> Cow<'c, [u32]> {
        let memo = &cert.text_hits.0;
        let (id, hits) = match memo.get() {
            Some(m) => m,
            None => memo.get_or_init(|| (self.id, self.compute_text_hits(cert).into())),
        };
        if *id == self.id {
            Cow::Borrowed(hits)
        } else {
            Cow::Owned(self.compute_text_hits(cert))
        }
    }

    /// The signatures whose certificate-text conditions all hold on some
    /// one certificate of `chain`, as a set of indices: one look at each
    /// certificate's remembered hits for every signature at once, so a
    /// signature none of them names is passed over without being checked.
    pub(super) fn chain_text(&self, chain: &[Arc<CertInfo>]) -> SmallVec<[u64; 2]> {
        let mut set: SmallVec<[u64; 2]> = smallvec::smallvec![0; self.sigs.len().div_ceil(64)];
        for cert in chain {
            for &i in self.text_hits(cert).iter() {
                if let Some(w) = set.get_mut(i as usize / 64) {
                    *w |= 1 << (i % 64);
                }
            }
        }
        set
    }

    fn compute_text_hits(&self, cert: &CertInfo) -> Vec<u32> {
        self.text_sigs
            .iter()
            .copied()
            .filter(|&i| {
                text_conds(&self.sigs[i as usize])
                    .all(|(_, m, read)| read(cert).into_iter().any(|v| m.find(v).is_some()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::detect::rules;

    fn rules(text: &str) -> RuleSet {
        RuleSet::compile(rules::parse_file("t.toml", text).expect("valid"))
    }

    fn cert(org: &str) -> Arc<CertInfo> {
        Arc::new(CertInfo {
            subject: "CN=example.org".into(),
            issuerdn: format!("CN=x, O={org}"),
            issuer_o: Some(org.into()),
            ..Default::default()
        })
    }

    /// Two signatures, each with one condition on the issuer's organisation.
    fn sigs() -> String {
        let sig = |id: u32, cond: &str| {
            format!("[[signature]]\nid = {id}\nname = \"s{id}\"\ntool = \"t\"\ncategory = \"interception-cert\"\nconfidence = \"high\"\ncert_issuer_o = {cond}\n")
        };
        format!(
            "format = 1\nfamily = \"t\"\n{}{}",
            sig(1, "{ contains = [\"mitmproxy\"] }"),
            sig(2, "{ exact = [\"Other\"] }")
        )
    }

    #[test]
    fn remembered_hits_equal_fresh_ones_for_this_and_another_rule_set() {
        let (one, two) = (rules(&sigs()), rules(&sigs()));
        for org in ["mitmproxy", "Other", "neither", "MITMPROXY Ltd"] {
            let c = cert(org);
            let fresh = one.compute_text_hits(&c);
            assert_eq!(&*one.text_hits(&c), fresh.as_slice(), "{org}");
            // now remembered for `one`: the same again, borrowed
            assert!(matches!(one.text_hits(&c), Cow::Borrowed(_)));
            assert_eq!(&*one.text_hits(&c), fresh.as_slice());
            // another rule set (a reload) is never handed `one`'s memo
            assert!(matches!(two.text_hits(&c), Cow::Owned(_)));
            assert_eq!(&*two.text_hits(&c), fresh.as_slice());
        }
        assert_eq!(&*one.text_hits(&cert("mitmproxy")), &[0]);
        assert_eq!(&*one.text_hits(&cert("Other")), &[1]);
        assert!(one.text_hits(&cert("neither")).is_empty());
    }
}
