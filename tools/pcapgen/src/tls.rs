//! Real TLS handshakes between a rustls client and server, driven in memory.
//!
//! The bytes each side writes are recorded as flights; nothing touches a
//! socket. Certificates come from rcgen.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, ServerConnection,
    SignatureScheme,
};

use crate::net::Flight;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A certificate chain (leaf first) and the leaf's key.
pub struct Chain {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

fn params(cn: &str, org: &str, ca: bool, sans: &[&str]) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name.push(DnType::OrganizationName, org);
    p.not_before = rcgen::date_time_ymd(2026, 1, 1);
    p.not_after = rcgen::date_time_ymd(2027, 1, 1);
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    }
    Ok(p)
}

/// Root → intermediate → leaf for `names` (first is the CN).
pub fn chain(org: &str, names: &[&str]) -> Result<Chain> {
    let root_key = KeyPair::generate()?;
    let root = params(&format!("{org} Root CA"), org, true, &[])?.self_signed(&root_key)?;
    let int_key = KeyPair::generate()?;
    let int = params(&format!("{org} Issuing CA 1"), org, true, &[])?
        .signed_by(&int_key, &root, &root_key)?;
    let leaf_key = KeyPair::generate()?;
    let leaf = params(names[0], org, false, names)?.signed_by(&leaf_key, &int, &int_key)?;
    Ok(Chain {
        certs: vec![leaf.der().clone(), int.der().clone(), root.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    })
}

/// A leaf for `names` signed by a root whose common name and organisation
/// are both `ca` (the shape of mitmproxy's own CA).
pub fn chain_from_ca(ca: &str, names: &[&str]) -> Result<Chain> {
    let root_key = KeyPair::generate()?;
    let root = params(ca, ca, true, &[])?.self_signed(&root_key)?;
    let leaf_key = KeyPair::generate()?;
    let leaf =
        params(names[0], "Example Org", false, names)?.signed_by(&leaf_key, &root, &root_key)?;
    Ok(Chain {
        certs: vec![leaf.der().clone(), root.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    })
}

/// A client that accepts any certificate (it only has to complete handshakes)
/// but still checks handshake signatures.
#[derive(Debug)]
pub(crate) struct AcceptAny(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub struct Handshake<'a> {
    pub version: &'static rustls::SupportedProtocolVersion,
    pub sni: &'a str,
    pub alpn: &'a [&'a str],
    pub chain: &'a Chain,
    /// Application data the client sends once connected (e.g. an HTTP request).
    pub request: &'a [u8],
}

/// Runs a handshake and returns the flights in order.
pub fn handshake(h: &Handshake<'_>) -> Result<Vec<Flight>> {
    handshake_with(h, false, &Ending::default())
}

/// How a connection goes on after the client's request.
#[derive(Default)]
pub struct Ending<'a> {
    /// Application data the server answers the request with.
    pub response: &'a [u8],
    /// The client then sends a close_notify alert.
    pub close_notify: bool,
}

/// A whole short connection's TLS: the handshake, the request, the
/// server's `response` and the client's close_notify, each as rustls makes it.
pub fn exchange(h: &Handshake<'_>, end: &Ending<'_>) -> Result<Vec<Flight>> {
    handshake_with(h, false, end)
}

/// A TLS 1.3 handshake in which the server asks for another key share (a
/// HelloRetryRequest): it accepts only P-256, while the client's first
/// ClientHello carries an X25519 share, so the client sends a second one.
pub fn handshake_hrr(h: &Handshake<'_>) -> Result<Vec<Flight>> {
    handshake_with(h, true, &Ending::default())
}

fn handshake_with(h: &Handshake<'_>, hrr: bool, end: &Ending<'_>) -> Result<Vec<Flight>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_provider = if hrr {
        Arc::new(CryptoProvider {
            kx_groups: vec![rustls::crypto::ring::kx_group::SECP256R1],
            ..rustls::crypto::ring::default_provider()
        })
    } else {
        provider.clone()
    };
    let mut cc = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[h.version])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider.clone())))
        .with_no_client_auth();
    cc.alpn_protocols = h.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let mut sc = ServerConfig::builder_with_provider(server_provider)
        .with_protocol_versions(&[h.version])?
        .with_no_client_auth()
        .with_single_cert(h.chain.certs.clone(), h.chain.key.clone_key())?;
    sc.alpn_protocols = h.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let mut client = ClientConnection::new(Arc::new(cc), ServerName::try_from(h.sni.to_string())?)?;
    let mut server = ServerConnection::new(Arc::new(sc))?;
    let mut flights = Vec::new();
    let mut sent_request = false;
    // (the response once the server has the request; the alert after it)
    let (mut responded, mut closed) = (end.response.is_empty(), !end.close_notify);
    for _ in 0..32 {
        let mut progressed = false;
        if sent_request && !responded {
            std::io::Write::write_all(&mut server.writer(), end.response)?;
            responded = true;
        } else if sent_request && responded && !closed {
            client.send_close_notify();
            closed = true;
        }
        if !client.is_handshaking() && !sent_request {
            std::io::Write::write_all(&mut client.writer(), h.request)?;
            sent_request = true;
        }
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf)?;
        }
        if !buf.is_empty() {
            server.read_tls(&mut &buf[..])?;
            server.process_new_packets()?;
            flights.push(Flight::to_server(buf));
            progressed = true;
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf)?;
        }
        if !buf.is_empty() {
            client.read_tls(&mut &buf[..])?;
            client.process_new_packets()?;
            flights.push(Flight::to_client(buf));
            progressed = true;
        }
        if !progressed && sent_request && responded && closed {
            return Ok(flights);
        }
    }
    Err("handshake did not settle in 32 rounds".into())
}
