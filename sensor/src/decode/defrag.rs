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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    vlans: Vlans,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u32,
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
    active: HashMap<Key, (IpDefragBuf, Timestamp), ahash::RandomState>,
    pub stats: DefragStats,
}

impl Defragmenter {
    /// Adds a fragment; returns the whole datagram payload once complete.
    pub fn add(&mut self, now: Timestamp, f: &Fragment<'_>) -> Option<Vec<u8>> {
        self.stats.fragments += 1;
        let key = Key {
            vlans: f.vlans,
            src: f.src,
            dst: f.dst,
            proto: f.proto,
            id: f.id,
        };
        if !self.active.contains_key(&key) && self.active.len() >= MAX_DATAGRAMS {
            self.expire(now);
            if self.active.len() >= MAX_DATAGRAMS {
                // Still full: make room by dropping the oldest datagram.
                if let Some(oldest) = self
                    .active
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(k, _)| *k)
                {
                    self.active.remove(&oldest);
                    self.stats.dropped += 1;
                }
            }
        }
        let (buf, _) = self.active.entry(key).or_insert_with(|| {
            (
                IpDefragBuf::new(IpNumber(f.proto), Vec::new(), Vec::new()),
                now,
            )
        });
        let offset = IpFragOffset::try_new((f.offset / 8) as u16).ok();
        let ok = offset.is_some_and(|o| buf.add(o, f.more, f.payload).is_ok());
        if !ok {
            self.active.remove(&key);
            self.stats.dropped += 1;
            return None;
        }
        if buf.is_complete() {
            let (buf, _) = self.active.remove(&key)?;
            self.stats.reassembled += 1;
            let (data, _) = buf.take_bufs();
            return Some(data);
        }
        None
    }

    /// Drops datagrams older than [`FRAGMENT_TIMEOUT`].
    pub fn expire(&mut self, now: Timestamp) {
        let before = self.active.len();
        self.active
            .retain(|_, (_, first)| now.since(*first) < FRAGMENT_TIMEOUT);
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
            .expect("complete");
        assert_eq!(&whole[..16], &a);
        assert_eq!(&whole[16..], &b);
        assert_eq!(d.in_progress(), 0);
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
