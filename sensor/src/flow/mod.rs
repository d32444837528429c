//! Bidirectional flow tracking with capture-time timeouts and a hard size cap.
//!
//! A [`FlowTable<T>`] maps a normalised 5-tuple + VLAN key to a [`Flow<T>`],
//! where `T` is whatever per-flow state the analyzers keep. The table owns
//! expiry (a timer queue of deadlines checked lazily, see [`deadlines`]) and
//! eviction (the flow closest to its deadline goes first when the table is
//! full).

pub mod community_id;
pub mod deadlines;

use std::collections::HashMap;

use deadlines::{Deadlines, Kind};
use std::net::IpAddr;

use sha1::{Digest, Sha1};

use crate::decode::{Decoded, TcpHeader, Transport, Vlans};
use crate::time::{Duration, Timestamp};

/// Normalised flow key: endpoint `lo` is the smaller (address, port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    pub lo: (IpAddr, u16),
    pub hi: (IpAddr, u16),
    pub proto: u8,
    pub vlans: Vlans,
}

/// Hashed as a few words (derived, every field and enum tag went to the
/// hasher on its own, on every packet); equal keys hash equally.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match (self.lo.0, self.hi.0) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                h.write_u64(u64::from(u32::from(a)) << 32 | u64::from(u32::from(b)));
            }
            (a, b) => {
                let word = |ip: IpAddr| match ip {
                    IpAddr::V4(a) => u128::from(u32::from(a)),
                    IpAddr::V6(a) => u128::from(a),
                };
                h.write_u128(word(a));
                h.write_u128(word(b));
            }
        }
        h.write_u64(
            u64::from(self.lo.1) << 32 | u64::from(self.hi.1) << 16 | u64::from(self.proto),
        );
        h.write_u64(self.vlans.word());
    }
}

/// `(address, port)` as one number ordered as the pair is, for IPv4.
fn v4_endpoint(ip: IpAddr, port: u16) -> Option<u64> {
    match ip {
        IpAddr::V4(a) => Some(u64::from(u32::from(a)) << 16 | u64::from(port)),
        IpAddr::V6(_) => None,
    }
}

impl FlowKey {
    /// The key of a packet, and whether the packet travels from `lo` to `hi`.
    pub fn of(d: &Decoded<'_>) -> (FlowKey, bool) {
        let s = (d.src, d.sport);
        let t = (d.dst, d.dport);
        // the pairs' order; for IPv4 as two numbers (the same order)
        let forward = match (v4_endpoint(d.src, d.sport), v4_endpoint(d.dst, d.dport)) {
            (Some(a), Some(b)) => a <= b,
            _ => s <= t,
        };
        let (lo, hi) = if forward { (s, t) } else { (t, s) };
        (
            FlowKey {
                lo,
                hi,
                proto: d.proto,
                vlans: d.vlans,
            },
            forward,
        )
    }
}

/// Which way a packet travels relative to the flow's initiator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToServer = 0,
    ToClient = 1,
}

/// Why a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Idle longer than its timeout (also after a TCP close).
    Timeout,
    /// Pushed out because the table was full.
    Evicted,
    /// The capture ended (end of the last file, or the sensor stopping).
    Shutdown,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Timeout => "timeout",
            EndReason::Evicted => "evicted",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// TCP connection progress, from the flags seen.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpProgress {
    pub syn: bool,
    pub syn_ack: bool,
    pub fin: [bool; 2],
    pub rst: bool,
}

impl TcpProgress {
    /// The handshake and teardown flags of one segment in direction `dir`.
    fn note(&mut self, h: TcpHeader, dir: Dir) {
        if h.has(TcpHeader::SYN) {
            if h.has(TcpHeader::ACK) {
                self.syn_ack = true;
            } else {
                self.syn = true;
            }
        }
        if h.has(TcpHeader::FIN) {
            self.fin[dir as usize] = true;
        }
        if h.has(TcpHeader::RST) {
            self.rst = true;
        }
    }
}

