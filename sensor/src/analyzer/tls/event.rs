//! The TLS analyzer's event: EVE's `tls` object, and the facts it gives.

use std::sync::Arc;

use serde::Serialize;

use super::cert::CertInfo;
use super::ja3::{self, Ja3};
use super::ja4;
use super::TlsSession;
use crate::analyzer::facts::{Fact, Facts};

/// The ClientHello as EVE 8 logs it (`tls.client_handshake`), plus the lists a
/// rule or an analyst needs: numbers in wire order, GREASE included.
#[derive(Debug, Serialize)]
pub struct ClientHandshake<'a> {
    pub version: u16,
    pub ciphers: &'a [u16],
    pub exts: &'a [u16],
    #[serde(skip_serializing_if = "<[u16]>::is_empty")]
    pub supported_versions: &'a [u16],
    #[serde(skip_serializing_if = "<[u16]>::is_empty")]
    pub groups: &'a [u16],
    #[serde(skip_serializing_if = "<[u16]>::is_empty")]
    pub sig_algs: &'a [u16],
    #[serde(skip_serializing_if = "<[u8]>::is_empty")]
    pub point_formats: &'a [u8],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sslv2: bool,
}

/// Certificates as the JSON each was first serialised to.
fn cached_json<S: serde::Serializer>(v: &[&CertInfo], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|c| c.json()))
}

/// EVE's `tls` object.
#[derive(Debug, Serialize)]
pub struct TlsEvent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<&'a str>,
    pub version: &'static str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub client_alpns: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_alpns: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja3: Option<&'a Ja3>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja3s: Option<&'a Ja3>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja4: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuerdn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notbefore: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notafter: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subjectaltname: Option<&'a [String]>,
    #[serde(
        skip_serializing_if = "<[&CertInfo]>::is_empty",
        serialize_with = "cached_json"
    )]
    pub chain: Vec<&'a CertInfo>,
    /// The server's chain by SHA-256, in order, when each certificate is
    /// logged once as a `certificate` event (the default).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain_sha256: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_handshake: Option<ClientHandshake<'a>>,
    /// Client certificates (TLS ≤ 1.2 client authentication).
    #[serde(
        skip_serializing_if = "<[&CertInfo]>::is_empty",
        serialize_with = "cached_json"
    )]
    pub client_chain: Vec<&'a CertInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_chain_sha256: Vec<&'a str>,
    /// A second ClientHello on the same connection (after a HelloRetryRequest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub second_client_hello: Option<HelloSummary<'a>>,
    /// The ClientHello as a differing copy of its TCP bytes had it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlap_client_hello: Option<HelloSummary<'a>>,
    /// The server's chain as a differing copy of its TCP bytes had it.
    #[serde(
        skip_serializing_if = "<[&CertInfo]>::is_empty",
        serialize_with = "cached_json"
    )]
    pub overlap_chain: Vec<&'a CertInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overlap_chain_sha256: Vec<&'a str>,
    /// What [`TlsEvent::by_reference`] took out, for an alert's inline copy.
    #[serde(skip)]
    pub held: Option<Held<'a>>,
}

/// The certificates (and the leaf's names) a compact event names by hash.
#[derive(Debug, Default)]
pub struct Held<'a> {
    chain: Vec<&'a CertInfo>,
    client_chain: Vec<&'a CertInfo>,
    overlap_chain: Vec<&'a CertInfo>,
    subjectaltname: Option<&'a [String]>,
}

fn hashes<'a>(v: &[&'a CertInfo]) -> Vec<&'a str> {
    v.iter().map(|c| c.sha256.as_str()).collect()
}

/// The fingerprints of a further ClientHello.
#[derive(Debug, Serialize)]
pub struct HelloSummary<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<&'a str>,
    pub ja3: Ja3,
    pub ja4: Arc<str>,
}

/// The fingerprints of a ClientHello carried over `transport`.
pub fn summary(c: &super::hello::ClientHello, transport: ja4::Transport) -> HelloSummary<'_> {
    HelloSummary {
        sni: c.sni.as_deref(),
        ja3: ja3::ja3(c),
        ja4: ja4::ja4(c, transport),
    }
}

impl<'a> ClientHandshake<'a> {
    pub fn of(c: &'a super::hello::ClientHello) -> Self {
        ClientHandshake {
            version: c.legacy_version,
            ciphers: &c.ciphers,
            exts: &c.extensions,
            supported_versions: &c.supported_versions,
            groups: &c.groups,
            sig_algs: &c.sig_algs,
            point_formats: &c.point_formats,
            sslv2: c.sslv2,
        }
    }
}

/// A further ClientHello's summary, from the fingerprints the session keeps.
fn summary_of<'a>(
    c: Option<&'a super::hello::ClientHello>,
    prints: Option<&(Ja3, Arc<str>)>,
) -> Option<HelloSummary<'a>> {
    let (c, (ja3, ja4)) = c.zip(prints)?;
    Some(HelloSummary {
        sni: c.sni.as_deref(),
        ja3: ja3.clone(),
        ja4: ja4.clone(),
    })
}

/// How events name a TLS version.
pub fn version_name(v: u16) -> &'static str {
    match v {
        0x0304 => "TLS 1.3",
        0x0303 => "TLS 1.2",
        0x0302 => "TLS 1.1",
        0x0301 => "TLS 1.0",
        0x0300 => "SSLv3",
        0x0002 => "SSLv2",
        v if v >> 8 == 0x7f => "TLS 1.3",
        _ => "UNDETERMINED",
    }
}

