//! Which worker a frame goes to: the one that owns its address pair, so
//! that both directions of a flow (and its fragments) meet in one engine.

use std::net::IpAddr;

use crate::capture::LinkType;
use crate::decode::{self, Outcome};

/// The worker that owns the address pair of this frame.
pub fn worker_of(linktype: LinkType, data: &[u8], workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    let pair = match tcp_pair(linktype, data) {
        Some(p) => p,
        None => match decode::decode(linktype, data) {
            Ok(Outcome::Packet(d)) => (d.src, d.dst),
            Ok(Outcome::Fragment(f)) => (f.src, f.dst),
            // undecodable: any worker counts it the same
            Err(_) => return 0,
        },
    };
    let (lo, hi) = if pair.0 <= pair.1 {
        pair
    } else {
        (pair.1, pair.0)
    };
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = ahash::RandomState::with_seeds(7, 11, 13, 17).build_hasher();
    lo.hash(&mut h);
    hi.hash(&mut h);
    (h.finish() % workers as u64) as usize
}

/// The address pair of a TCP packet over Ethernet (VLAN tags allowed), read
/// straight from the headers: the common case, without a full decode. TCP
/// carries no tunnel spanwatch follows, so the full decode would give the same
/// pair (fragments of a TCP datagram included); anything else returns None.
pub(super) fn tcp_pair(linktype: LinkType, d: &[u8]) -> Option<(IpAddr, IpAddr)> {
    if linktype != LinkType::ETHERNET {
        return None;
    }
    let mut off = 12;
    let mut et = u16::from_be_bytes([*d.get(off)?, *d.get(off + 1)?]);
    while matches!(et, 0x8100 | 0x88a8 | 0x9100) && off < 12 + 4 * 4 {
        off += 4;
        et = u16::from_be_bytes([*d.get(off)?, *d.get(off + 1)?]);
    }
    let ip = d.get(off + 2..)?;
    match et {
        0x0800 if ip.first()? >> 4 == 4 && *ip.get(9)? == 6 => {
            let a: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let b: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            Some((IpAddr::from(a), IpAddr::from(b)))
        }
        0x86dd if ip.first()? >> 4 == 6 && *ip.get(6)? == 6 => {
            let a: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let b: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            Some((IpAddr::from(a), IpAddr::from(b)))
        }
        _ => None,
    }
}
