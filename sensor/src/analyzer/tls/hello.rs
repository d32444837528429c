//! ClientHello / ServerHello facts.
//!
//! The fixed fields come from tls-parser; extensions are walked here one by one
//! (type, length, body) so that one extension tls-parser does not know, or one
//! malformed body, costs only that extension and never the whole hello: for a
//! sensor, reading values beats a generic parse error. Wire values stay numbers.

use tls_parser::{
    parse_tls_extension_alpn_content, parse_tls_extension_ec_point_formats_content,
    parse_tls_extension_elliptic_curves_content, parse_tls_extension_signature_algorithms_content,
    parse_tls_extension_sni_content, parse_tls_handshake_client_hello,
    parse_tls_handshake_server_hello, TlsExtension,
};

/// Longest name or ALPN value kept (RFC 6066 allows 2^16-1; DNS names are ≤ 253).
pub const MAX_NAME_LEN: usize = 1024;
/// ALPN values kept from one hello.
pub const MAX_ALPNS: usize = 32;

pub mod ext {
    pub const SERVER_NAME: u16 = 0x0000;
    pub const SUPPORTED_GROUPS: u16 = 0x000a;
    pub const EC_POINT_FORMATS: u16 = 0x000b;
    pub const SIGNATURE_ALGORITHMS: u16 = 0x000d;
    pub const ALPN: u16 = 0x0010;
    pub const SUPPORTED_VERSIONS: u16 = 0x002b;
}

/// GREASE values (RFC 8701): 0x?a?a with both bytes equal.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

/// What a ClientHello says, in wire order, GREASE included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub legacy_version: u16,
    pub ciphers: Vec<u16>,
    pub extensions: Vec<u16>,
    pub sni: Option<String>,
    pub alpns: Vec<String>,
    /// The first ALPN value as sent (JA4 reads its bytes, not its text).
    pub first_alpn: Vec<u8>,
    pub supported_versions: Vec<u16>,
    pub groups: Vec<u16>,
    pub point_formats: Vec<u8>,
    pub sig_algs: Vec<u16>,
    /// An SSLv2-format (RFC 6101 appendix E) hello.
    pub sslv2: bool,
    /// The client's random (zero for SSLv2): a proxy that relays a hello
    /// sends the same one on both legs, one that re-originates its own.
    pub random: [u8; 32],
}

/// What a ServerHello says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerHello {
    pub legacy_version: u16,
    /// From supported_versions (TLS 1.3), if present.
    pub selected_version: Option<u16>,
    pub cipher: u16,
    pub extensions: Vec<u16>,
    pub alpn: Option<String>,
    /// A HelloRetryRequest (RFC 8446 §4.1.3): a real ServerHello follows.
    pub retry_request: bool,
}

impl ServerHello {
    pub fn version(&self) -> u16 {
        self.selected_version.unwrap_or(self.legacy_version)
    }
}

/// SHA-256("HelloRetryRequest"), the random of a HelloRetryRequest.
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// Why a hello could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Parses a ClientHello body (after the 4-byte handshake header).
pub fn parse_client_hello(body: &[u8]) -> Result<ClientHello, Malformed> {
    let (_, ch) = parse_tls_handshake_client_hello(body).map_err(|_| Malformed)?;
    let mut random = [0u8; 32];
    let n = ch.random.len().min(32);
    random[..n].copy_from_slice(&ch.random[..n]);
    let mut out = ClientHello {
        random,
        legacy_version: ch.version.0,
        ciphers: ch.ciphers.iter().map(|c| c.0).collect(),
        ..Default::default()
    };
    if let Some(exts) = ch.ext {
        // room for a real hello's extensions at once (each takes at least
        // four bytes; a padded or hostile one does not buy more than 32)
        out.extensions.reserve((exts.len() / 4).min(32));
        for (ty, data) in raw_extensions(exts) {
            out.extensions.push(ty);
            client_extension(&mut out, ty, data);
        }
    }
    Ok(out)
}

fn client_extension(out: &mut ClientHello, ty: u16, data: &[u8]) {
    match ty {
        ext::SERVER_NAME => {
            if let Ok((_, TlsExtension::SNI(names))) = parse_tls_extension_sni_content(data) {
                // host_name(0) only; keep the first, as every sensor and server does
                if let Some((_, name)) = names.iter().find(|(t, _)| t.0 == 0) {
                    out.sni = Some(lossy_capped(name));
                }
            }
        }
        ext::ALPN => {
            if let Ok((_, TlsExtension::ALPN(list))) = parse_tls_extension_alpn_content(data) {
                out.alpns = list
                    .iter()
                    .take(MAX_ALPNS)
                    .map(|p| lossy_capped(p))
                    .collect();
                out.first_alpn = list
                    .first()
                    .map(|p| p[..p.len().min(MAX_NAME_LEN)].to_vec())
                    .unwrap_or_default();
            }
        }
        ext::SUPPORTED_VERSIONS => {
            // u8 length, then u16 versions
            if let Some((&len, rest)) = data.split_first() {
                let list = rest.get(..len as usize).unwrap_or(rest);
                out.supported_versions = u16s(list);
            }
        }
        ext::SUPPORTED_GROUPS => {
            if let Ok((_, TlsExtension::EllipticCurves(g))) =
                parse_tls_extension_elliptic_curves_content(data)
            {
                out.groups = g.iter().map(|g| g.0).collect();
            }
        }
        ext::EC_POINT_FORMATS => {
            if let Ok((_, TlsExtension::EcPointFormats(p))) =
                parse_tls_extension_ec_point_formats_content(data)
            {
                out.point_formats = p.to_vec();
            }
        }
        ext::SIGNATURE_ALGORITHMS => {
            if let Ok((_, TlsExtension::SignatureAlgorithms(s))) =
                parse_tls_extension_signature_algorithms_content(data)
            {
                out.sig_algs = s;
            }
        }
        _ => {}
    }
}

