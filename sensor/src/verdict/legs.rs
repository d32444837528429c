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
    pub ja4: String,
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
    Client(Hello<T>),
    Server { flow: u64, at: Timestamp },
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
#[derive(Debug)]
pub struct LegTracker<T = ()> {
    /// (Inline lists: most keys hold one hello, most hosts a few; a queue
    /// per key was an allocation and a free per hello. Both are bounded by
    /// [`MAX_PER_KEY`], so taking the front is a bounded shift.)
    by_server: HashMap<Key, SmallVec<[Hello<T>; 1]>, ahash::RandomState>,
    /// Where each held hello is, by flow.
    by_flow: HashMap<u64, Key, ahash::RandomState>,
    /// The flows of the hellos each host sent, newest last (entries of
    /// hellos gone are skipped, and dropped with the bound).
    sent_by: HashMap<IpAddr, SmallVec<[u64; 4]>, ahash::RandomState>,
    /// Every held hello's key, oldest first (for expiry and the bound).
    order: VecDeque<(Timestamp, Key)>,
    pub stats: LegStats,
}

impl<T> Default for LegTracker<T> {
    fn default() -> Self {
        LegTracker {
            by_server: HashMap::default(),
            by_flow: HashMap::default(),
            sent_by: HashMap::default(),
            order: VecDeque::new(),
            stats: LegStats::default(),
        }
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
    fn hello(&mut self, h: Hello<T>) -> Option<Legs<T>> {
        self.stats.hellos += 1;
        self.expire(h.at);
        let found = self.find(&h);
        self.insert(h);
        found
    }

    fn held(&self, flow: u64) -> Option<&Hello<T>> {
        let key = self.by_flow.get(&flow)?;
        self.by_server.get(key)?.iter().find(|h| h.flow == flow)
    }

    /// A ServerHello on a held hello's flow: if its server, before this
    /// answer, sent a hello of its own (for another name) and had that one
    /// answered, the answer waited for the proxy's upstream handshake.
    fn server_hello(&mut self, flow: u64, at: Timestamp) -> Option<Legs<T>> {
        let key = *self.by_flow.get(&flow)?;
        let held = self
            .by_server
            .get_mut(&key)?
            .iter_mut()
            .find(|h| h.flow == flow)?;
        held.sh_at.get_or_insert(at);
        let first = self.held(flow)?;
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
            let k = name_key(first.server, &first.name);
            self.by_server
                .get(&k)
                .into_iter()
                .flatten()
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
        self.order.len()
    }

    /// The counters, with the hellos held now.
    pub fn stats(&self) -> LegStats {
        LegStats {
            held: self.order.len() as u64,
            ..self.stats
        }
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn find(&self, h: &Hello<T>) -> Option<Legs<T>> {
        let recent = |k: &Key| {
            self.by_server
                .get(k)
                .into_iter()
                .flatten()
                .rev()
                .filter(|r| {
                    r.client != h.client
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

    fn insert(&mut self, h: Hello<T>) {
        let key = name_key(h.server, &h.name);
        let at = h.at;
        let q = self.by_server.entry(key).or_default();
        if q.len() >= MAX_PER_KEY {
            if let Some(old) = pop_front(q) {
                self.by_flow.remove(&old.flow);
            }
            self.stats.evicted += 1;
        }
        let (flow, client) = (h.flow, h.client);
        q.push(h);
        self.by_flow.insert(flow, key);
        let sent = self.sent_by.entry(client).or_default();
        if sent.len() >= MAX_PER_KEY {
            pop_front(sent);
        }
        sent.push(flow);
        self.order.push_back((at, key));
        while self.order.len() > MAX_HELLOS {
            self.pop_oldest(true);
        }
    }

    /// A hello dropped: its flow and its sender's entry go too.
    fn forget(&mut self, h: &Hello<T>) {
        self.by_flow.remove(&h.flow);
        if let Some(sent) = self.sent_by.get_mut(&h.client) {
            sent.retain(|f| *f != h.flow);
            if sent.is_empty() {
                self.sent_by.remove(&h.client);
            }
        }
    }

    /// Drops what is older than the window.
    fn expire(&mut self, now: Timestamp) {
        while self
            .order
            .front()
            .is_some_and(|(t, _)| now.since(*t) > WINDOW)
        {
            self.pop_oldest(false);
        }
    }

    fn pop_oldest(&mut self, evicted: bool) {
        let Some((t, key)) = self.order.pop_front() else {
            return;
        };
        let Some(q) = self.by_server.get_mut(&key) else {
            return;
        };
        let gone = if q.first().is_some_and(|h| h.at <= t) {
            pop_front(q)
        } else {
            None
        };
        if q.is_empty() {
            self.by_server.remove(&key);
        }
        if let Some(h) = gone {
            self.forget(&h);
            self.stats.evicted += u64::from(evicted);
        }
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
            ja4: format!("ja4-{random}"),
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
            .event(LegEvent::Client(hello(
                0,
                "10.0.0.1",
                "10.0.0.9",
                "x.example",
                1
            )))
            .is_none());
        let l = t
            .event(LegEvent::Client(hello(
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
        t.event(LegEvent::Client(hello(
            100,
            "10.0.0.2",
            "10.0.0.8",
            "y.example",
            7,
        )));
        let l = t
            .event(LegEvent::Client(hello(
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
            t.event(LegEvent::Client(c));
            let mut p = hello(3, "10.0.0.9", "198.51.100.1", "x.example", 2);
            p.rtt = far;
            let pf = p.flow;
            assert!(
                t.event(LegEvent::Client(p)).is_none(),
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
        t.event(LegEvent::Client(hello(
            0,
            "10.0.0.1",
            "198.51.100.1",
            "x.example",
            1,
        )));
        let l = t
            .event(LegEvent::Client(hello(
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
        t.event(LegEvent::Client(c));
        let p = hello(120, "10.0.0.9", "198.51.100.1", "backend.example", 2);
        let pf = p.flow;
        assert!(t.event(LegEvent::Client(p)).is_none(), "names differ");
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
        t.event(LegEvent::Client(c));
        let p = hello(120, "10.0.0.9", "198.51.100.1", "backend.example", 2);
        let pf = p.flow;
        t.event(LegEvent::Client(p));
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
    }
}
