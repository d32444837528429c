//! X.509 certificate facts, parsed with x509-parser, cached by DER hash.
//!
//! A server sends the same chain to every client, so each distinct certificate
//! is parsed once; the cache is bounded and forgets the oldest entry first.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use super::hex;

/// Distinct certificates remembered (per worker).
pub const CACHE_CAPACITY: usize = 4096;
/// Longest DN or SAN entry logged; longer ones are cut (with `…`).
pub const MAX_STRING: usize = 1024;
/// SAN entries logged per certificate.
pub const MAX_SAN: usize = 100;

/// What spanwatch keeps of one certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CertInfo {
    /// Subject as EVE writes it (x509-parser's `C=US, O=…, CN=…`, DER order).
    pub subject: String,
    pub issuerdn: String,
    /// RFC 4514 form (reverse DER order, escaped), as OpenSSL `-nameopt RFC2253`.
    pub subject_rfc4514: String,
    pub issuer_rfc4514: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_cn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_o: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_ou: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer_cn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer_o: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer_ou: Option<String>,
    /// Upper-case colon hex, as EVE's `tls.serial`.
    pub serial: String,
    pub notbefore: String,
    pub notafter: String,
    /// Validity length in whole days (mitmproxy's leaves have telling lengths).
    pub validity_days: i64,
    pub san: Vec<String>,
    /// SHA-1 of the DER, lower-case colon hex (EVE `tls.fingerprint`).
    pub fingerprint: String,
    pub sha256: String,
    pub spki_sha256: String,
    pub key_algorithm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_bits: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<bool>,
    pub extensions: Vec<String>,
    /// URIs of the CRL distribution points.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub crl_urls: Vec<String>,
    pub der_len: usize,
    /// Set when x509-parser refused the DER: only the hashes are then known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
    /// The serialised form, filled on first use (see [`CertInfo::json`]).
    #[serde(skip)]
    pub json: JsonCache,
    /// Which signatures' certificate-text conditions all hold on this
    /// certificate, filled by the first rule set that asks (see
    /// `detect::RuleSet::text_hits`).
    #[serde(skip)]
    pub text_hits: TextHits,
}

impl CertInfo {
    /// This certificate as JSON, serialised once: a certificate is parsed
    /// once per cache lifetime but logged on every handshake that shows it.
    pub fn json(&self) -> &serde_json::value::RawValue {
        self.json.0.get_or_init(|| {
            serde_json::value::to_raw_value(self).unwrap_or_else(|_| {
                // no field of CertInfo fails to serialise; keep the type total anyway
                serde_json::value::RawValue::from_string("{}".into())
                    .unwrap_or_else(|_| unreachable!("\"{{}}\" is JSON"))
            })
        })
    }
}

/// A lazily filled cache that takes no part in comparisons.
#[derive(Debug, Clone, Default)]
pub struct JsonCache(std::sync::OnceLock<Box<serde_json::value::RawValue>>);

impl PartialEq for JsonCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for JsonCache {}

/// A rule set's id and the signatures (indices) whose conditions on a
/// certificate's text all hold on this certificate: a pure function of the
/// two, remembered because a cached certificate is seen on many handshakes.
#[derive(Debug, Clone, Default)]
pub struct TextHits(pub std::sync::OnceLock<(u64, Box<[u32]>)>);

