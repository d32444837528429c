//! A proxy's two TLS legs: a host that receives a ClientHello for a name and
//! then sends one for the same name.
//!
//! An intercepting proxy terminates its client's TLS and originates a new
//! handshake to the real server: same name, its own random (and its own TLS
//! stack). A proxy that only relays (a CONNECT tunnel without bumping, a TCP
//! or SNI pass-through, a NAT seen on both sides) sends the client's
//! ClientHello on byte for byte: the same 32-byte random. The shapes:
//!
//! - **proxy** (explicit, reverse): host P received a hello for X (as the
//!   server of the client's connection, or inside the client's CONNECT
//!   tunnel to P) and P sends a hello for X within [`WINDOW`];
//! - **reverse** with another upstream name: host P received a hello and,
//!   before answering it, sent one of its own and had its answer: the
//!   client's ServerHello waited for P's whole upstream handshake (decided
//!   when that ServerHello comes);
//! - **transparent**: client C's hello for X goes to server S's address but
//!   is answered nearby (its TCP round trip under half of the other leg's),
//!   and only after P, another host of a site segment, sent a hello for X to
//!   S and had it answered (decided at C's ServerHello).
//!
//! Hellos are kept by (server address, name) for [`WINDOW`] of capture time,
//! [`MAX_HELLOS`] in all (the oldest go first, counted).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use smallvec::SmallVec;

use crate::config::Segment;
use crate::time::{Duration, Timestamp};

/// How long after a client's hello a proxy's own hello counts as its leg.
pub const WINDOW: Duration = Duration::from_secs(5);
/// Hellos held in all.
pub const MAX_HELLOS: usize = 65_536;
/// Hellos held per (server, name).
pub const MAX_PER_KEY: usize = 64;

/// A ClientHello as the correlation needs it, with what the caller keeps
/// with it (`tag`: the writer keeps the flow's event header fields).
#[derive(Debug, Clone)]
pub struct Hello<T = ()> {
    pub at: Timestamp,
    pub flow: u64,
    pub client: IpAddr,
    pub server: IpAddr,
    /// The server name (SNI, else the CONNECT target), lower case.
    pub name: String,
    pub random: [u8; 32],
    pub ja4: Arc<str>,
    /// The connection's SYN → SYN-ACK time, where both were seen.
    pub rtt: Option<Duration>,
    pub client_seg: Option<Segment>,
    pub server_seg: Option<Segment>,
    /// When the server's ServerHello came (set by the tracker).
    pub sh_at: Option<Timestamp>,
    pub tag: T,
}

/// What the correlation hears of a flow: its ClientHello, or its ServerHello.
#[derive(Debug, Clone)]
pub enum LegEvent<T = ()> {
    /// Boxed: a hello is a few hundred bytes, held until it expires, and
    /// comes boxed from the worker (moved in and out of the queue, it was
    /// copied twice).
    Client(Box<Hello<T>>),
    Server {
        flow: u64,
        at: Timestamp,
    },
}

/// What two legs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The same ClientHello on both legs: passed on, not intercepted.
    Relay,
    /// A new ClientHello: the proxy terminated the client's TLS.
    Reoriginated,
}

/// Two legs found: the client's (`first`) and the proxy's (`second`).
#[derive(Debug, Clone)]
pub struct Legs<T = ()> {
    pub kind: Kind,
    /// `proxy` (explicit or reverse), `reverse` or `transparent`.
    pub mode: &'static str,
    pub first: Hello<T>,
    pub second: Hello<T>,
}

impl<T: Clone> Legs<T> {
    /// The client's hello and the proxy's: the same random is a relay.
    fn pair(first: &Hello<T>, second: &Hello<T>, mode: &'static str) -> Self {
        Legs {
            kind: if first.random == second.random {
                Kind::Relay
            } else {
                Kind::Reoriginated
            },
            mode,
            first: first.clone(),
            second: second.clone(),
        }
    }
}

impl<T> Legs<T> {
    /// The proxy: the host that sent the second hello.
    pub fn proxy(&self) -> IpAddr {
        self.second.client
    }

