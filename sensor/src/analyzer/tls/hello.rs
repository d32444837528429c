//! ClientHello / ServerHello facts.
//!
//! The fixed fields come from tls-parser; extensions are walked here one by one
//! (type, length, body) so that one extension tls-parser does not know, or one
//! malformed body, costs only that extension and never the whole hello: for a
//! sensor, reading values beats a generic parse error. Wire values stay numbers.

use smallvec::SmallVec;
use tls_parser::{parse_tls_handshake_client_hello, parse_tls_handshake_server_hello};

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

/// `list` without its GREASE values (what every fingerprint reads).
pub fn without_grease(list: &[u16]) -> impl Iterator<Item = u16> + '_ {
    list.iter().copied().filter(|v| !is_grease(*v))
}

/// What a ClientHello says, in wire order, GREASE included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
///
/// The lists are inline up to sizes real hellos stay under (one hello is
/// read per connection: its lists were a third of the allocations of a
/// handshake), and spill to the heap beyond.
pub struct ClientHello {
    pub legacy_version: u16,
    pub ciphers: SmallVec<[u16; 32]>,
    pub extensions: SmallVec<[u16; 32]>,
    pub sni: Option<String>,
    pub alpns: SmallVec<[String; 2]>,
    /// The first ALPN value as sent (JA4 reads its bytes, not its text).
    pub first_alpn: SmallVec<[u8; 16]>,
    pub supported_versions: SmallVec<[u16; 8]>,
    pub groups: SmallVec<[u16; 16]>,
    pub point_formats: SmallVec<[u8; 8]>,
    pub sig_algs: SmallVec<[u16; 32]>,
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
    pub extensions: SmallVec<[u16; 16]>,
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

/// Reads one extension of a ClientHello into `out`. The bodies are short
/// length-prefixed lists, read here in place (tls-parser's `*_content`
/// functions collect each into a vector first); what they accept is what
/// tls-parser 0.12 accepts, case by case (see each arm), which a test checks
/// against tls-parser on every hello of the corpus and damaged copies.
fn client_extension(out: &mut ClientHello, ty: u16, data: &[u8]) {
    match ty {
        ext::SERVER_NAME => {
            // u16 list length (must fit), then entries (u8 type, u16 length,
            // name) read until one does not fit; the first host_name(0) kept,
            // as every sensor and server does
            if let Some(name) = u16_prefixed(data)
                .and_then(|l| sni_entries(l).find(|(t, _)| *t == 0))
                .map(|(_, n)| n)
            {
                out.sni = Some(lossy_capped(name));
            }
        }
        ext::ALPN => {
            // u16 list length (must fit), then u8-prefixed names read until
            // one does not fit; an empty list replaces an earlier one
            if let Some(list) = u16_prefixed(data) {
                out.alpns = alpn_names(list).take(MAX_ALPNS).map(lossy_capped).collect();
                out.first_alpn = alpn_names(list)
                    .next()
                    .map(|p| SmallVec::from_slice(&p[..p.len().min(MAX_NAME_LEN)]))
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
            // u16 length (must fit), an even number of bytes
            if let Some(l) = u16_prefixed(data).filter(|l| l.len().is_multiple_of(2)) {
                out.groups = u16s(l);
            }
        }
        ext::EC_POINT_FORMATS => {
            // u8 length (must fit)
            if let Some((&len, rest)) = data.split_first() {
                if let Some(l) = rest.get(..len as usize) {
                    out.point_formats = SmallVec::from_slice(l);
                }
            }
        }
        ext::SIGNATURE_ALGORITHMS => {
            // u16 length (must fit); an odd last byte is left
            if let Some(l) = u16_prefixed(data) {
                out.sig_algs = u16s(l);
            }
        }
        _ => {}
    }
}

/// The body of a u16-length-prefixed vector, if its length fits.
fn u16_prefixed(d: &[u8]) -> Option<&[u8]> {
    let n = u16::from_be_bytes([*d.first()?, *d.get(1)?]) as usize;
    d.get(2..2 + n)
}

/// A server_name list's (type, name) entries, up to the first that does not fit.
fn sni_entries(mut l: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&t, rest) = l.split_first()?;
        let name = u16_prefixed(rest)?;
        l = &rest[2 + name.len()..];
        Some((t, name))
    })
}

