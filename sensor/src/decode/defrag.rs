//! Bounded IPv4/IPv6 fragment reassembly.
//!
//! etherparse's `IpDefragBuf` rebuilds one datagram; this table around it holds
//! at most [`MAX_DATAGRAMS`] datagrams in progress, drops those not completed
//! within [`FRAGMENT_TIMEOUT`] of capture time, and counts what it dropped.

use std::collections::HashMap;
use std::net::IpAddr;

use etherparse::defrag::IpDefragBuf;
use etherparse::{IpFragOffset, IpNumber};

use super::{Fragment, Vlans};
use crate::time::{Duration, Timestamp};

/// Datagrams being reassembled at once (per worker).
pub const MAX_DATAGRAMS: usize = 1024;
/// How long a datagram may wait for its missing fragments.
pub const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A datagram's identity. IPv4 names its protocol in every fragment (RFC 791:
/// the protocol is part of the identity); IPv6 fragments of one datagram may
/// carry different Next Header values, of which only the first fragment's
/// counts (RFC 8200 §4.5), so it is not part of an IPv6 key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    vlans: Vlans,
    src: IpAddr,
    dst: IpAddr,
    proto: Option<u8>,
    id: u32,
}

/// A datagram in progress: the fragments so far, when the first came, and
/// the protocol of its fragmentable part once the offset-zero fragment named it.
struct Pending {
    buf: IpDefragBuf,
    first: Timestamp,
    proto: Option<u8>,
}

/// A datagram rebuilt from its fragments.
#[derive(Debug)]
pub struct Datagram {
    /// The protocol of `data` (for IPv6: the offset-zero fragment's Next
    /// Header, which may be an extension header that starts `data`).
    pub proto: u8,
    pub data: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct DefragStats {
    pub fragments: u64,
    pub reassembled: u64,
    /// Datagrams dropped: timed out, evicted for room, or inconsistent.
    pub dropped: u64,
}

#[derive(Default)]
pub struct Defragmenter {
    active: HashMap<Key, Pending, ahash::RandomState>,
    pub stats: DefragStats,
}

impl Defragmenter {
    /// Adds a fragment; returns the whole datagram payload once complete.
    pub fn add(&mut self, now: Timestamp, f: &Fragment<'_>) -> Option<Datagram> {
        self.stats.fragments += 1;
        let key = Key {
            vlans: f.vlans,
            src: f.src,
            dst: f.dst,
            proto: f.src.is_ipv4().then_some(f.proto),
            id: f.id,
        };
        if !self.active.contains_key(&key) && self.active.len() >= MAX_DATAGRAMS {
            self.expire(now);
            if self.active.len() >= MAX_DATAGRAMS {
                // Still full: make room by dropping the oldest datagram.
                if let Some(oldest) = self
                    .active
                    .iter()
                    .min_by_key(|(_, p)| p.first)
                    .map(|(k, _)| *k)
                {
                    self.active.remove(&oldest);
                    self.stats.dropped += 1;
                }
            }
        }
        let p = self.active.entry(key).or_insert_with(|| Pending {
            buf: IpDefragBuf::new(IpNumber(f.proto), Vec::new(), Vec::new()),
            first: now,
            proto: None,
        });
        if f.offset == 0 {
            p.proto = Some(f.proto);
        }
        let offset = IpFragOffset::try_new((f.offset / 8) as u16).ok();
        let ok = offset.is_some_and(|o| p.buf.add(o, f.more, f.payload).is_ok());
        if !ok {
            self.active.remove(&key);
            self.stats.dropped += 1;
            return None;
        }
        if p.buf.is_complete() {
            let p = self.active.remove(&key)?;
            self.stats.reassembled += 1;
            let (data, _) = p.buf.take_bufs();
            // complete means the offset-zero fragment was added
            return Some(Datagram {
                proto: p.proto.unwrap_or(f.proto),
                data,
            });
        }
        None
    }

    /// Drops datagrams older than [`FRAGMENT_TIMEOUT`].
    pub fn expire(&mut self, now: Timestamp) {
        let before = self.active.len();
        self.active
            .retain(|_, p| now.since(p.first) < FRAGMENT_TIMEOUT);
        self.stats.dropped += (before - self.active.len()) as u64;
    }

    pub fn in_progress(&self) -> usize {
        self.active.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(id: u32, offset: u32, more: bool, payload: &[u8]) -> Fragment<'_> {
        Fragment {
            vlans: Vlans::default(),
            src: "192.0.2.1".parse().expect("ip"),
            dst: "192.0.2.2".parse().expect("ip"),
            proto: 17,
            id,
            offset,
            more,
            payload,
        }
    }

    #[test]
    fn out_of_order_fragments_reassemble() {
        let mut d = Defragmenter::default();
        let a = [1u8; 16];
        let b = [2u8; 5];
        assert!(d.add(Timestamp(0), &frag(7, 16, false, &b)).is_none());
        let whole = d
            .add(Timestamp(1), &frag(7, 0, true, &a))
            .expect("complete")
            .data;
        assert_eq!(&whole[..16], &a);
        assert_eq!(&whole[16..], &b);
        assert_eq!(d.in_progress(), 0);
    }

    #[test]
    fn ipv6_fragments_take_the_first_fragments_next_header() {
        // RFC 8200 §4.5: the Next Header of later fragments may differ and is
        // ignored; only the offset-zero fragment's counts.
        let v6 = |proto, offset, more, payload| Fragment {
            src: "2001:db8::1".parse().expect("ip"),
            dst: "2001:db8::2".parse().expect("ip"),
            proto,
            ..frag(9, offset, more, payload)
        };
        let mut d = Defragmenter::default();
        assert!(d.add(Timestamp(0), &v6(6, 8, false, &[2; 4])).is_none());
        let whole = d
            .add(Timestamp(1), &v6(60, 0, true, &[1; 8]))
            .expect("complete");
        assert_eq!(whole.proto, 60);
        assert_eq!(whole.data.len(), 12);
        // IPv4 keeps the protocol in the datagram's identity
        assert!(d.add(Timestamp(0), &frag(9, 8, false, &[2; 4])).is_none());
        let mut other = frag(9, 0, true, &[1; 8]);
        other.proto = 6;
        assert!(d.add(Timestamp(1), &other).is_none());
        assert_eq!(d.in_progress(), 2);
    }

    #[test]
    fn table_is_bounded_and_times_out() {
        let mut d = Defragmenter::default();
        let a = [0u8; 8];
        for id in 0..(MAX_DATAGRAMS as u32 + 10) {
            d.add(Timestamp(id as i64), &frag(id, 0, true, &a));
        }
        assert_eq!(d.in_progress(), MAX_DATAGRAMS);
        assert_eq!(d.stats.dropped, 10);
        d.expire(
            Timestamp(0)
                .saturating_add(FRAGMENT_TIMEOUT)
                .saturating_add(Duration(1 << 40)),
        );
        assert_eq!(d.in_progress(), 0);
    }
}