    /// One line naming the legs, for evidence: who, through whom, to where,
    /// for what name (the same for every connection of that shape, so a
    /// repeat is suppressed as one; the delay and fingerprints are in the
    /// `tls_legs` object).
    pub fn describe(&self) -> String {
        format!(
            "{} -> {} -> {} for {}",
            self.first.client, self.second.client, self.second.server, self.second.name
        )
    }
}

/// The `tls_legs` object of the event that reports two legs.
#[derive(Debug, Serialize)]
pub struct LegsEvent<'a> {
    pub kind: Kind,
    pub mode: &'static str,
    /// The name of the proxy's own hello.
    pub name: &'a str,
    /// The name the client asked for, when it is another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<&'a str>,
    pub client: IpAddr,
    pub proxy: IpAddr,
    pub upstream: IpAddr,
    pub client_flow_id: u64,
    pub proxy_flow_id: u64,
    pub delay_ms: f64,
    pub client_ja4: &'a str,
    pub proxy_ja4: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_rtt_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_rtt_ms: Option<f64>,
    /// The client's ServerHello after its ClientHello (when it came before
    /// the legs were found).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_server_hello_ms: Option<f64>,
}

fn ms(d: Duration) -> f64 {
    (d.0 / 1_000) as f64 / 1_000.0
}

impl<'a> LegsEvent<'a> {
    pub fn of<T>(l: &'a Legs<T>) -> Self {
        LegsEvent {
            kind: l.kind,
            mode: l.mode,
            name: &l.second.name,
            client_name: (l.first.name != l.second.name).then_some(l.first.name.as_str()),
            client: l.first.client,
            proxy: l.second.client,
            upstream: l.second.server,
            client_flow_id: l.first.flow,
            proxy_flow_id: l.second.flow,
            delay_ms: ms(l.second.at.since(l.first.at)),
            client_ja4: &l.first.ja4,
            proxy_ja4: &l.second.ja4,
            client_rtt_ms: l.first.rtt.map(ms),
            proxy_rtt_ms: l.second.rtt.map(ms),
            client_server_hello_ms: l.first.sh_at.map(|t| ms(t.since(l.first.at))),
        }
    }
}

pub use crate::stats::LegStats;

/// (server address, hash of the name): held hellos are compared by name too.
type Key = (IpAddr, u64);

/// The first of a bounded list, taken out.
fn pop_front<A: smallvec::Array>(v: &mut SmallVec<A>) -> Option<A::Item> {
    (!v.is_empty()).then(|| v.remove(0))
}

/// Hashes names for [`Key`] (fixed seeds: the same decisions in every run).
fn name_key(addr: IpAddr, name: &str) -> Key {
    static HASH: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
    let h = HASH.get_or_init(|| ahash::RandomState::with_seeds(7, 11, 13, 17));
    (addr, h.hash_one(name))
}

/// Recent ClientHellos by (server address, name).
///
/// The hellos stay where they arrived, in a queue numbered from `first`;
/// the indexes hold their numbers. (Keyed tables holding the hellos
/// themselves moved a few hundred bytes per insert and removal, and spread
/// them over a table sized for the peak.)
#[derive(Debug)]
pub struct LegTracker<T = ()> {
    /// The hellos in arrival order, each with its key: `held[i]` is hello
    /// number `first + i`. One a key's bound let go leaves a hole until the
    /// front reaches it; holes count against [`MAX_HELLOS`] too.
    held: VecDeque<Option<(Key, Box<Hello<T>>)>>,
    first: u64,
    /// Hellos held (holes not counted).
    live: usize,
    /// The numbers of the hellos held for each key, oldest first (inline:
    /// most keys hold one or two; bounded by [`MAX_PER_KEY`], so taking the
    /// front is a bounded shift).
    by_server: HashMap<Key, SmallVec<[u64; 2]>, ahash::RandomState>,
    /// Each held hello's number, by flow.
    by_flow: HashMap<u64, u64, ahash::RandomState>,
    /// The flows of the hellos each host sent, newest last (entries of
    /// hellos gone are skipped, and dropped with the bound).
    sent_by: HashMap<IpAddr, SmallVec<[u64; 4]>, ahash::RandomState>,
    pub stats: LegStats,
}

impl<T> Default for LegTracker<T> {
    fn default() -> Self {
        LegTracker {
            held: VecDeque::new(),
            first: 0,
            live: 0,
            by_server: HashMap::default(),
            by_flow: HashMap::default(),
            sent_by: HashMap::default(),
            stats: LegStats::default(),
        }
    }
}