/// An ALPN list's names, up to the first that does not fit.
fn alpn_names(mut l: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (&n, rest) = l.split_first()?;
        let name = rest.get(..n as usize)?;
        l = &rest[n as usize..];
        Some(name)
    })
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
                    // as the ClientHello's (an empty list: no protocol)
                    if let Some(list) = u16_prefixed(data) {
                        out.alpn = alpn_names(list).next().map(lossy_capped);
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

fn u16s<A: smallvec::Array<Item = u16>>(d: &[u8]) -> SmallVec<A> {
    d.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

fn lossy_capped(b: &[u8]) -> String {
    let b = &b[..b.len().min(MAX_NAME_LEN)];
    // the checker's ASCII fast path first: names and ALPNs are ASCII, and
    // `from_utf8_lossy` walks them chunk by chunk (the same result)
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
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
        assert_eq!(ch.ciphers.as_slice(), [0x002f]);
        assert!(parse_sslv2_client_hello(&d[..10]).is_none());
    }

    /// What the extension readers used to be: tls-parser's `*_content`.
    fn reference(ty: u16, data: &[u8]) -> ClientHello {
        use tls_parser::{
            parse_tls_extension_alpn_content, parse_tls_extension_ec_point_formats_content as pf,
            parse_tls_extension_elliptic_curves_content as groups,
            parse_tls_extension_signature_algorithms_content as sigs,
            parse_tls_extension_sni_content as sni, TlsExtension,
        };
        let mut out = ClientHello::default();
        match (ty, ty) {
            (ext::SERVER_NAME, _) => {
                if let Ok((_, TlsExtension::SNI(names))) = sni(data) {
                    if let Some((_, name)) = names.iter().find(|(t, _)| t.0 == 0) {
                        out.sni = Some(lossy_capped(name));
                    }
                }
            }
            (ext::ALPN, _) => {
                if let Ok((_, TlsExtension::ALPN(list))) = parse_tls_extension_alpn_content(data) {
                    out.alpns = list
                        .iter()
                        .take(MAX_ALPNS)
                        .map(|p| lossy_capped(p))
                        .collect();
                    out.first_alpn = list
                        .first()
                        .map(|p| SmallVec::from_slice(&p[..p.len().min(MAX_NAME_LEN)]))
                        .unwrap_or_default();
                }
            }
            (ext::SUPPORTED_GROUPS, _) => {
                if let Ok((_, TlsExtension::EllipticCurves(g))) = groups(data) {
                    out.groups = g.iter().map(|g| g.0).collect();
                }
            }
            (ext::EC_POINT_FORMATS, _) => {
                if let Ok((_, TlsExtension::EcPointFormats(p))) = pf(data) {
                    out.point_formats = SmallVec::from_slice(p);
                }
            }
            (ext::SIGNATURE_ALGORITHMS, _) => {
                if let Ok((_, TlsExtension::SignatureAlgorithms(s))) = sigs(data) {
                    out.sig_algs = s.into_iter().collect();
                }
            }
            _ => client_extension(&mut out, ty, data),
        }
        out
    }

    /// The in-place readers accept and read what tls-parser does: on real
    /// bodies, each cut at every length, with every value of each of the
    /// first four bytes (the lengths), and on pseudo-random bytes.
    #[test]
    fn extension_bodies_read_as_tls_parser_reads_them() {
        let seeds: &[(u16, &[u8])] = &[
            (ext::SERVER_NAME, b"\x00\x10\x00\x00\x0dngrok-free.app"),
            (ext::SERVER_NAME, b"\x00\x0c\x01\x00\x01x\x00\x00\x04a.io"),
            (ext::SERVER_NAME, b""),
            (ext::ALPN, b"\x00\x0c\x02h2\x08http/1.1"),
            (ext::ALPN, b"\x00\x05\x00\x03h3x"),
            (
                ext::SUPPORTED_GROUPS,
                b"\x00\x08\x0a\x0a\x00\x1d\x00\x17\x00\x18",
            ),
            (ext::EC_POINT_FORMATS, b"\x03\x00\x01\x02"),
            (
                ext::SIGNATURE_ALGORITHMS,
                b"\x00\x06\x04\x03\x08\x04\x04\x01",
            ),
        ];
        let mut cases: Vec<(u16, Vec<u8>)> = Vec::new();
        for (ty, body) in seeds {
            for cut in 0..=body.len() {
                cases.push((*ty, body[..cut].to_vec()));
            }
            for at in 0..body.len().min(4) {
                for v in 0..=255u8 {
                    let mut b = body.to_vec();
                    b[at] = v;
                    cases.push((*ty, b));
                }
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000 {
            let ty = seeds[i % seeds.len()].0;
            let len = (i / seeds.len()) % 24;
            let b = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // small values often: they are what lengths look like
                    if x.is_multiple_of(3) {
                        (x >> 8) as u8 % 8
                    } else {
                        (x >> 8) as u8
                    }
                })
                .collect();
            cases.push((ty, b));
        }
        for (ty, b) in &cases {
            let mut mine = ClientHello::default();
            client_extension(&mut mine, *ty, b);
            assert_eq!(mine, reference(*ty, b), "extension {ty:#06x} body {b:02x?}");
        }
        assert!(cases.len() > 25_000);
    }
}