impl<'a> TlsEvent<'a> {
    /// The event for what the session has read.
    pub fn of(t: &'a TlsSession) -> Self {
        let ch = t.client_hello.as_ref();
        let sh = t.server_hello.as_ref();
        let leaf = t.chain.first().map(|c| &**c);
        let [second, overlap] = t.more_prints();
        let version = match (sh, ch) {
            (Some(sh), _) => version_name(sh.version()),
            (None, Some(ch)) if ch.sslv2 => "SSLv2",
            _ => "UNDETERMINED",
        };
        TlsEvent {
            sni: ch.and_then(|c| c.sni.as_deref()),
            version,
            client_alpns: ch.map(|c| &c.alpns[..]).unwrap_or(&[]),
            server_alpns: sh.and_then(|s| s.alpn.as_deref()).map(|a| [a]),
            ja3: t.ja3(),
            ja3s: t.ja3s(),
            ja4: t.ja4(),
            cipher_suite: sh.map(|s| s.cipher),
            subject: leaf.map(|c| c.subject.as_str()),
            issuerdn: leaf.map(|c| c.issuerdn.as_str()),
            serial: leaf.map(|c| c.serial.as_str()),
            fingerprint: leaf.map(|c| c.fingerprint.as_str()),
            notbefore: leaf.map(|c| c.notbefore.as_str()),
            notafter: leaf.map(|c| c.notafter.as_str()),
            subjectaltname: leaf.map(|c| &c.san[..]).filter(|s| !s.is_empty()),
            chain: t.chain.iter().map(|c| &**c).collect(),
            client_handshake: ch.map(ClientHandshake::of),
            client_chain: t.client_chain.iter().map(|c| &**c).collect(),
            second_client_hello: summary_of(t.second_client_hello.as_deref(), second),
            overlap_client_hello: summary_of(t.overlap_client_hello.as_deref(), overlap),
            overlap_chain: t.overlap_chain.iter().map(|c| &**c).collect(),
            chain_sha256: Vec::new(),
            client_chain_sha256: Vec::new(),
            overlap_chain_sha256: Vec::new(),
            held: None,
        }
    }

    /// Names the certificates by SHA-256 instead of carrying them (each is
    /// logged once as a `certificate` event), and leaves the leaf's SAN list
    /// to that event too; [`TlsEvent::inline`] puts them back.
    pub fn by_reference(&mut self) {
        if self.held.is_some() {
            return;
        }
        self.chain_sha256 = hashes(&self.chain);
        self.client_chain_sha256 = hashes(&self.client_chain);
        self.overlap_chain_sha256 = hashes(&self.overlap_chain);
        self.held = Some(Held {
            chain: std::mem::take(&mut self.chain),
            client_chain: std::mem::take(&mut self.client_chain),
            overlap_chain: std::mem::take(&mut self.overlap_chain),
            subjectaltname: self.subjectaltname.take(),
        });
    }

    /// The whole certificates again (an alert stands alone).
    pub fn inline(&mut self) {
        let Some(h) = self.held.take() else { return };
        (self.chain, self.client_chain) = (h.chain, h.client_chain);
        self.overlap_chain = h.overlap_chain;
        self.subjectaltname = h.subjectaltname;
        self.chain_sha256.clear();
        self.client_chain_sha256.clear();
        self.overlap_chain_sha256.clear();
    }

    /// Whether [`TlsEvent::inline`] would change the event.
    pub fn by_hash(&self) -> bool {
        self.held.is_some()
    }
}

/// The facts signatures test on a handshake: every ClientHello's server name
/// and fingerprints (as the event logs them: the first, then the one after a
/// HelloRetryRequest, which may name another server), and the server's chain.
pub fn facts<'a>(t: &'a TlsSession, prints: &[Fingerprints<'a>]) -> Facts<'a> {
    let mut f = Facts::of_chain(&t.chain);
    f.other_chain = &t.overlap_chain;
    let hellos = [
        t.client_hello.as_ref(),
        t.second_client_hello.as_deref(),
        t.overlap_client_hello.as_deref(),
    ];
    for ch in hellos.into_iter().flatten() {
        f.push_opt(Fact::Sni, ch.sni.as_deref());
        for a in &ch.alpns {
            f.push(Fact::Alpn, a);
        }
    }
    for p in prints {
        f.push_opt(Fact::Ja3, p.ja3);
        f.push_opt(Fact::Ja4, p.ja4);
    }
    f
}

/// A ClientHello's fingerprints, borrowed from the session that keeps them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fingerprints<'a> {
    pub ja3: Option<&'a str>,
    pub ja4: Option<&'a str>,
}

impl<'a> Fingerprints<'a> {
    /// Of every ClientHello the event logs: the first, the second, the
    /// differing copy of the first.
    pub fn of(t: &'a TlsSession) -> smallvec::SmallVec<[Fingerprints<'a>; 3]> {
        let first = Fingerprints {
            ja3: t.ja3().map(|j| &*j.hash),
            ja4: t.ja4(),
        };
        let more = t
            .more_prints()
            .into_iter()
            .flatten()
            .map(|(j3, j4)| Fingerprints {
                ja3: Some(&*j3.hash),
                ja4: Some(&**j4),
            });
        std::iter::once(first).chain(more).collect()
    }
}