impl<T> LegEvent<T> {
    pub fn client(h: Hello<T>) -> Self {
        LegEvent::Client(Box::new(h))
    }
}

impl<T: Clone> LegTracker<T> {
    /// What a flow said: the legs it completes, if any.
    pub fn event(&mut self, e: LegEvent<T>) -> Option<Legs<T>> {
        let found = match e {
            LegEvent::Client(h) => self.hello(h),
            LegEvent::Server { flow, at } => self.server_hello(flow, at),
        };
        match found.as_ref().map(|l| l.kind) {
            Some(Kind::Relay) => self.stats.relays += 1,
            Some(Kind::Reoriginated) => self.stats.reoriginated += 1,
            None => {}
        }
        found
    }

    /// A ClientHello: the legs it completes, if any; then it is held.
    fn hello(&mut self, h: impl Into<Box<Hello<T>>>) -> Option<Legs<T>> {
        let h = h.into();
        self.stats.hellos += 1;
        self.expire(h.at);
        let found = self.find(&h);
        self.insert(h);
        found
    }

    /// Hello number `n`, if it is still held.
    fn get(&self, n: u64) -> Option<&Hello<T>> {
        let i = usize::try_from(n.checked_sub(self.first)?).ok()?;
        self.held.get(i)?.as_ref().map(|(_, h)| &**h)
    }

    /// The hellos held for `key`, oldest first.
    fn of_key(&self, key: &Key) -> impl DoubleEndedIterator<Item = &Hello<T>> {
        (self.by_server.get(key).into_iter().flatten()).filter_map(|n| self.get(*n))
    }

    fn held(&self, flow: u64) -> Option<&Hello<T>> {
        self.get(*self.by_flow.get(&flow)?)
    }

    /// A ServerHello on a held hello's flow: if its server, before this
    /// answer, sent a hello of its own (for another name) and had that one
    /// answered, the answer waited for the proxy's upstream handshake.
    fn server_hello(&mut self, flow: u64, at: Timestamp) -> Option<Legs<T>> {
        let n = *self.by_flow.get(&flow)?;
        let i = usize::try_from(n.checked_sub(self.first)?).ok()?;
        let (_, held) = self.held.get_mut(i)?.as_mut()?;
        held.sh_at.get_or_insert(at);
        let first = self.get(n)?;
        let waited = |h: &&Hello<T>| {
            h.at > first.at
                && h.at.since(first.at) <= WINDOW
                && h.client != first.client
                && h.sh_at.is_some_and(|s| s <= at)
        };
        // reverse: the client's server sent a hello of its own (for another
        // name) and had it answered before answering the client
        let proxy = first.server;
        let reverse = self
            .sent_by
            .get(&proxy)
            .into_iter()
            .flatten()
            .rev()
            .filter_map(|f| self.held(*f))
            .find(|h| waited(h) && h.name != first.name);
        // transparent: the client's leg to S was answered nearby, and only
        // after another host of the site had its own hello for the name to
        // S answered
        let near = |h: &&Hello<T>| match (first.rtt, h.rtt) {
            (Some(a), Some(b)) => a.0.saturating_mul(2) < b.0,
            _ => false,
        };
        let transparent = || {
            self.of_key(&name_key(first.server, &first.name))
                .rev()
                .find(|h| waited(h) && h.name == first.name && h.client_seg.is_some() && near(h))
        };
        let (second, mode) = match reverse {
            Some(h) => (h, "reverse"),
            None => (transparent()?, "transparent"),
        };
        Some(Legs::pair(first, second, mode))
    }

    pub fn len(&self) -> usize {
        self.live
    }

