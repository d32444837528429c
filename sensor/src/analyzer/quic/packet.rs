//! QUIC long headers (RFC 8999 §5.1, RFC 9000 §17.2), the versions whose
//! Initial packets the sensor can open, and variable-length integers.

/// A version whose Initial packets the sensor can open: its salt (RFC 9001
/// §5.2, RFC 9369 §3.3.1), HKDF labels and long-header packet types.
#[derive(Debug)]
pub struct Version {
    pub number: u32,
    pub salt: [u8; 20],
    pub key_label: &'static [u8],
    pub iv_label: &'static [u8],
    pub hp_label: &'static [u8],
    pub initial: u8,
    pub retry: u8,
}

const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];
/// Drafts 29 to 32 (draft-ietf-quic-tls-29 §5.2).
const SALT_DRAFT29: [u8; 20] = [
    0xaf, 0xbf, 0xec, 0x28, 0x99, 0x93, 0xd2, 0x4c, 0x9e, 0x97, 0x86, 0xf1, 0x9c, 0x61, 0x11, 0xe0,
    0x43, 0x90, 0xa8, 0x99,
];
/// Drafts 23 to 28 (draft-ietf-quic-tls-23 §5.2).
const SALT_DRAFT23: [u8; 20] = [
    0xc3, 0xee, 0xf7, 0x12, 0xc7, 0x2e, 0xbb, 0x5a, 0x11, 0xa7, 0xd2, 0x43, 0x2b, 0xb4, 0x63, 0x65,
    0xbe, 0xf9, 0xf5, 0x02,
];

pub const V1: u32 = 0x0000_0001;
pub const V2: u32 = 0x6b33_43cf;

const fn v1_like(number: u32, salt: [u8; 20]) -> Version {
    Version {
        number,
        salt,
        key_label: b"quic key",
        iv_label: b"quic iv",
        hp_label: b"quic hp",
        initial: 0,
        retry: 3,
    }
}

static VERSIONS: [Version; 12] = [
    v1_like(V1, SALT_V1),
    Version {
        number: V2,
        salt: SALT_V2,
        key_label: b"quicv2 key",
        iv_label: b"quicv2 iv",
        hp_label: b"quicv2 hp",
        initial: 1,
        retry: 0,
    },
    v1_like(0xff00_001d, SALT_DRAFT29),
    v1_like(0xff00_001e, SALT_DRAFT29),
    v1_like(0xff00_001f, SALT_DRAFT29),
    v1_like(0xff00_0020, SALT_DRAFT29),
    v1_like(0xff00_0017, SALT_DRAFT23),
    v1_like(0xff00_0018, SALT_DRAFT23),
    v1_like(0xff00_0019, SALT_DRAFT23),
    v1_like(0xff00_001a, SALT_DRAFT23),
    v1_like(0xff00_001b, SALT_DRAFT23),
    v1_like(0xff00_001c, SALT_DRAFT23),
];

impl Version {
    pub fn of(number: u32) -> Option<&'static Version> {
        VERSIONS.iter().find(|v| v.number == number)
    }
}

/// How the event names a version: `1`, `2`, `draft-29`, or its hex.
pub fn version_name(v: u32) -> String {
    match v {
        V1 => "1".into(),
        V2 => "2".into(),
        0xff00_0000..=0xff00_00ff => format!("draft-{}", v & 0xff),
        _ => format!("0x{v:08x}"),
    }
}

/// A QUIC variable-length integer (RFC 9000 §16) at the start of `b`: its
/// value and length.
pub fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    let bytes = b.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for x in &bytes[1..] {
        v = (v << 8) | u64::from(*x);
    }
    Some((v, len))
}

/// Longest connection ID of versions 1 and 2 (RFC 9000 §17.2).
pub const MAX_CID_LEN: usize = 20;

/// A long-header packet's fields before its protected part.
#[derive(Debug, Clone, Copy)]
pub struct LongHeader<'a> {
    pub first: u8,
    pub version: u32,
    pub dcid: &'a [u8],
    pub scid: &'a [u8],
    /// Where the fields after the connection IDs start.
    pub rest_at: usize,
}

impl<'a> LongHeader<'a> {
    /// The invariant part of a long header (RFC 8999 §5.1); `None` if `b` is
    /// not one or is cut short.
    pub fn parse(b: &'a [u8]) -> Option<Self> {
        let first = *b.first()?;
        if first & 0x80 == 0 {
            return None;
        }
        let version = u32::from_be_bytes(b.get(1..5)?.try_into().ok()?);
        let dl = *b.get(5)? as usize;
        let dcid = b.get(6..6 + dl)?;
        let sl = *b.get(6 + dl)? as usize;
        let scid = b.get(7 + dl..7 + dl + sl)?;
        Some(LongHeader {
            first,
            version,
            dcid,
            scid,
            rest_at: 7 + dl + sl,
        })
    }

    /// The long packet type bits.
    pub fn packet_type(&self) -> u8 {
        (self.first >> 4) & 3
    }
}

/// The extent of a packet with a Length field (Initial, 0-RTT, Handshake) in
/// a datagram: where its packet number starts and where it ends. An Initial
/// has a token first.
pub fn extent(b: &[u8], h: &LongHeader<'_>, initial: bool) -> Option<(usize, usize)> {
    let mut at = h.rest_at;
    if initial {
        let (tlen, n) = varint(b.get(at..)?)?;
        at = at
            .checked_add(n)?
            .checked_add(usize::try_from(tlen).ok()?)?;
    }
    let (len, n) = varint(b.get(at..)?)?;
    let pn_at = at + n;
    let end = pn_at.checked_add(usize::try_from(len).ok()?)?;
    (end <= b.len()).then_some((pn_at, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_of_rfc9000_appendix_a1() {
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (b, v) in cases {
            assert_eq!(varint(b), Some((v, b.len())));
        }
        assert_eq!(varint(&[0x40]), None);
        assert_eq!(varint(&[]), None);
    }

    #[test]
    fn long_header_cut_anywhere_is_none() {
        let b = [0xc0, 0, 0, 0, 1, 2, 0xaa, 0xbb, 1, 0xcc, 0, 1, 0];
        let h = LongHeader::parse(&b).expect("whole header");
        assert_eq!(
            (h.version, h.dcid, h.scid),
            (1, &[0xaa, 0xbb][..], &[0xcc][..])
        );
        assert_eq!(extent(&b, &h, true), Some((12, 13)));
        for cut in 0..10 {
            assert!(LongHeader::parse(&b[..cut]).is_none(), "cut {cut}");
        }
        assert!(extent(&b[..12], &h, true).is_none());
    }

    #[test]
    fn version_names() {
        assert_eq!(version_name(1), "1");
        assert_eq!(version_name(V2), "2");
        assert_eq!(version_name(0xff00_001d), "draft-29");
        assert_eq!(version_name(0x5130_3530), "0x51303530");
        assert!(Version::of(0xff00_001d).is_some() && Version::of(0x5130_3530).is_none());
    }
}
