//! Structure-aware: ClientHellos whose every length field is right, so the
//! mutations reach the extension parsers, JA3/JA4 and the facts instead of
//! stopping at the first length check; then fed as `fuzzing::tls` is (a
//! crash found here reproduces through the `tls` target with the bytes).
#![no_main]

use arbitrary::Arbitrary;

#[derive(Arbitrary, Debug)]
enum Ext {
    Sni(Vec<Vec<u8>>),
    Alpn(Vec<Vec<u8>>),
    Groups(Vec<u16>),
    SigAlgs(Vec<u16>),
    SupportedVersions(Vec<u16>),
    KeyShare(Vec<(u16, Vec<u8>)>),
    PointFormats(Vec<u8>),
    Raw(u16, Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Hello {
    version: u16,
    random: [u8; 32],
    session_id: Vec<u8>,
    ciphers: Vec<u16>,
    compression: Vec<u8>,
    extensions: Vec<Ext>,
    /// Record size the handshake is cut into (0: one record).
    record: u16,
    /// What the server says back (raw bytes).
    server: Vec<u8>,
}

fn u16s(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}

/// `body` behind a length of `n` bytes.
fn len(n: usize, body: &[u8]) -> Vec<u8> {
    let l = body.len().min((1usize << (8 * n)) - 1);
    let mut v = l.to_be_bytes()[8 - n..].to_vec();
    v.extend_from_slice(&body[..l]);
    v
}

fn ext(e: &Ext) -> Vec<u8> {
    let (ty, body): (u16, Vec<u8>) = match e {
        Ext::Sni(names) => {
            let list: Vec<u8> = names.iter().flat_map(|n| [vec![0], len(2, n)].concat()).collect();
            (0, len(2, &list))
        }
        Ext::Alpn(protos) => {
            let list: Vec<u8> = protos.iter().flat_map(|p| len(1, p)).collect();
            (16, len(2, &list))
        }
        Ext::Groups(g) => (10, len(2, &u16s(g))),
        Ext::SigAlgs(s) => (13, len(2, &u16s(s))),
        Ext::SupportedVersions(v) => (43, len(1, &u16s(v))),
        Ext::KeyShare(ks) => {
            let list: Vec<u8> = ks
                .iter()
                .flat_map(|(g, k)| [g.to_be_bytes().to_vec(), len(2, k)].concat())
                .collect();
            (51, len(2, &list))
        }
        Ext::PointFormats(p) => (11, len(1, p)),
        Ext::Raw(t, b) => (*t, b.clone()),
    };
    [ty.to_be_bytes().to_vec(), len(2, &body)].concat()
}

libfuzzer_sys::fuzz_target!(|h: Hello| {
    let mut body = h.version.to_be_bytes().to_vec();
    body.extend_from_slice(&h.random);
    body.extend(len(1, &h.session_id));
    body.extend(len(2, &u16s(&h.ciphers)));
    body.extend(len(1, &h.compression));
    let exts: Vec<u8> = h.extensions.iter().flat_map(ext).collect();
    body.extend(len(2, &exts));
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let size = if h.record == 0 { hs.len().max(1) } else { usize::from(h.record) };
    let mut records = Vec::new();
    for chunk in hs.chunks(size.min(16_384)) {
        records.extend_from_slice(&[22, 3, 1]);
        records.extend(len(2, chunk));
    }
    // the first byte splits client from server bytes in `fuzzing::tls`
    let at = records.len() * 256 / (records.len() + h.server.len() + 1);
    let mut input = vec![at.min(255) as u8];
    input.extend(records);
    input.extend(h.server);
    spanwatch::fuzzing::tls(&input);
});
