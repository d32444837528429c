//! IPv6: the fixed header and the extension-header chain, walked by our own
//! bounded, checked code.
//!
//! Workaround for etherparse 0.21.0: `LaxIpv6Slice::extensions()` returns an
//! `Ipv6ExtensionSliceIter` that, when the lax parser stopped inside the chain
//! (a Fragment header whose next header is a missing or cut-short extension
//! header, a Hop-by-Hop header that is not first), follows the last parsed
//! header's next-header into the unparsed remainder and reads it with
//! `from_slice_unchecked`: one crafted packet reads past the frame (a SIGSEGV
//! in release builds). Nothing here calls that iterator or the lax IPv6
//! slicer. When upstream fixes the iterator, the header walk could go back to
//! etherparse, but keep the fragment handling below: after a Fragment header
//! that fragments, the rest is the datagram's fragmentable part, which is
//! walked only once the datagram is whole (RFC 8200 §4.5), not read as
//! headers of this packet as etherparse's lax walk does.

use std::net::IpAddr;

use etherparse::Ipv6HeaderSlice;

use super::{transport_of, DecodeError, Decoded, Fragment, Outcome, Transport, Vlans};

const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTH: u8 = 51;
const DEST_OPTIONS: u8 = 60;

const FIXED_HEADER: usize = 40;

/// A Fragment header that fragments (offset ≠ 0 or more fragments follow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FragmentHeader {
    pub id: u32,
    /// Offset of the fragment's data in the fragmentable part, in bytes.
    pub offset: u32,
    pub more: bool,
}

/// Where the extension-header chain ended.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chain<'a> {
    /// The protocol of `rest`: the upper-layer protocol when the chain was
    /// walked to its end, the header it stopped at when one was cut short or
    /// malformed (never TCP or UDP then, so no transport is read from it), or
    /// a fragment's next header.
    pub proto: u8,
    pub rest: &'a [u8],
    /// Set when the walk stopped at a Fragment header that fragments: `rest`
    /// is then this fragment's data.
    pub fragment: Option<FragmentHeader>,
}

/// Decodes an IPv6 packet (the caller saw version 6 in the first nibble).
pub(super) fn decode(data: &[u8], vlans: Vlans) -> Result<Outcome<'_>, DecodeError> {
    let h = Ipv6HeaderSlice::from_slice(data).map_err(|e| match e {
        etherparse::err::ipv6::HeaderSliceError::Len(_) => DecodeError::Truncated,
        etherparse::err::ipv6::HeaderSliceError::Content(_) => DecodeError::Malformed,
    })?;
    let src = IpAddr::V6(h.source_addr());
    let dst = IpAddr::V6(h.destination_addr());
    let chain = walk(h.next_header().0, payload(data, h.payload_length()), true);
    if let Some(f) = chain.fragment {
        return Ok(Outcome::Fragment(Fragment {
            vlans,
            src,
            dst,
            proto: chain.proto,
            id: f.id,
            offset: f.offset,
            more: f.more,
            payload: chain.rest,
        }));
    }
    let base = Decoded {
        vlans,
        src,
        dst,
        proto: chain.proto,
        sport: 0,
        dport: 0,
        transport: Transport::Other,
        payload: chain.rest,
        segment: &[],
    };
    transport_of(base).map(Outcome::Packet)
}

/// The bytes after the fixed header, cut to the Payload Length. A length of
/// zero (a jumbogram) or one longer than what was captured leaves what there
/// is, so a truncated capture still decodes as far as it goes.
fn payload(data: &[u8], declared: u16) -> &[u8] {
    let rest = data.get(FIXED_HEADER..).unwrap_or_default();
    match usize::from(declared) {
        0 => rest,
        n => rest.get(..n).unwrap_or(rest),
    }
}

/// Walks the extension headers from `next` over `data`. `at_start` says
/// `data` follows the fixed header (the only place a Hop-by-Hop header may
/// stand); a reassembled datagram's fragmentable part is walked with `false`.
///
/// Every step consumes at least 8 bytes of `data` or stops, so the walk ends
/// within `data.len() / 8` steps; no length is used before it is checked.
pub(super) fn walk(mut next: u8, data: &[u8], at_start: bool) -> Chain<'_> {
    let mut rest = data;
    let mut first = at_start;
    loop {
        let len = match next {
            HOP_BY_HOP if first => options_len(rest),
            ROUTING | DEST_OPTIONS => options_len(rest),
            AUTH => auth_len(rest),
            FRAGMENT => match rest.get(..8) {
                Some(h) => {
                    let offset = u32::from(u16::from_be_bytes([h[2], h[3]]) >> 3) * 8;
                    let more = h[3] & 1 != 0;
                    if offset != 0 || more {
                        return Chain {
                            proto: h[0],
                            rest: &rest[8..],
                            fragment: Some(FragmentHeader {
                                id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                                offset,
                                more,
                            }),
                        };
                    }
                    // An atomic fragment (RFC 6946): the packet is whole.
                    Some(8)
                }
                None => None,
            },
            // The upper-layer protocol (or one this walk does not know).
            _ => return done(next, rest),
        };
        // A header cut short, malformed, or a Hop-by-Hop header out of place:
        // stop at it (its protocol number is not TCP or UDP, so no transport
        // header is read from what follows).
        let Some(len) = len else {
            return done(next, rest);
        };
        next = rest[0];
        rest = &rest[len..];
        first = false;
    }
}

