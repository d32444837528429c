//! QUIC handshakes by rustls's QUIC API (its ClientHello and ServerHello for
//! a QUIC transport), in Initial packets protected with rustls's own Initial
//! keys: an implementation independent of the sensor's.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::quic::{self, DirectionalKeys, Version};
use rustls::{ClientConfig, ServerConfig};

use crate::tls::{AcceptAny, Chain, Result};

/// One QUIC connection's handshake bytes in clear.
pub struct QuicHandshake {
    pub dcid: Vec<u8>,
    pub scid: Vec<u8>,
    /// The client's Initial-level CRYPTO data (its ClientHello).
    pub client_hello: Vec<u8>,
    /// The server's Initial-level CRYPTO data (its ServerHello).
    pub server_hello: Vec<u8>,
}

/// Runs the start of a QUIC handshake in memory: the ClientHello, the
/// server's Initial-level answer.
pub fn handshake(
    sni: &str,
    alpn: &[&str],
    chain: &Chain,
    version: Version,
    dcid: &[u8],
) -> Result<QuicHandshake> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cc = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider.clone())))
        .with_no_client_auth();
    cc.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let mut sc = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain.certs.clone(), chain.key.clone_key())?;
    sc.alpn_protocols = cc.alpn_protocols.clone();
    // initial_max_data and friends, as a transport parameter list
    let params = vec![0x04, 0x04, 0x80, 0x10, 0x00, 0x00, 0x0f, 0x04, 1, 2, 3, 4];
    let mut client = quic::ClientConnection::new(
        Arc::new(cc),
        version,
        ServerName::try_from(sni.to_string())?,
        params.clone(),
    )?;
    let mut server = quic::ServerConnection::new(Arc::new(sc), version, params)?;
    let mut client_hello = Vec::new();
    client.write_hs(&mut client_hello);
    server.read_hs(&client_hello)?;
    let mut server_hello = Vec::new();
    // the first write is at the Initial level; a key change ends it
    let _ = server.write_hs(&mut server_hello);
    Ok(QuicHandshake {
        dcid: dcid.to_vec(),
        scid: vec![0x5c; 8],
        client_hello,
        server_hello,
    })
}

/// The side's Initial keys (rustls's).
pub fn initial_keys(version: Version, dcid: &[u8], client: bool) -> Result<quic::Keys> {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .and_then(|s| s.quic_suite())
        .ok_or("no QUIC suite")?;
    let side = if client {
        rustls::Side::Client
    } else {
        rustls::Side::Server
    };
    Ok(suite.keys(dcid, side, version))
}

fn version_number(v: Version) -> u32 {
    match v {
        Version::V2 => 0x6b33_43cf,
        Version::V1Draft => 0xff00_001d,
        _ => 1,
    }
}

/// One CRYPTO frame.
pub fn crypto_frame(offset: usize, data: &[u8]) -> Vec<u8> {
    let mut v = vec![0x06];
    v.extend_from_slice(&[
        0x80 | (offset >> 24) as u8,
        (offset >> 16) as u8,
        (offset >> 8) as u8,
        offset as u8,
    ]);
    v.extend_from_slice(&[0x40 | (data.len() >> 8) as u8, data.len() as u8]);
    v.extend_from_slice(data);
    v
}

/// An Initial packet carrying `frames` (padded to `size` bytes in all),
/// protected with `keys`.
pub fn initial_packet(
    keys: &DirectionalKeys,
    version: Version,
    dcid: &[u8],
    scid: &[u8],
    pn: u32,
    frames: &[u8],
    size: usize,
) -> Result<Vec<u8>> {
    let ty: u8 = if matches!(version, Version::V2) { 1 } else { 0 };
    let mut h = vec![0xc3 | (ty << 4)];
    h.extend_from_slice(&version_number(version).to_be_bytes());
    h.push(dcid.len() as u8);
    h.extend_from_slice(dcid);
    h.push(scid.len() as u8);
    h.extend_from_slice(scid);
    h.push(0); // no token
    let fixed = h.len() + 2 + 4 + 16;
    let mut payload = frames.to_vec();
    payload.resize(payload.len().max(size.saturating_sub(fixed)).max(20), 0);
    let len = 4 + payload.len() + 16;
    h.extend_from_slice(&[0x40 | (len >> 8) as u8, len as u8]);
    let pn_at = h.len();
    h.extend_from_slice(&pn.to_be_bytes());
    let tag = keys
        .packet
        .encrypt_in_place(u64::from(pn), &h, &mut payload)?;
    let mut p = h;
    p.extend_from_slice(&payload);
    p.extend_from_slice(tag.as_ref());
    let sample: Vec<u8> = p[pn_at + 4..pn_at + 20].to_vec();
    let (first, rest) = p.split_at_mut(1);
    keys.header
        .encrypt_in_place(&sample, &mut first[0], &mut rest[pn_at - 1..pn_at + 3])?;
    Ok(p)
}

/// The client's Initial carrying its whole ClientHello (padded to 1 200
/// bytes, from `client_scid`, to `dcid`) and the server's Initial carrying
/// its ServerHello, both protected with the keys `dcid` gives.
pub fn initial_pair(
    h: &QuicHandshake,
    version: Version,
    dcid: &[u8],
    client_scid: &[u8],
    pn: u32,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let ck = initial_keys(version, dcid, true)?;
    let sk = initial_keys(version, dcid, false)?;
    let c = crypto_frame(0, &h.client_hello);
    let client = initial_packet(&ck.local, version, dcid, client_scid, pn, &c, 1200)?;
    let s = crypto_frame(0, &h.server_hello);
    let server = initial_packet(&sk.local, version, client_scid, &h.scid, 0, &s, 0)?;
    Ok((client, server))
}