impl PartialEq for TextHits {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for TextHits {}

#[derive(Debug, Default, Clone, Copy)]
pub struct CacheStats {
    pub parsed: u64,
    pub hits: u64,
    pub errors: u64,
}

/// A cached certificate: its DER (to confirm a hash hit) and its facts.
type Entry = (Box<[u8]>, Arc<CertInfo>);

/// A bounded map from certificate DER to parsed facts.
///
/// Looked up by a keyed 64-bit hash of the DER and confirmed by comparing the
/// DER itself, so a hit costs one fast hash and one `memcmp`; the SHA-256
/// and everything else are computed once, on a miss.
pub struct CertCache {
    map: HashMap<u64, Vec<Entry>>,
    order: VecDeque<u64>,
    len: usize,
    cap: usize,
    hasher: ahash::RandomState,
    pub stats: CacheStats,
}

impl Default for CertCache {
    fn default() -> Self {
        Self::new(CACHE_CAPACITY)
    }
}

impl CertCache {
    pub fn new(cap: usize) -> Self {
        CertCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            len: 0,
            cap: cap.max(1),
            hasher: ahash::RandomState::new(),
            stats: CacheStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Forgets every certificate (the counters stay): after a rule reload,
    /// so that the certificates seen next remember the new rule set's
    /// certificate-text matches (one parse each again) instead of being
    /// checked afresh on every handshake for as long as they stay cached.
    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
        self.len = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&mut self, der: &[u8]) -> Arc<CertInfo> {
        let key = self.hasher.hash_one(der);
        if let Some(c) = self
            .map
            .get(&key)
            .and_then(|v| v.iter().find(|(d, _)| &**d == der))
        {
            self.stats.hits += 1;
            return Arc::clone(&c.1);
        }
        let sha: [u8; 32] = Sha256::digest(der).into();
        let info = Arc::new(parse(der, &sha));
        self.stats.parsed += 1;
        if info.parse_error.is_some() {
            self.stats.errors += 1;
        }
        if self.len >= self.cap {
            // forget the oldest entry (first in, first out)
            if let Some(old) = self.order.pop_front() {
                if let Some(v) = self.map.get_mut(&old) {
                    if !v.is_empty() {
                        v.remove(0);
                        self.len -= 1;
                    }
                    if v.is_empty() {
                        self.map.remove(&old);
                    }
                }
            }
        }
        self.order.push_back(key);
        self.map
            .entry(key)
            .or_default()
            .push((der.into(), Arc::clone(&info)));
        self.len += 1;
        info
    }
}

/// Parses one DER certificate; never fails (hashes are always there).
pub fn parse(der: &[u8], sha256: &[u8; 32]) -> CertInfo {
    let mut info = CertInfo {
        sha256: hex(sha256),
        fingerprint: colon_hex(&Sha1::digest(der), false),
        der_len: der.len(),
        ..Default::default()
    };
    let cert = match X509Certificate::from_der(der) {
        Ok((_, c)) => c,
        Err(e) => {
            info.parse_error = Some(e.to_string());
            return info;
        }
    };
    info.subject = cap(cert.subject().to_string());
    info.issuerdn = cap(cert.issuer().to_string());
    info.subject_rfc4514 = cap(rfc4514(cert.subject()));
    info.issuer_rfc4514 = cap(rfc4514(cert.issuer()));
    let first =
        |it: &mut dyn Iterator<Item = &AttributeTypeAndValue<'_>>| it.next().map(|a| cap(value(a)));
    info.subject_cn = first(&mut cert.subject().iter_common_name());
    info.subject_o = first(&mut cert.subject().iter_organization());
    info.subject_ou = first(&mut cert.subject().iter_organizational_unit());
    info.issuer_cn = first(&mut cert.issuer().iter_common_name());
    info.issuer_o = first(&mut cert.issuer().iter_organization());
    info.issuer_ou = first(&mut cert.issuer().iter_organizational_unit());
    info.serial = colon_hex(cert.raw_serial(), true);
    let v = cert.validity();
    info.notbefore = eve_time(v.not_before.timestamp());
    info.notafter = eve_time(v.not_after.timestamp());
    info.validity_days = (v.not_after.timestamp() - v.not_before.timestamp()).div_euclid(86_400);
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in san.value.general_names.iter().take(MAX_SAN) {
            match name {
                GeneralName::DNSName(n) => info.san.push(cap(n.to_string())),
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        info.san.push(std::net::Ipv4Addr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        info.san.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let spki = cert.public_key();
    info.spki_sha256 = hex(&Sha256::digest(spki.raw));
    info.key_algorithm = key_algorithm(&spki.algorithm.algorithm.to_id_string()).to_string();
    info.key_bits = spki.parsed().ok().map(|k| k.key_size()).filter(|b| *b > 0);
    info.ca = cert.basic_constraints().ok().flatten().map(|b| b.value.ca);
    info.extensions = cert
        .extensions()
        .iter()
        .map(|e| e.oid.to_id_string())
        .collect();
    for ext in cert.extensions() {
        if let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for p in points.iter() {
                if let Some(DistributionPointName::FullName(names)) = &p.distribution_point {
                    for n in names.iter().take(8) {
                        if let GeneralName::URI(u) = n {
                            info.crl_urls.push(cap(u.to_string()));
                        }
                    }
                }
            }
        }
    }
    info
}

fn key_algorithm(oid: &str) -> &str {
    match oid {
        "1.2.840.113549.1.1.1" => "rsa",
        "1.2.840.10045.2.1" => "ec",
        "1.3.101.112" => "ed25519",
        "1.3.101.113" => "ed448",
        "1.2.840.10040.4.1" => "dsa",
        "1.2.840.113549.1.1.10" => "rsa-pss",
        other => other,
    }
}

/// Text of an attribute value, whatever its ASN.1 string type.
fn value(a: &AttributeTypeAndValue<'_>) -> String {
    if let Ok(s) = a.as_str() {
        return s.to_string();
    }
    let any = a.attr_value();
    let data = any.data;
    match any.tag() {
        Tag::BmpString => {
            let u: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&u)
        }
        Tag::UniversalString => data
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('\u{fffd}')
            })
            .collect(),
        Tag::T61String | Tag::VisibleString | Tag::GeneralString | Tag::GraphicString => {
            // T.61 in practice carries Latin-1.
            match std::str::from_utf8(data) {
                Ok(s) => s.to_string(),
                Err(_) => data.iter().map(|b| *b as char).collect(),
            }
        }
        _ => {
            let mut s = String::from("#");
            s.push_str(&hex(a.as_slice()));
            s
        }
    }
}

fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 4514 string: RDNs in reverse order, `+` inside a multi-valued RDN,
/// special characters escaped.
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<_> = name.iter_rdn().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type().to_id_string();
            out.push_str(short_name(&oid).unwrap_or(&oid));
            out.push('=');
            escape_dn_value(&mut out, &value(attr));
        }
    }
    out
}

fn escape_dn_value(out: &mut String, v: &str) {
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        match c {
            '\\' | '"' | '+' | ',' | ';' | '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            '\0' => out.push_str("\\00"),
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i + 1 == n => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
}

/// EVE's certificate time format: `2024-01-02T03:04:05`.
fn eve_time(secs: i64) -> String {
    let mut s = crate::time::Timestamp(secs.saturating_mul(1_000_000_000)).to_string();
    s.truncate(19);
    s
}

fn colon_hex(b: &[u8], upper: bool) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        if upper {
            let _ = write!(s, "{x:02X}");
        } else {
            let _ = write!(s, "{x:02x}");
        }
    }
    s
}

fn cap(mut s: String) -> String {
    if s.len() > MAX_STRING {
        let mut end = MAX_STRING;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_der_keeps_hashes() {
        let mut c = CertCache::new(2);
        let i = c.get(b"not a certificate");
        assert!(i.parse_error.is_some());
        assert_eq!(i.sha256.len(), 64);
        assert_eq!(i.fingerprint.len(), 59);
        assert_eq!(c.stats.errors, 1);
    }

    #[test]
    fn cache_is_bounded_and_hits() {
        let mut c = CertCache::new(2);
        c.get(b"a");
        c.get(b"a");
        c.get(b"b");
        c.get(b"c");
        assert_eq!(c.stats.hits, 1);
        assert_eq!(c.len(), 2);
        assert_eq!(c.order.len(), 2);
        // the oldest ("a") went; "c" is still there
        c.get(b"c");
        assert_eq!(c.stats.hits, 2);
        // cleared (a rule reload): parsed again, the counters kept
        let before = c.get(b"c");
        c.clear();
        assert!(c.is_empty());
        let after = c.get(b"c");
        assert!(!Arc::ptr_eq(&before, &after), "a new certificate object");
        assert_eq!((c.stats.hits, c.stats.parsed), (3, 4));
    }

    #[test]
    fn dn_escaping_matches_rfc4514() {
        let mut s = String::new();
        escape_dn_value(&mut s, "#a, b+c ");
        assert_eq!(s, "\\#a\\, b\\+c\\ ");
    }
}
