//! Community ID v1 (corelight/community-id-spec): a flow hash shared by Zeek,
//! Suricata and most SIEMs, so spanwatch events join theirs.

use std::net::IpAddr;

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// A Community ID's text, `1:` and the 28 base64 characters of a SHA-1,
/// held inline: every flow with an event has one, and a flow's goes with its
/// `flow` event to the writer (no allocation made in one thread and freed in
/// another).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CommunityId([u8; 30]);

impl CommunityId {
    pub fn as_str(&self) -> &str {
        // `1:` and base64: ASCII
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for CommunityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// `1:` + base64(SHA-1(seed ‖ saddr ‖ daddr ‖ proto ‖ 0 ‖ sport ‖ dport)), the
/// endpoints ordered so the smaller (address, port) comes first.
pub fn community_id(
    seed: u16,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    proto: u8,
) -> CommunityId {
    let digest = digest(seed, src, sport, dst, dport, proto);
    let mut b = *b"1:0000000000000000000000000000";
    // 20 bytes are 28 base64 characters (with one `=`): the room is exact
    let written = base64::engine::general_purpose::STANDARD.encode_slice(digest, &mut b[2..]);
    debug_assert!(matches!(written, Ok(28)), "{written:?}");
    CommunityId(b)
}

pub(crate) fn digest(
    seed: u16,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    proto: u8,
) -> [u8; 20] {
    // ICMP types map to a (type, code) pair treated as ports; we only key flows
    // on TCP/UDP ports, and other protocols use port 0 on both sides.
    let ordered = (src, sport) <= (dst, dport);
    let ((a, ap), (b, bp)) = if ordered {
        ((src, sport), (dst, dport))
    } else {
        ((dst, dport), (src, sport))
    };
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    push_addr(&mut h, a);
    push_addr(&mut h, b);
    h.update([proto, 0]);
    if matches!(proto, 6 | 17 | 132) {
        h.update(ap.to_be_bytes());
        h.update(bp.to_be_bytes());
    }
    h.finalize().into()
}

fn push_addr(h: &mut Sha1, a: IpAddr) {
    match a {
        IpAddr::V4(v4) => h.update(v4.octets()),
        IpAddr::V6(v6) => h.update(v6.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// Vectors from the spec's README and Zeek's implementation tests.
    #[test]
    fn spec_test_vectors() {
        assert_eq!(
            community_id(0, ip("128.232.110.120"), 34855, ip("66.35.250.204"), 80, 6).as_str(),
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
        );
        // the same flow seen from the other side hashes the same
        assert_eq!(
            community_id(0, ip("66.35.250.204"), 80, ip("128.232.110.120"), 34855, 6).as_str(),
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
        );
        // Zeek's btest for community_id_v1 (testing/btest/bifs/community_id_v1.zeek)
        assert_eq!(
            community_id(0, ip("1.2.3.4"), 1122, ip("5.6.7.8"), 3344, 6).as_str(),
            "1:wCb3OG7yAFWelaUydu0D+125CLM="
        );
        assert_eq!(
            community_id(0, ip("1.2.3.4"), 1122, ip("5.6.7.8"), 3344, 17).as_str(),
            "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="
        );
        assert_eq!(
            community_id(
                0,
                ip("fe80::200:86ff:fe05:80da"),
                0,
                ip("fe80::260:97ff:fe07:69ea"),
                0,
                58
            )
            .as_str()
            .len(),
            30
        );
    }
}