/// Idle timeouts, by protocol and TCP state.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub tcp_new: Duration,
    pub tcp_established: Duration,
    pub tcp_closed: Duration,
    pub udp: Duration,
    /// A UDP flow of request/response exchanges ([`Flow::exchanges`]: DNS).
    pub udp_exchange: Duration,
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_new: Duration::from_secs(60),
            tcp_established: Duration::from_secs(600),
            tcp_closed: Duration::from_secs(10),
            udp: Duration::from_secs(120),
            // Zeek's dns_session_timeout: a lookup is answered within it
            udp_exchange: Duration::from_secs(10),
            other: Duration::from_secs(60),
        }
    }
}

/// Flows one table holds at most, by default (per worker).
pub const DEFAULT_MAX_FLOWS: usize = 65_536;

/// One tracked flow, oriented client → server.
#[derive(Debug)]
pub struct Flow<T> {
    pub key: FlowKey,
    pub id: u64,
    /// The initiator is `key.lo` (else `key.hi`).
    pub client_is_lo: bool,
    pub start: Timestamp,
    pub last: Timestamp,
    /// Indexed by [`Dir`].
    pub pkts: [u64; 2],
    pub bytes: [u64; 2],
    pub tcp: TcpProgress,
    /// Its Community ID, made the first time an event asks for it (a flow
    /// whose events a writer makes never needs it in its worker).
    community_id: std::cell::OnceCell<community_id::CommunityId>,
    /// First frame of the flow (offline: for `pcap_frame`).
    pub first_frame: u64,
    /// An analyzer found the flow to carry self-contained request/response
    /// exchanges (DNS over UDP): idle for [`Timeouts::udp_exchange`], it is
    /// over, however long a UDP flow may otherwise stay quiet.
    pub exchanges: bool,
    deadline: Timestamp,
    pub data: T,
}

impl<T> Flow<T> {
    /// The flow's Community ID (v1, seed 0).
    pub fn community_id(&self) -> &str {
        let id = self.community_id.get_or_init(|| {
            let (c, s) = (self.client(), self.server());
            community_id::community_id(0, c.0, c.1, s.0, s.1, self.key.proto)
        });
        id.as_str()
    }