fn done(proto: u8, rest: &[u8]) -> Chain<'_> {
    Chain {
        proto,
        rest,
        fragment: None,
    }
}

/// Length of a Hop-by-Hop, Routing or Destination Options header, if it is
/// all there: (Hdr Ext Len + 1) × 8 bytes (RFC 8200 §4.3).
fn options_len(rest: &[u8]) -> Option<usize> {
    let len = (usize::from(*rest.get(1)?) + 1) * 8;
    (rest.len() >= len).then_some(len)
}

/// Length of an Authentication Header, if it is all there and well formed:
/// (Payload Len + 2) × 4 bytes, at least the 12-byte fixed part (RFC 4302 §2.2).
fn auth_len(rest: &[u8]) -> Option<usize> {
    let units = usize::from(*rest.get(1)?);
    if units == 0 {
        return None;
    }
    let len = (units + 2) * 4;
    (len >= 12 && rest.len() >= len).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(next: u8, len_units: u8) -> Vec<u8> {
        let mut h = vec![next, len_units];
        h.resize((len_units as usize + 1) * 8, 0);
        h
    }

    #[test]
    fn walks_options_to_the_upper_layer() {
        let mut d = ext(DEST_OPTIONS, 0);
        d.extend(ext(6, 1));
        d.extend_from_slice(b"tcp");
        let c = walk(HOP_BY_HOP, &d, true);
        assert_eq!((c.proto, c.rest, c.fragment), (6, &b"tcp"[..], None));
    }

    #[test]
    fn hop_by_hop_only_first() {
        let mut d = ext(HOP_BY_HOP, 0);
        d.extend_from_slice(b"x");
        let c = walk(HOP_BY_HOP, &d, true);
        assert_eq!((c.proto, c.rest.len()), (HOP_BY_HOP, 1));
        let c = walk(HOP_BY_HOP, &d, false);
        assert_eq!((c.proto, c.rest.len()), (HOP_BY_HOP, d.len()));
    }

    #[test]
    fn cut_headers_stop_the_walk() {
        let d = ext(6, 2);
        for cut in 0..d.len() {
            let c = walk(DEST_OPTIONS, &d[..cut], true);
            assert_eq!((c.proto, c.rest.len()), (DEST_OPTIONS, cut));
        }
        for cut in 0..8 {
            let c = walk(FRAGMENT, &[6, 0, 0, 1, 0, 0, 0, 9][..cut], true);
            assert_eq!((c.proto, c.fragment), (FRAGMENT, None));
        }
    }

    #[test]
    fn a_fragment_header_ends_the_walk() {
        // next header Destination Options, offset 16, more fragments: the rest
        // is fragment data, never read as headers.
        let mut d = vec![DEST_OPTIONS, 0, 0, 16 | 1, 0, 0, 0, 7];
        d.extend_from_slice(&[HOP_BY_HOP, 200]);
        let c = walk(FRAGMENT, &d, true);
        assert_eq!(c.proto, DEST_OPTIONS);
        assert_eq!(c.rest, &[HOP_BY_HOP, 200]);
        assert_eq!(
            c.fragment,
            Some(FragmentHeader {
                id: 7,
                offset: 16,
                more: true
            })
        );
        // an atomic fragment is skipped like any other header
        let c = walk(FRAGMENT, &[17, 0, 0, 0, 0, 0, 0, 7, 1], true);
        assert_eq!((c.proto, c.rest, c.fragment), (17, &[1u8][..], None));
    }

    #[test]
    fn authentication_header_lengths() {
        let mut ah = vec![6, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        ah.extend_from_slice(b"p");
        let c = walk(AUTH, &ah, true);
        assert_eq!((c.proto, c.rest), (6, &b"p"[..]));
        ah[1] = 0;
        assert_eq!(walk(AUTH, &ah, true).proto, AUTH);
        ah[1] = 9;
        assert_eq!(walk(AUTH, &ah, true).proto, AUTH);
    }

    #[test]
    fn payload_length_cuts_padding_and_tolerates_truncation() {
        let mut d = vec![0u8; 40];
        d.extend_from_slice(b"abcdef");
        assert_eq!(payload(&d, 3), b"abc");
        assert_eq!(payload(&d, 0), b"abcdef");
        assert_eq!(payload(&d, 100), b"abcdef");
        assert_eq!(payload(&d[..20], 3), b"");
    }
}