/// Parses a ServerHello body (after the 4-byte handshake header).
pub fn parse_server_hello(body: &[u8]) -> Result<ServerHello, Malformed> {
    let (_, sh) = parse_tls_handshake_server_hello(body).map_err(|_| Malformed)?;
    let mut out = ServerHello {
        legacy_version: sh.version.0,
        cipher: sh.cipher.0,
        retry_request: sh.random == HRR_RANDOM,
        ..Default::default()
    };
    if let Some(exts) = sh.ext {
        for (ty, data) in raw_extensions(exts) {
            out.extensions.push(ty);
            match ty {
                ext::SUPPORTED_VERSIONS if data.len() == 2 => {
                    out.selected_version = Some(u16::from_be_bytes([data[0], data[1]]));
                }
                ext::ALPN => {
                    if let Ok((_, TlsExtension::ALPN(list))) =
                        parse_tls_extension_alpn_content(data)
                    {
                        out.alpn = list.first().map(|p| lossy_capped(p));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Parses an SSLv2-format ClientHello record (2-byte header with the high bit set).
///
/// Returns the hello and the record length, or `None` if these bytes are not one.
pub fn parse_sslv2_client_hello(d: &[u8]) -> Option<(ClientHello, usize)> {
    if d.len() < 11 || d[0] & 0x80 == 0 || d[2] != 1 {
        return None;
    }
    let len = (((d[0] & 0x7f) as usize) << 8 | d[1] as usize) + 2;
    let version = u16::from_be_bytes([d[3], d[4]]);
    if !(version == 0x0002 || (0x0300..=0x0304).contains(&version)) {
        return None;
    }
    let specs_len = u16::from_be_bytes([d[5], d[6]]) as usize;
    let sid_len = u16::from_be_bytes([d[7], d[8]]) as usize;
    let chal_len = u16::from_be_bytes([d[9], d[10]]) as usize;
    if !specs_len.is_multiple_of(3) || 9 + specs_len + sid_len + chal_len != len - 2 {
        return None;
    }
    let specs = d.get(11..11 + specs_len)?;
    Some((
        ClientHello {
            legacy_version: version,
            // SSLv2 cipher kinds are 3 bytes; TLS suites appear as 0x00XXXX.
            ciphers: specs
                .chunks_exact(3)
                .filter(|c| c[0] == 0)
                .map(|c| u16::from_be_bytes([c[1], c[2]]))
                .collect(),
            sslv2: true,
            ..Default::default()
        },
        len,
    ))
}

/// Iterates (type, body) over an extensions block, stopping at the first
/// extension whose length runs past the block.
fn raw_extensions(mut d: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if d.len() < 4 {
            return None;
        }
        let ty = u16::from_be_bytes([d[0], d[1]]);
        let len = u16::from_be_bytes([d[2], d[3]]) as usize;
        let body = d.get(4..4 + len)?;
        d = &d[4 + len..];
        Some((ty, body))
    })
}

fn u16s(d: &[u8]) -> Vec<u16> {
    d.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

fn lossy_capped(b: &[u8]) -> String {
    let b = &b[..b.len().min(MAX_NAME_LEN)];
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grease_values() {
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && is_grease(0x3a3a));
        assert!(!is_grease(0x0a1a) && !is_grease(0x1301));
    }

    #[test]
    fn extension_walk_stops_at_overrun() {
        let d = [0, 0, 0, 1, 9, 0, 16, 0, 50, 1];
        let v: Vec<_> = raw_extensions(&d).collect();
        assert_eq!(v, vec![(0u16, &[9u8][..])]);
    }

    #[test]
    fn sslv2_hello() {
        // SSLv2 CLIENT-HELLO offering SSL 3.0, two cipher kinds, 16-byte challenge
        let mut d = vec![0x80, 0, 1, 0x03, 0x00, 0, 6, 0, 0, 0, 16];
        d.extend_from_slice(&[0x01, 0x00, 0x80, 0x00, 0x00, 0x2f]);
        d.extend_from_slice(&[7u8; 16]);
        d[1] = (d.len() - 2) as u8;
        let (ch, len) = parse_sslv2_client_hello(&d).expect("sslv2");
        assert_eq!(len, d.len());
        assert!(ch.sslv2);
        assert_eq!(ch.legacy_version, 0x0300);
        assert_eq!(ch.ciphers, vec![0x002f]);
        assert!(parse_sslv2_client_hello(&d[..10]).is_none());
    }
}