    pub fn client(&self) -> (IpAddr, u16) {
        if self.client_is_lo {
            self.key.lo
        } else {
            self.key.hi
        }
    }
    pub fn server(&self) -> (IpAddr, u16) {
        if self.client_is_lo {
            self.key.hi
        } else {
            self.key.lo
        }
    }
    pub fn is_closed(&self) -> bool {
        self.tcp.rst || (self.tcp.fin[0] && self.tcp.fin[1])
    }
    /// EVE's flow state: `new` (one side only), `established`, `closed`.
    pub fn state(&self) -> &'static str {
        if self.key.proto == 6 {
            if self.is_closed() {
                "closed"
            } else if self.tcp.syn_ack || (self.pkts[0] > 0 && self.pkts[1] > 0) {
                "established"
            } else {
                "new"
            }
        } else if self.pkts[0] > 0 && self.pkts[1] > 0 {
            "established"
        } else {
            "new"
        }
    }
    fn timeout(&self, t: &Timeouts) -> Duration {
        match self.key.proto {
            6 if self.is_closed() => t.tcp_closed,
            6 if self.pkts[1] > 0 => t.tcp_established,
            6 => t.tcp_new,
            17 if self.exchanges => t.udp_exchange,
            17 => t.udp,
            _ => t.other,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct FlowStats {
    pub created: u64,
    pub timed_out: u64,
    pub evicted: u64,
}

/// A flow table of bounded size.
pub struct FlowTable<T> {
    /// Boxed: under churn at `max_flows` the map's buckets double once
    /// (tombstones), and a bucket then costs its key and a pointer, not a flow.
    flows: HashMap<FlowKey, Box<Flow<T>>, ahash::RandomState>,
    deadlines: Deadlines,
    max_flows: usize,
    timeouts: Timeouts,
    pub stats: FlowStats,
}

impl<T> FlowTable<T> {
    pub fn new(max_flows: usize, timeouts: Timeouts) -> Self {
        FlowTable {
            flows: HashMap::with_capacity_and_hasher(
                max_flows.min(4096),
                ahash::RandomState::new(),
            ),
            deadlines: Deadlines::default(),
            max_flows: max_flows.max(1),
            timeouts,
            stats: FlowStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Every flow in the table, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Flow<T>> {
        self.flows.values().map(|f| &**f)
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The flow of `key`, to change what it carries (not its key, times or
    /// place in the table).
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Flow<T>> {
        self.flows.get_mut(key).map(|f| &mut **f)
    }

    /// Finds or creates the flow of a packet and accounts the packet to it.
    ///
    /// A flow pushed out to make room is appended to `ended`.
    pub fn track(
        &mut self,
        d: &Decoded<'_>,
        wire_len: u32,
        now: Timestamp,
        frame: u64,
        ended: &mut Vec<(Box<Flow<T>>, EndReason)>,
        new_data: impl FnOnce() -> T,
    ) -> (&mut Flow<T>, Dir) {
        let (key, forward) = FlowKey::of(d);
        let tcp = match d.transport {
            Transport::Tcp(h) => Some(h),
            _ => None,
        };
        // A SYN on a closed flow starts a new connection on the same tuple.
        if let Some(h) = tcp {
            if h.has(TcpHeader::SYN) && !h.has(TcpHeader::ACK) {
                if let Some(f) = self.flows.get(&key) {
                    if f.is_closed() {
                        if let Some(f) = self.flows.remove(&key) {
                            self.stats.timed_out += 1;
                            ended.push((f, EndReason::Timeout));
                        }
                    }
                }
            }
        }
        // (the length first: a table not full costs one hash per packet)
        if self.flows.len() >= self.max_flows && !self.flows.contains_key(&key) {
            self.evict_one(ended);
            // (with no tick to expire flows, the closed ones' first entries
            // would pile up behind the open ones')
            self.compact();
        }
        let flow = match self.flows.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => &mut **o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let client_is_lo = initiator_is_src(d, tcp) == forward;
                let deadline = now.saturating_add(self.timeouts.tcp_new.min(self.timeouts.udp));
                self.deadlines.push(Kind::Start, deadline, key);
                self.stats.created += 1;
                &mut **v.insert(Box::new(Flow {
                    key,
                    id: flow_id(&key, now),
                    client_is_lo,
                    start: now,
                    last: now,
                    pkts: [0; 2],
                    bytes: [0; 2],
                    tcp: TcpProgress::default(),
                    community_id: Default::default(),
                    first_frame: frame,
                    exchanges: false,
                    deadline,
                    data: new_data(),
                }))
            }
        };
        let dir = if forward == flow.client_is_lo {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        account(
            flow,
            dir,
            wire_len,
            now,
            tcp,
            &self.timeouts,
            &mut self.deadlines,
        );
        (flow, dir)
    }

    /// Ends every flow whose idle timeout has passed at `now`.
    pub fn expire(&mut self, now: Timestamp, ended: &mut Vec<(Box<Flow<T>>, EndReason)>) {
        while let Some((deadline, key)) = self.deadlines.pop_due(Some(now)) {
            let Some(flow) = self.flows.get_mut(&key) else {
                continue;
            };
            if flow.deadline != deadline {
                continue; // stale entry: the flow was re-queued
            }
            let due = flow.last.saturating_add(flow.timeout(&self.timeouts));
            if due <= now {
                if let Some(f) = self.flows.remove(&key) {
                    self.stats.timed_out += 1;
                    ended.push((f, EndReason::Timeout));
                }
            } else {
                flow.deadline = due;
                self.deadlines.push(Kind::Other, due, key);
            }
        }
        self.compact();
    }

    /// Ends every flow (end of capture), in the order of their ids (then
    /// keys), the order the writer writes them in: ended in that order, the
    /// flows can be handed over in parts that it writes as they come.
    pub fn drain(&mut self, ended: &mut Vec<(Box<Flow<T>>, EndReason)>) {
        // boxes moved out and sorted (not the flows); the table's memory goes back at once
        let from = ended.len();
        ended.reserve(self.flows.len());
        ended.extend(self.flows.drain().map(|(_, f)| (f, EndReason::Shutdown)));
        ended[from..].sort_unstable_by_key(|(f, _)| (f.id, f.key));
        self.flows.shrink_to(0);
        self.deadlines = Deadlines::default();
    }

    /// Ends the flow nearest its true deadline: its last packet plus its
    /// timeout now. A flow is queued with a first deadline from its start
    /// (the new-flow timeout) and only queued again, lazily, when that comes;
    /// a young established connection (a tunnel's) must not go before a
    /// flood of half-open ones, so a flow found to be due later than queued
    /// is queued again at its true deadline and the search goes on.
    fn evict_one(&mut self, ended: &mut Vec<(Box<Flow<T>>, EndReason)>) {
        while let Some((deadline, key)) = self.deadlines.pop_due(None) {
            let Some(f) = self.flows.get_mut(&key) else {
                continue;
            };
            if f.deadline != deadline {
                continue; // stale
            }
            let due = f.last.saturating_add(f.timeout(&self.timeouts));
            if due > deadline {
                f.deadline = due;
                self.deadlines.push(Kind::Other, due, key);
                continue;
            }
            if let Some(f) = self.flows.remove(&key) {
                self.stats.evicted += 1;
                ended.push((f, EndReason::Evicted));
                return;
            }
        }
        // Every flow has a valid entry; this is unreachable unless the table
        // is empty.
    }

    /// Call after changing what a flow's timeout depends on outside
    /// [`FlowTable::track`] (e.g. [`Flow::exchanges`]): a shorter timeout
    /// takes effect now, not at the flow's next packet.
    pub fn requeue(&mut self, key: &FlowKey) {
        if let Some(f) = self.flows.get_mut(key) {
            shorten(f, &self.timeouts, &mut self.deadlines);
        }
    }

    /// New timeouts (a reload): a flow whose timeout is now shorter is
    /// queued again to end by it, not at the later deadline it had; a
    /// longer one is found when its old deadline comes.
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.timeouts = t;
        for f in self.flows.values_mut() {
            shorten(f, &self.timeouts, &mut self.deadlines);
        }
    }

    /// Drops the stale deadlines when they outnumber live flows.
    fn compact(&mut self) {
        if self.deadlines.len() > 2 * self.flows.len() + 1024 {
            let flows = &self.flows;
            self.deadlines
                .retain(|(at, k)| flows.get(k).is_some_and(|f| f.deadline == *at));
        }
    }
}

/// Counts a packet to its flow and notes its TCP flags; a flow whose idle
/// timeout has become shorter (a connection that closed, DNS exchanges) is
/// queued again to end that timeout after this packet, not at the later
/// deadline it began with.
fn account<T>(
    flow: &mut Flow<T>,
    dir: Dir,
    wire_len: u32,
    now: Timestamp,
    tcp: Option<TcpHeader>,
    timeouts: &Timeouts,
    deadlines: &mut Deadlines,
) {
    flow.pkts[dir as usize] += 1;
    flow.bytes[dir as usize] += wire_len as u64;
    if now > flow.last {
        flow.last = now;
    }
    if let Some(h) = tcp {
        flow.tcp.note(h, dir);
    }
    shorten(flow, timeouts, deadlines);
}

/// Queues `flow` again if its last packet plus its timeout now comes before
/// the deadline it is queued with (its timeout has become shorter).
fn shorten<T>(flow: &mut Flow<T>, timeouts: &Timeouts, deadlines: &mut Deadlines) {
    let due = flow.last.saturating_add(flow.timeout(timeouts));
    if due < flow.deadline {
        flow.deadline = due;
        deadlines.push(Kind::Shortened, due, flow.key);
    }
}

/// Decides whether the sender of the first packet seen is the initiator.
fn initiator_is_src(d: &Decoded<'_>, tcp: Option<TcpHeader>) -> bool {
    if let Some(h) = tcp {
        if h.has(TcpHeader::SYN) {
            return !h.has(TcpHeader::ACK);
        }
    }
    // Picked up mid-stream (or UDP): the side on a well-known port is the server.
    !(d.sport < 1024 && d.dport >= 1024)
}

/// A flow id stable across runs and worker counts: a hash of key and start time,
/// kept to 53 bits so JSON consumers that read numbers as doubles keep it exact.
fn flow_id(key: &FlowKey, start: Timestamp) -> u64 {
    let mut h = Sha1::new();
    for (ip, port) in [key.lo, key.hi] {
        match ip {
            IpAddr::V4(a) => h.update(a.octets()),
            IpAddr::V6(a) => h.update(a.octets()),
        }
        h.update(port.to_be_bytes());
    }
    h.update([key.proto]);
    for v in key.vlans.as_slice() {
        h.update(v.to_be_bytes());
    }
    h.update(start.0.to_be_bytes());
    let d: [u8; 20] = h.finalize().into();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b) & ((1 << 53) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Transport;

    fn pkt(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Decoded<'static> {
        Decoded {
            vlans: Vlans::default(),
            src: src.parse().expect("ip"),
            dst: dst.parse().expect("ip"),
            proto: 6,
            sport,
            dport,
            transport: Transport::Tcp(TcpHeader {
                seq: 0,
                ack: 0,
                flags,
            }),
            payload: &[],
            segment: &[],
        }
    }

    #[test]
    fn both_directions_share_one_flow_oriented_by_syn() {
        let mut t: FlowTable<()> = FlowTable::new(10, Timeouts::default());
        let mut ended = Vec::new();
        // SYN-ACK seen first: its sender is the server.
        let (f, d) = t.track(
            &pkt("10.0.0.2", 443, "10.0.0.1", 5000, 0x12),
            60,
            Timestamp(1),
            1,
            &mut ended,
            || (),
        );
        assert_eq!(d, Dir::ToClient);
        assert_eq!(f.client(), ("10.0.0.1".parse().expect("ip"), 5000));
        let (_, d) = t.track(
            &pkt("10.0.0.1", 5000, "10.0.0.2", 443, 0x10),
            60,
            Timestamp(2),
            2,
            &mut ended,
            || (),
        );
        assert_eq!(d, Dir::ToServer);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn idle_flows_time_out_by_capture_time() {
        let to = Timeouts::default();
        let mut t: FlowTable<()> = FlowTable::new(10, to);
        let mut ended = Vec::new();
        t.track(
            &pkt("10.0.0.1", 5000, "10.0.0.2", 443, 0x02),
            60,
            Timestamp(0),
            1,
            &mut ended,
            || (),
        );
        t.expire(
            Timestamp(0).saturating_add(Duration(to.tcp_new.0 - 1)),
            &mut ended,
        );
        assert!(ended.is_empty());
        t.expire(Timestamp(0).saturating_add(to.tcp_new), &mut ended);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].1, EndReason::Timeout);
        assert_eq!(t.stats.timed_out, 1);
    }

    type Ended = Vec<(Box<Flow<()>>, EndReason)>;

    /// `m` milliseconds into the capture.
    fn ms(m: i64) -> Timestamp {
        Timestamp(0).saturating_add(Duration(m * 1_000_000))
    }

    fn whole_secs(d: Duration) -> i64 {
        d.0 / 1_000_000_000
    }

    /// A segment of the connection 10.0.0.1:`port` → 10.0.0.2:443.
    fn seg(port: u16, from_client: bool, flags: u8) -> Decoded<'static> {
        if from_client {
            pkt("10.0.0.1", port, "10.0.0.2", 443, flags)
        } else {
            pkt("10.0.0.2", 443, "10.0.0.1", port, flags)
        }
    }

    /// SYN, SYN-ACK, ACK.
    const HANDSHAKE: [(bool, u8); 3] = [(true, 0x02), (false, 0x12), (true, 0x10)];

    fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Decoded<'static> {
        Decoded {
            proto: 17,
            transport: Transport::Udp,
            ..pkt(src, sport, dst, dport, 0)
        }
    }

    /// A table of `max_flows` holding one connection (port 40000),
    /// established at 0.
    fn connected(max_flows: usize) -> (FlowTable<()>, Ended) {
        let mut t = FlowTable::new(max_flows, Timeouts::default());
        let mut ended = Vec::new();
        for (c, flags) in HANDSHAKE {
            feed(&mut t, &mut ended, &seg(40000, c, flags), ms(0));
        }
        (t, ended)
    }

    fn feed<'t>(
        t: &'t mut FlowTable<()>,
        ended: &mut Ended,
        d: &Decoded<'_>,
        at: Timestamp,
    ) -> &'t mut Flow<()> {
        t.track(d, 60, at, 1, ended, || ()).0
    }

    /// New timeouts (a reload) apply to the flows already in the table: a
    /// shorter one ends an established connection by it, not at the 600 s
    /// it was queued with; a longer one keeps it past its old deadline.
    #[test]
    fn new_timeouts_apply_to_flows_already_tracked() {
        let (mut t, mut ended) = connected(10);
        let short = Timeouts {
            tcp_established: Duration::from_secs(5),
            ..Timeouts::default()
        };
        t.set_timeouts(short);
        t.expire(ms(4_000), &mut ended);
        assert!(ended.is_empty());
        t.expire(ms(5_000), &mut ended);
        assert_eq!(ended.len(), 1, "ended 5 s after its last packet");

        let (mut t, mut ended) = connected(10);
        let long = Timeouts {
            tcp_new: Duration::from_secs(1000),
            tcp_established: Duration::from_secs(1000),
            ..Timeouts::default()
        };
        t.set_timeouts(long);
        t.expire(ms(999_000), &mut ended);
        assert!(ended.is_empty(), "kept past its 600 s");
        t.expire(ms(1_000_000), &mut ended);
        assert_eq!(ended.len(), 1);
    }

    #[test]
    fn a_closed_connection_ends_its_closed_timeout_after_its_last_packet() {
        let to = Timeouts::default();
        let mut t: FlowTable<()> = FlowTable::new(10, to);
        let mut ended = Vec::new();
        for port in [5000, 5001] {
            for (c, flags) in HANDSHAKE {
                feed(
                    &mut t,
                    &mut ended,
                    &seg(port, c, flags),
                    ms(if flags == 0x10 { 1000 } else { 0 }), // the ACK a second later
                );
            }
        }
        // 5000 closes at 2 s (FIN both ways, last ACK at 3 s); 5001 stays open
        for (c, flags, at) in [(true, 0x11, 2000), (false, 0x11, 2000), (true, 0x10, 3000)] {
            feed(&mut t, &mut ended, &seg(5000, c, flags), ms(at));
        }
        let closed = whole_secs(to.tcp_closed);
        assert!(
            closed + 3 < whole_secs(to.tcp_new),
            "the test needs closed < new"
        );
        t.expire(ms((3 + closed) * 1000 - 1), &mut ended);
        assert!(ended.is_empty(), "not before its closed timeout");
        t.expire(ms((3 + closed) * 1000), &mut ended);
        assert_eq!(
            ended.len(),
            1,
            "long before the tcp_new deadline it began with"
        );
        assert_eq!(ended[0].0.client().1, 5000);
        assert_eq!(ended[0].1, EndReason::Timeout);
        // the open one is still due at its first deadline, then by its own timeout
        t.expire(ms(whole_secs(to.tcp_new) * 1000), &mut ended);
        assert_eq!((ended.len(), t.len()), (1, 1));
    }

    #[test]
    fn a_dns_flow_ends_its_exchange_timeout_after_its_last_datagram() {
        let to = Timeouts::default();
        let mut t: FlowTable<()> = FlowTable::new(10, to);
        let mut ended = Vec::new();
        // two lookups from two ports; an analyzer finds the first is DNS
        feed(
            &mut t,
            &mut ended,
            &udp("10.0.0.1", 5353, "10.0.0.53", 53),
            ms(0),
        )
        .exchanges = true;
        feed(
            &mut t,
            &mut ended,
            &udp("10.0.0.1", 5354, "10.0.0.53", 53),
            ms(0),
        );
        // the answers, a second later
        for port in [5353, 5354] {
            feed(
                &mut t,
                &mut ended,
                &udp("10.0.0.53", 53, "10.0.0.1", port),
                ms(1000),
            );
        }
        let (exchange, udp_s) = (whole_secs(to.udp_exchange), whole_secs(to.udp));
        assert!(1 + exchange < whole_secs(to.tcp_new.min(to.udp)));
        t.expire(ms((1 + exchange) * 1000 - 1), &mut ended);
        assert!(ended.is_empty(), "not before its exchange timeout");
        t.expire(ms((1 + exchange) * 1000), &mut ended);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].0.client().1, 5353);
        assert_eq!(ended[0].1, EndReason::Timeout);
        // the other, not known to be DNS, keeps the UDP timeout
        t.expire(ms((1 + udp_s) * 1000 - 1), &mut ended);
        assert_eq!(ended.len(), 1);
        t.expire(ms((1 + udp_s) * 1000), &mut ended);
        assert_eq!(ended.len(), 2);
    }

    #[test]
    fn a_lone_lookup_ends_its_exchange_timeout_after_it_once_requeued() {
        let to = Timeouts::default();
        let mut t: FlowTable<()> = FlowTable::new(10, to);
        let mut ended = Vec::new();
        let f = feed(
            &mut t,
            &mut ended,
            &udp("10.0.0.1", 5353, "10.0.0.53", 53),
            ms(0),
        );
        // what the engine does once the analyzer has read it as DNS
        f.exchanges = true;
        let key = f.key;
        t.requeue(&key);
        t.expire(ms(whole_secs(to.udp_exchange) * 1000 - 1), &mut ended);
        assert!(ended.is_empty());
        t.expire(ms(whole_secs(to.udp_exchange) * 1000), &mut ended);
        assert_eq!(
            ended.len(),
            1,
            "unanswered, it ends as an answered one does"
        );
    }

    #[test]
    fn a_busy_resolver_does_not_push_out_a_long_lived_connection() {
        // a tunnel's connection (a keepalive every 5 s) beside 20 answered
        // lookups a second, in a table of 512: with lookups kept for the UDP
        // timeout the table fills within half a minute and the connection,
        // nearest its first deadline, is the one pushed out
        let (mut t, mut ended) = connected(512);
        for second in 0..300i64 {
            for i in 0..20i64 {
                let port = 1024 + ((second * 20 + i) % 60_000) as u16;
                let at = second * 1000 + i * 50;
                let q = udp("10.0.0.1", port, "10.0.0.53", 53);
                feed(&mut t, &mut ended, &q, ms(at)).exchanges = true;
                feed(
                    &mut t,
                    &mut ended,
                    &udp("10.0.0.53", 53, "10.0.0.1", port),
                    ms(at + 2),
                );
            }
            if second % 5 == 0 {
                feed(
                    &mut t,
                    &mut ended,
                    &seg(40000, true, 0x10),
                    ms(second * 1000),
                );
            }
            t.expire(ms((second + 1) * 1000), &mut ended);
        }
        assert_eq!(t.stats.evicted, 0);
        assert!(
            ended.iter().all(|(f, _)| f.key.proto == 17),
            "the connection is still in the table"
        );
        // the connection and about 11 s of lookups (20 a second)
        assert!((200..=240).contains(&t.len()), "{} flows held", t.len());
    }

    #[test]
    fn a_flood_of_half_open_flows_does_not_push_out_a_young_connection() {
        let (mut t, mut ended) = connected(16);
        // SYNs from everywhere, within the connection's first minute
        for p in 0..5_000u16 {
            let syn = pkt("198.51.100.7", 1024 + p, "10.0.0.1", 22, 0x02);
            feed(&mut t, &mut ended, &syn, ms(1 + i64::from(p) * 5));
        }
        assert_eq!(t.stats.evicted, 5_000 - 15);
        assert!(ended.iter().all(|(f, _)| f.client().1 != 40000));
        assert!(
            t.iter().any(|f| f.client().1 == 40000),
            "the connection stays"
        );
    }

    #[test]
    fn deadlines_stay_bounded_by_the_table_when_no_tick_comes() {
        // a full table, connections that open and close, capture time that
        // never moves (no tick, so nothing expires): eviction alone
        let mut t: FlowTable<()> = FlowTable::new(16, Timeouts::default());
        let mut ended = Vec::new();
        for p in 0..20_000u16 {
            for (c, flags) in [(true, 0x02), (false, 0x12), (true, 0x11), (false, 0x11)] {
                feed(&mut t, &mut ended, &seg(p, c, flags), Timestamp(5));
            }
        }
        assert_eq!(t.len(), 16);
        assert_eq!(t.stats.evicted, 20_000 - 16);
        assert!(
            t.deadlines.len() <= 2 * 16 + 1024 + 1,
            "{}",
            t.deadlines.len()
        );
    }

    #[test]
    fn full_table_evicts_and_counts() {
        let mut t: FlowTable<()> = FlowTable::new(3, Timeouts::default());
        let mut ended = Vec::new();
        for p in 0..10u16 {
            t.track(
                &pkt("10.0.0.1", 5000 + p, "10.0.0.2", 443, 0x02),
                60,
                Timestamp(p as i64),
                1,
                &mut ended,
                || (),
            );
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.stats.evicted, 7);
        assert!(ended.iter().all(|(_, r)| *r == EndReason::Evicted));
        // the oldest went first
        assert_eq!(ended[0].0.key.lo.1.min(ended[0].0.key.hi.1), 443);
        assert_eq!(ended[0].0.client().1, 5000);
    }

    #[test]
    fn flow_id_is_stable_and_53_bits() {
        let (k, _) = FlowKey::of(&pkt("10.0.0.1", 5000, "10.0.0.2", 443, 2));
        assert_eq!(flow_id(&k, Timestamp(5)), flow_id(&k, Timestamp(5)));
        assert_ne!(flow_id(&k, Timestamp(5)), flow_id(&k, Timestamp(6)));
        assert!(flow_id(&k, Timestamp(5)) < (1 << 53));
    }

    /// The IPv4 shortcut orders endpoints as the pairs do, and equal keys
    /// hash equally whichever way the packet went.
    #[test]
    fn key_order_and_hash_agree_with_the_pairs() {
        let h = ahash::RandomState::with_seeds(1, 2, 3, 4);
        let addrs = [
            "0.0.0.0",
            "10.0.0.1",
            "10.0.0.2",
            "10.0.1.0",
            "255.255.255.255",
            "::1",
        ];
        for a in addrs {
            for b in addrs {
                for (pa, pb) in [(0, 0), (1, 65535), (65535, 1), (443, 443), (80, 8080)] {
                    let p = pkt(a, pa, b, pb, 6);
                    let (k, fwd) = FlowKey::of(&p);
                    let (s, t) = ((p.src, p.sport), (p.dst, p.dport));
                    assert_eq!(fwd, s <= t, "{a}:{pa} {b}:{pb}");
                    let (r, rfwd) = FlowKey::of(&pkt(b, pb, a, pa, 6));
                    assert_eq!(k, r);
                    assert!(fwd != rfwd || s == t);
                    assert_eq!(h.hash_one(k), h.hash_one(r));
                }
            }
        }
    }
}