    /// The counters, with the hellos held now.
    pub fn stats(&self) -> LegStats {
        LegStats {
            held: self.live as u64,
            ..self.stats
        }
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn find(&self, h: &Hello<T>) -> Option<Legs<T>> {
        let recent = |k: &Key| {
            self.of_key(k).rev().filter(|r| {
                r.name == h.name
                    && r.client != h.client
                    && r.flow != h.flow
                    && h.at.since(r.at).0 >= 0
                    && h.at.since(r.at) <= WINDOW
            })
        };
        let legs = |first: &Hello<T>, mode| Legs::pair(first, h, mode);
        // explicit or reverse: the sender received a hello for the name
        if let Some(r) = recent(&name_key(h.client, &h.name)).next() {
            return Some(legs(r, "proxy"));
        }
        // the same hello from two hosts of the site to one server: a NAT or
        // a transparent pass-through seen on both sides (a re-originating
        // transparent proxy is decided at its client's ServerHello)
        h.client_seg.as_ref()?;
        let r = recent(&name_key(h.server, &h.name))
            .find(|r| r.client_seg.is_some() && r.random == h.random)?;
        Some(legs(r, "transparent"))
    }

    fn insert(&mut self, h: Box<Hello<T>>) {
        let key = name_key(h.server, &h.name);
        let n = self.first + self.held.len() as u64;
        let q = self.by_server.entry(key).or_default();
        let over = if q.len() >= MAX_PER_KEY {
            pop_front(q)
        } else {
            None
        };
        q.push(n);
        if let Some(old) = over {
            self.stats.evicted += 1;
            let i = old.checked_sub(self.first).map(|i| i as usize);
            let gone = i.and_then(|i| self.held.get_mut(i)).and_then(Option::take);
            if let Some((_, gone)) = gone {
                self.live -= 1;
                self.forget(&gone, old);
            }
        }
        let (flow, client) = (h.flow, h.client);
        self.by_flow.insert(flow, n);
        let sent = self.sent_by.entry(client).or_default();
        if sent.len() >= MAX_PER_KEY {
            pop_front(sent);
        }
        sent.push(flow);
        self.held.push_back(Some((key, h)));
        self.live += 1;
        while self.held.len() > MAX_HELLOS {
            self.pop_oldest(true);
        }
    }

    /// Hello number `n` dropped: its flow and its sender's entry go too.
    fn forget(&mut self, h: &Hello<T>, n: u64) {
        if self.by_flow.get(&h.flow) == Some(&n) {
            self.by_flow.remove(&h.flow);
        }
        if let Some(sent) = self.sent_by.get_mut(&h.client) {
            sent.retain(|f| *f != h.flow);
            if sent.is_empty() {
                self.sent_by.remove(&h.client);
            }
        }
    }

    /// Drops what is older than the window (and the holes before it).
    fn expire(&mut self, now: Timestamp) {
        while let Some(front) = self.held.front() {
            match front {
                Some((_, h)) if now.since(h.at) <= WINDOW => break,
                _ => self.pop_oldest(false),
            }
        }
    }

    /// The oldest slot goes: a hole, or the oldest hello held.
    fn pop_oldest(&mut self, evicted: bool) {
        let Some(slot) = self.held.pop_front() else {
            return;
        };
        let n = self.first;
        self.first += 1;
        let Some((key, h)) = slot else {
            return;
        };
        self.live -= 1;
        if let Some(q) = self.by_server.get_mut(&key) {
            // the oldest of its key: older ones left the queue before it
            if q.first() == Some(&n) {
                q.remove(0);
            }
            if q.is_empty() {
                self.by_server.remove(&key);
            }
        }
        self.forget(&h, n);
        self.stats.evicted += u64::from(evicted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SegmentKind;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn seg() -> Option<Segment> {
        Some(Segment {
            name: "prod".into(),
            kind: SegmentKind::Production,
        })
    }

    fn hello(ms: i64, client: &str, server: &str, name: &str, random: u8) -> Hello {
        Hello {
            at: Timestamp(ms * 1_000_000),
            flow: ms as u64,
            client: ip(client),
            server: ip(server),
            name: name.into(),
            random: [random; 32],
            ja4: format!("ja4-{random}").into(),
            rtt: None,
            client_seg: seg(),
            server_seg: None,
            sh_at: None,
            tag: (),
        }
    }

    #[test]
    fn a_proxy_that_re_originates_and_one_that_relays() {
        let mut t = LegTracker::default();
        // reverse or explicit: C -> P for X, then P -> S for X with its own random
        assert!(t
            .event(LegEvent::client(hello(
                0,
                "10.0.0.1",
                "10.0.0.9",
                "x.example",
                1
            )))
            .is_none());
        let l = t
            .event(LegEvent::client(hello(
                12,
                "10.0.0.9",
                "198.51.100.1",
                "x.example",
                2,
            )))
            .expect("legs");
        assert_eq!(
            (l.kind, l.mode, l.proxy()),
            (Kind::Reoriginated, "proxy", ip("10.0.0.9"))
        );
        assert_eq!(LegsEvent::of(&l).delay_ms, 12.0);
        // a CONNECT tunnel that passes the same hello on
        t.event(LegEvent::client(hello(
            100,
            "10.0.0.2",
            "10.0.0.8",
            "y.example",
            7,
        )));
        let l = t
            .event(LegEvent::client(hello(
                103,
                "10.0.0.8",
                "198.51.100.2",
                "y.example",
                7,
            )))
            .expect("legs");
        assert_eq!(l.kind, Kind::Relay);
        assert_eq!((t.stats.relays, t.stats.reoriginated), (1, 1));
    }

    #[test]
    fn other_names_late_hellos_and_the_same_host_are_not_legs() {
        let mut t = LegTracker::default();
        t.hello(hello(0, "10.0.0.1", "10.0.0.9", "x.example", 1));
        assert!(t
            .hello(hello(5, "10.0.0.9", "198.51.100.1", "z.example", 2))
            .is_none());
        assert!(t
            .hello(hello(6_000, "10.0.0.9", "198.51.100.1", "x.example", 2))
            .is_none());
        // a client that reconnects to the same server is no proxy
        let mut t = LegTracker::default();
        t.hello(hello(0, "10.0.0.1", "198.51.100.1", "x.example", 1));
        assert!(t
            .hello(hello(5, "10.0.0.1", "198.51.100.1", "x.example", 2))
            .is_none());
    }

    #[test]
    fn transparent_needs_the_client_leg_answered_nearby_and_after_the_proxy() {
        let near = Some(Duration::from_millis(1));
        let far = Some(Duration::from_millis(40));
        let at = |ms: i64| Timestamp(ms * 1_000_000);
        let run = |client_rtt, client_sh: i64| {
            let mut t = LegTracker::default();
            let mut c = hello(0, "10.0.0.1", "198.51.100.1", "x.example", 1);
            c.rtt = client_rtt;
            let cf = c.flow;
            t.event(LegEvent::client(c));
            let mut p = hello(3, "10.0.0.9", "198.51.100.1", "x.example", 2);
            p.rtt = far;
            let pf = p.flow;
            assert!(
                t.event(LegEvent::client(p)).is_none(),
                "decided at the answer"
            );
            t.event(LegEvent::Server {
                flow: pf,
                at: at(50),
            });
            t.event(LegEvent::Server {
                flow: cf,
                at: at(client_sh),
            })
        };
        let l = run(near, 55).expect("legs");
        assert_eq!((l.kind, l.mode), (Kind::Reoriginated, "transparent"));
        assert_eq!(l.proxy(), ip("10.0.0.9"));
        // two clients visiting one site at once, both answered from afar
        assert!(run(far, 55).is_none());
        // answered nearby but before the other host's handshake ended
        assert!(run(near, 20).is_none());
        // the same hello from two hosts: a NAT seen on both sides
        let mut t = LegTracker::default();
        t.event(LegEvent::client(hello(
            0,
            "10.0.0.1",
            "198.51.100.1",
            "x.example",
            1,
        )));
        let l = t
            .event(LegEvent::client(hello(
                1,
                "10.0.0.9",
                "198.51.100.1",
                "x.example",
                1,
            )))
            .expect("relay");
        assert_eq!((l.kind, l.mode), (Kind::Relay, "transparent"));
    }

    #[test]
    fn reverse_with_another_upstream_name_is_decided_at_the_client_answer() {
        let mut t = LegTracker::default();
        let c = hello(0, "10.0.0.1", "10.0.0.9", "app.example", 1);
        let cf = c.flow;
        t.event(LegEvent::client(c));
        let p = hello(120, "10.0.0.9", "198.51.100.1", "backend.example", 2);
        let pf = p.flow;
        assert!(t.event(LegEvent::client(p)).is_none(), "names differ");
        let at = |ms: i64| Timestamp(ms * 1_000_000);
        assert!(t
            .event(LegEvent::Server {
                flow: pf,
                at: at(160)
            })
            .is_none());
        let l = t
            .event(LegEvent::Server {
                flow: cf,
                at: at(165),
            })
            .expect("the client's answer waited for the upstream's");
        assert_eq!(
            (l.kind, l.mode, l.proxy()),
            (Kind::Reoriginated, "reverse", ip("10.0.0.9"))
        );
        assert_eq!(LegsEvent::of(&l).client_server_hello_ms, Some(165.0));
        // answered before the proxy's own handshake ended: not its leg
        let mut t = LegTracker::default();
        let c = hello(0, "10.0.0.1", "10.0.0.9", "app.example", 1);
        let cf = c.flow;
        t.event(LegEvent::client(c));
        let p = hello(120, "10.0.0.9", "198.51.100.1", "backend.example", 2);
        let pf = p.flow;
        t.event(LegEvent::client(p));
        assert!(t
            .event(LegEvent::Server {
                flow: cf,
                at: at(130)
            })
            .is_none());
        assert!(t
            .event(LegEvent::Server {
                flow: pf,
                at: at(160)
            })
            .is_none());
    }

    #[test]
    fn memory_is_bounded_and_counted() {
        let mut t = LegTracker::default();
        for i in 0..(MAX_HELLOS as i64 + 10) {
            // all within the window, each a new name
            let mut h = hello(0, "10.0.0.1", "198.51.100.1", &format!("n{i}.example"), 1);
            h.flow = i as u64;
            t.hello(h);
        }
        assert_eq!(t.len(), MAX_HELLOS);
        assert_eq!(t.stats.evicted, 10);
        for i in 0..(MAX_PER_KEY as i64 + 3) {
            t.hello(hello(
                10_000 + i,
                "10.0.0.2",
                "198.51.100.2",
                "one.example",
                1,
            ));
        }
        assert_eq!(
            t.by_server[&name_key(ip("198.51.100.2"), "one.example")].len(),
            MAX_PER_KEY
        );
        // time passes: everything goes
        t.hello(hello(60_000, "10.0.0.3", "198.51.100.3", "late.example", 1));
        assert_eq!(t.len(), 1);
        // a flood of one key at one instant behind another key's hello: the
        // key's bound lets hellos go, and the holes they leave behind the
        // other one are bounded with the rest
        t.hello(hello(
            70_000,
            "10.0.0.5",
            "198.51.100.5",
            "other.example",
            1,
        ));
        let evicted = t.stats.evicted;
        for i in 0..(2 * MAX_HELLOS as u64) {
            let mut h = hello(70_000, "10.0.0.4", "198.51.100.4", "flood.example", 1);
            h.flow = 1_000_000 + i;
            t.hello(h);
            assert!(t.held.len() <= MAX_HELLOS);
        }
        assert_eq!(t.len(), MAX_PER_KEY, "the other key's hello made way");
        assert_eq!(t.by_flow.len(), MAX_PER_KEY);
        assert_eq!(t.held.iter().flatten().count(), MAX_PER_KEY);
        // at one instant, the key keeps its last hellos (the earlier tracker
        // could drop a live one there) and every one let go is counted
        let last = 1_000_000 + 2 * MAX_HELLOS as u64;
        let mut kept: Vec<u64> = t.by_flow.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            ((last - MAX_PER_KEY as u64)..last).collect::<Vec<_>>()
        );
        assert_eq!(
            t.stats.evicted - evicted,
            (2 * MAX_HELLOS - MAX_PER_KEY) as u64 + 1
        );
    }

    /// Names are compared, not only their hashes: a hello for another name
    /// filed under the same key (as a hash collision would file it) is no leg.
    #[test]
    fn another_name_under_the_same_key_is_no_leg() {
        let mut t = LegTracker::default();
        let first = hello(0, "10.0.0.1", "10.0.0.9", "x.example", 1);
        // filed as if "x.example" and "y.example" hashed alike
        let collided = name_key(ip("10.0.0.9"), "y.example");
        t.by_server.entry(collided).or_default().push(t.first);
        t.by_flow.insert(first.flow, t.first);
        t.held.push_back(Some((collided, Box::new(first))));
        t.live += 1;
        let proxy_hello = hello(10, "10.0.0.9", "198.51.100.7", "y.example", 2);
        assert!(t.find(&proxy_hello).is_none());
    }
}
