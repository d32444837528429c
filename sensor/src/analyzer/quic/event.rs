//! The QUIC analyzer's event: EVE's `quic` object (Suricata's fields where it
//! has them: `version`, `sni`, `ja3`, `ja3s`, `ja4`), and the facts it gives.

use std::sync::Arc;

use serde::Serialize;

use super::packet::version_name;
use super::QuicSession;
use crate::analyzer::facts::{Fact, Facts};
use crate::analyzer::tls::hello::ClientHello;
use crate::analyzer::tls::ja3::{self, Ja3};
use crate::analyzer::tls::ja4::{self, Transport};
use crate::analyzer::tls::{self, hex, ClientHandshake, HelloSummary};

/// EVE's `quic` object, for the ClientHellos not logged yet: the first of
/// them in full, the others (a new attempt on the same flow) summed up.
#[derive(Debug, Serialize)]
pub struct QuicEvent<'a> {
    /// `1`, `2`, `draft-29`, or the number in hex.
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub client_alpns: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja3: Option<Ja3>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja4: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja3s: Option<Ja3>,
    /// The TLS version the server's Initial chose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<u16>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_initial_dcid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub server_scid: String,
    /// The server asked for a Retry.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retry: bool,
    /// Versions a Version Negotiation packet offered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub offered_versions: Vec<String>,
    /// Further ClientHellos of the flow (under other keys: a new attempt).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_client_hellos: Vec<HelloSummary<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_handshake: Option<ClientHandshake<'a>>,
}

impl<'a> QuicEvent<'a> {
    /// The event for the session's hellos not logged yet.
    pub fn of(s: &'a QuicSession) -> Self {
        let hellos = unlogged(s);
        let ch = hellos.first();
        let sh = s.server_hello.as_ref();
        QuicEvent {
            version: version_name(s.version.unwrap_or_default()),
            sni: ch.and_then(|c| c.sni.as_deref()),
            client_alpns: ch.map(|c| &c.alpns[..]).unwrap_or(&[]),
            ja3: ch.map(ja3::ja3),
            ja4: ch.map(|c| ja4::ja4(c, Transport::Quic)),
            ja3s: sh.map(ja3::ja3s),
            tls_version: sh.map(|s| tls::version_name(s.version())),
            cipher_suite: sh.map(|s| s.cipher),
            client_initial_dcid: hex(&s.client_dcid),
            server_scid: hex(&s.server_scid),
            retry: s.retry,
            offered_versions: s.offered.iter().map(|v| version_name(*v)).collect(),
            other_client_hellos: hellos
                .iter()
                .skip(1)
                .map(|c| tls::summary(c, Transport::Quic))
                .collect(),
            client_handshake: ch.map(ClientHandshake::of),
        }
    }

    /// The JA3 and JA4 of every ClientHello the event logs, in order.
    pub fn prints(&self) -> Vec<(Arc<str>, Arc<str>)> {
        let first = self.ja3.as_ref().zip(self.ja4.as_ref());
        first
            .map(|(a, b)| (a.hash.clone(), b.clone()))
            .into_iter()
            .chain(
                self.other_client_hellos
                    .iter()
                    .map(|h| (h.ja3.hash.clone(), h.ja4.clone())),
            )
            .collect()
    }
}

fn unlogged(s: &QuicSession) -> &[ClientHello] {
    &s.hellos
}

/// The facts signatures test on a QUIC handshake: each logged ClientHello's
/// server name, ALPN values and fingerprints.
pub fn facts<'a>(s: &'a QuicSession, prints: &'a [(Arc<str>, Arc<str>)]) -> Facts<'a> {
    let mut f = Facts::default();
    for ch in unlogged(s) {
        f.push_opt(Fact::Sni, ch.sni.as_deref());
        for a in &ch.alpns {
            f.push(Fact::Alpn, a);
        }
    }
    for (j3, j4) in prints {
        f.push(Fact::Ja3, j3);
        f.push(Fact::Ja4, j4);
    }
    f
}
