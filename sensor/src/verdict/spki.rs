//! The shared-key tracker: which unrelated names each public key of a lone
//! leaf certificate signed for (a proxy signs every forged leaf with one key).

use std::collections::HashMap;
use std::sync::Arc;

use crate::analyzer::tls::cert::CertInfo;
use crate::detect::names::normalize;
use crate::detect::{lone_leaf, KeySpread};

/// Keys seen on leaf certificates: which unrelated names each public key signed
/// for. Kept by the verdict stage (input order); bounded.
#[derive(Debug, Default)]
pub struct SpkiTracker {
    map: HashMap<String, SpkiEntry, ahash::RandomState>,
}

#[derive(Debug, Default)]
struct SpkiEntry {
    certs: Vec<String>,
    names: Vec<String>,
    /// Certificates that brought at least one name not seen with this key before.
    novel: usize,
}

/// Public keys tracked at most.
pub const SPKI_CAPACITY: usize = 65_536;
/// Certificates and names remembered per key.
const SPKI_PER_KEY: usize = 16;

impl SpkiTracker {
    /// Notes a lone leaf certificate (chain of one: what proxies send).
    pub fn observe(&mut self, chain: &[Arc<CertInfo>]) {
        let Some(leaf) = lone_leaf(chain) else {
            return;
        };
        if !self.map.contains_key(&leaf.spki_sha256) && self.map.len() >= SPKI_CAPACITY {
            return;
        }
        let e = self.map.entry(leaf.spki_sha256.clone()).or_default();
        if e.certs.contains(&leaf.sha256) || e.certs.len() >= SPKI_PER_KEY {
            return;
        }
        e.certs.push(leaf.sha256.clone());
        // mitmproxy copies the upstream names and adds the client's SNI: each
        // forged leaf brings the name of another site.
        let mut novel = false;
        for n in leaf
            .subject_cn
            .iter()
            .chain(leaf.san.iter())
            .take(SPKI_PER_KEY)
        {
            let base = base_name(n);
            if !base.is_empty() && !e.names.contains(&base) && e.names.len() < SPKI_PER_KEY {
                e.names.push(base);
                novel = true;
            }
        }
        if novel {
            e.novel += 1;
        }
    }
}

impl KeySpread for SpkiTracker {
    fn spread(&self, spki: &str) -> (usize, Vec<String>) {
        self.map
            .get(spki)
            .map(|e| (e.novel, e.names.clone()))
            .unwrap_or_default()
    }
}

/// The registrable part of a name, roughly: the last two labels, or three
/// under a two-letter country code with a generic second level (`co.uk`).
pub fn base_name(name: &str) -> String {
    let n = normalize(name.trim_start_matches("*."));
    let labels: Vec<&str> = n.split('.').collect();
    let keep = match labels.as_slice() {
        [.., sld, tld]
            if tld.len() == 2 && ["co", "com", "net", "org", "gov", "edu", "ac"].contains(sld) =>
        {
            3
        }
        _ => 2,
    };
    labels[labels.len().saturating_sub(keep)..].join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{rules, Facts, RuleSet};

    fn cert(name: &str) -> Arc<CertInfo> {
        Arc::new(CertInfo {
            subject: format!("CN={name}"),
            issuerdn: "CN=Some CA, O=Org".into(),
            subject_cn: Some(name.into()),
            spki_sha256: "aa".into(),
            sha256: name.into(),
            ..Default::default()
        })
    }

    fn set(text: &str) -> RuleSet {
        RuleSet::compile(rules::parse_file("t.toml", text).expect("valid"))
    }

    const HEAD: &str = "format = 1\n[[signature]]\nid = 1\nname = \"n\"\ntool = \"t\"\ncategory = \"interception-cert\"\nconfidence = \"high\"\n";

    #[test]
    fn shared_key_across_unrelated_names() {
        let r = set(&format!("{HEAD}chain_len = [1]\nshared_spki_names = 3\n"));
        let mut sp = SpkiTracker::default();
        for (i, name) in [
            "www.example.com",
            "api.example.com",
            "shop.example.org",
            "news.example.net",
        ]
        .iter()
        .enumerate()
        {
            let chain = [cert(name)];
            sp.observe(&chain);
            let f = Facts::of_chain(&chain);
            // example.com twice counts once: the third unrelated name is the fourth cert
            assert_eq!(
                !r.evaluate(&f, Some(&sp as &dyn KeySpread)).is_empty(),
                i >= 3,
                "{name}"
            );
        }
    }

    #[test]
    fn base_names() {
        assert_eq!(base_name("a.b.example.com."), "example.com");
        assert_eq!(base_name("www.bbc.co.uk"), "bbc.co.uk");
        assert_eq!(base_name("*.example.org"), "example.org");
        assert_eq!(base_name("localhost"), "localhost");
    }
}
