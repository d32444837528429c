//! When each flow is next due to be looked at: the flow table's timer queue.
//!
//! Two kinds of deadline are set as capture time runs forward, a fixed time
//! after the packet at hand: a new flow's first (`now` + the shortest new
//! timeout) and a flow's whose timeout has just become shorter (`now` +
//! `tcp_closed` for a connection that closed, + `udp_exchange` for DNS: the
//! same 10 s by default). While time runs forward each kind arrives in
//! deadline order, so it goes to the back of a first-in-first-out queue: no
//! heap, no hashing (were the two shorter timeouts set apart, the entries out
//! of order would go to the heap: still exact, slower). Every other
//! deadline (a flow seen again and re-queued by its idle timeout, or a time
//! that went backwards, or a deadline not after the back of its queue) goes
//! to a min-heap. [`Deadlines::pop_due`] hands out the least (deadline, key)
//! of all three, so the order is exactly the one heap's would be; most short
//! connections' deadlines never touch the heap (one whose last ACK comes
//! after a tick has passed its closing deadline is re-queued through it).
//!
//! Entries are checked lazily: one that no longer matches its flow's
//! deadline (or whose flow has gone) is stale and skipped by the caller.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::FlowKey;
use crate::time::Timestamp;

type Entry = (Timestamp, FlowKey);

/// Which queue a deadline is meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A new flow's first deadline.
    Start = 0,
    /// A flow whose timeout has just become shorter (a connection that
    /// closed, DNS exchanges).
    Shortened = 1,
    /// Anything else.
    Other = 2,
}

#[derive(Debug, Default)]
pub struct Deadlines {
    queues: [VecDeque<Entry>; 2],
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Deadlines {
    /// Queues `key` to be looked at at `at`.
    pub fn push(&mut self, kind: Kind, at: Timestamp, key: FlowKey) {
        let e = (at, key);
        if let Some(q) = self.queues.get_mut(kind as usize) {
            // strictly after the last: the queue stays in the heap's order
            if q.back().is_none_or(|b| *b < e) {
                q.push_back(e);
                return;
            }
        }
        self.heap.push(Reverse(e));
    }

    /// The least entry, if it is due at `now` (any least entry when `now` is
    /// `None`), taken out.
    pub fn pop_due(&mut self, now: Option<Timestamp>) -> Option<Entry> {
        let mut best: Option<(Entry, usize)> = self.heap.peek().map(|r| (r.0, 2));
        for (i, q) in self.queues.iter().enumerate() {
            if let Some(e) = q.front() {
                if best.is_none_or(|(b, _)| *e < b) {
                    best = Some((*e, i));
                }
            }
        }
        let (e, from) = best?;
        if now.is_some_and(|n| e.0 > n) {
            return None;
        }
        match self.queues.get_mut(from) {
            Some(q) => q.pop_front(),
            None => self.heap.pop().map(|r| r.0),
        }
    }

    /// Entries queued, stale ones included.
    pub fn len(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum::<usize>() + self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the entries `live` says are still wanted, in order.
    pub fn retain(&mut self, mut live: impl FnMut(&Entry) -> bool) {
        for q in &mut self.queues {
            q.retain(&mut live);
        }
        self.heap.retain(|r| live(&r.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn key(n: u16) -> FlowKey {
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        FlowKey {
            lo: (a, n),
            hi: (a, 443),
            proto: 6,
            vlans: Default::default(),
        }
    }

    #[test]
    fn entries_come_out_as_one_heap_would_give_them() {
        // pseudo-random kinds, times that mostly run forward but sometimes
        // back, and ties: the order must be the heap's, (deadline, key)
        let mut d = Deadlines::default();
        let mut heap = BinaryHeap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut now = 1_000i64;
        let mut out = (Vec::new(), Vec::new());
        for i in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now += (x % 5) as i64 - if x.is_multiple_of(97) { 40 } else { 0 };
            let kind = [Kind::Start, Kind::Shortened, Kind::Other][(x >> 8) as usize % 3];
            let at = Timestamp(now + [60, 10, (x >> 16) as i64 % 600][kind as usize]);
            let k = key((x >> 24) as u16 % 50);
            d.push(kind, at, k);
            heap.push(Reverse((at, k)));
            if i % 1000 == 999 {
                // stale entries dropped now and then, from both
                let live = |e: &Entry| !(u64::from(e.1.lo.1) + e.0 .0 as u64).is_multiple_of(5);
                d.retain(live);
                heap.retain(|r| live(&r.0));
            }
            if i % 7 == 0 {
                let due = Timestamp(now);
                while let Some(e) = d.pop_due(Some(due)) {
                    out.0.push(e);
                }
                while heap.peek().is_some_and(|r| r.0 .0 <= due) {
                    out.1.push(heap.pop().expect("peeked").0);
                }
            }
        }
        while let Some(e) = d.pop_due(None) {
            out.0.push(e);
        }
        out.1.extend(std::iter::from_fn(|| heap.pop().map(|r| r.0)));
        assert!(out.0.len() > 15_000, "{}", out.0.len());
        assert_eq!(out.0, out.1);
        assert!(d.queues.iter().all(VecDeque::is_empty) && d.heap.is_empty());
    }

    #[test]
    fn forward_time_keeps_start_and_closing_deadlines_out_of_the_heap() {
        let mut d = Deadlines::default();
        for i in 0..100 {
            d.push(Kind::Start, Timestamp(i + 60), key(i as u16));
            d.push(Kind::Shortened, Timestamp(i + 10), key(i as u16));
        }
        assert!(d.heap.is_empty());
        assert_eq!(d.len(), 200);
        // the same time and key again is not after the last: the heap
        d.push(Kind::Shortened, Timestamp(109), key(99));
        assert_eq!(d.heap.len(), 1);
        // stale entries dropped, the rest in order, from every queue
        d.retain(|(at, k)| *k == key(7) || (*at, *k) == (Timestamp(109), key(99)));
        assert_eq!(d.len(), 4);
        assert_eq!(d.pop_due(Some(Timestamp(16))), None);
        assert_eq!(
            d.pop_due(Some(Timestamp(17))),
            Some((Timestamp(17), key(7)))
        );
        assert_eq!(d.pop_due(None), Some((Timestamp(67), key(7))));
        assert_eq!(d.pop_due(None), Some((Timestamp(109), key(99))));
        assert_eq!(d.pop_due(None), Some((Timestamp(109), key(99))));
        assert!(d.is_empty());
    }
}
