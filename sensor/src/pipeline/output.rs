//! What a worker hands to the writer.
//!
//! An engine writes its events into an [`Output`]: most as finished JSON lines
//! in one reused buffer, and the few that need state shared across flows (the
//! host ledger, alert suppression, the shared-key tracker) as [`Pending`]
//! events that the single writer thread completes in a fixed order. Every item
//! carries a [`Key`] (the sequence number of the packet or tick that caused it
//! and the flow's id) by which the writer merges the workers' outputs, so the
//! output is the same whatever the number of workers.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::analyzer::tls::cert::CertInfo;
use crate::config::Segment;
use crate::detect::{Ends, Facts, OwnedFacts};
use crate::event::{Event, FlowEvent};
use crate::stats::Counters;
use crate::time::Timestamp;

mod head;
pub use head::{FlowHead, FlowLine};

/// Where an output item sorts: the sequence number of what caused it (packet,
/// tick, end of input), then the flow it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Key {
    pub seq: u64,
    pub flow: u64,
}

impl Key {
    /// The last key of sequence number `seq`: "all of `seq`".
    pub fn whole(seq: u64) -> Key {
        Key {
            seq,
            flow: u64::MAX,
        }
    }
}

/// Which event types to write (all when the list is empty).
#[derive(Debug, Clone, Default)]
pub struct EventTypes(Vec<String>);

impl EventTypes {
    pub fn new(types: &[String]) -> Self {
        EventTypes(types.to_vec())
    }

    pub fn wants(&self, t: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|x| x == t)
    }
}

/// A protocol event whose verdict needs the cross-flow state.
#[derive(Debug)]
pub struct Pending {
    pub at: Timestamp,
    pub event_type: &'static str,
    pub facts: OwnedFacts,
    pub ends: OwnedEnds,
    pub heads: Heads,
    /// `,"tls":{…}` (or dns, http): the protocol object, key included.
    pub body: Vec<u8>,
    /// The protocol object as an alert carries it, when it differs (a TLS
    /// event naming its certificates by hash: alerts carry them whole).
    pub alert_body: Option<Vec<u8>>,
}

/// The end of a flow that had a pending event: its `flow` event's `alerted`
/// and the ledger's bookkeeping are the writer's.
#[derive(Debug)]
pub struct PendingFlow {
    pub heads: Heads,
    pub flow: FlowEvent,
}

/// A pending event's head: its JSON up to (not including) its protocol
/// object, without the closing brace, as itself and as an alert's.
#[derive(Debug)]
pub enum Heads {
    /// Made by the worker, each only when its type is wanted (else empty).
    Made { own: Vec<u8>, alert: Vec<u8> },
    /// Left to the writer ([`Output::defer`]), which makes the alert's only
    /// for an event that raises one (most pending events raise none).
    Left(FlowHead),
}

impl Heads {
    /// The head as an event of type `t` (the pending event's own, or
    /// "alert").
    pub fn of(&self, t: &'static str, sensor: Option<&str>) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Heads::Made { own, alert } => match t {
                "alert" => alert.into(),
                _ => own.into(),
            },
            Heads::Left(h) => h.head(t, sensor).into(),
        }
    }
}

/// A ClientHello for the leg correlation, with the header fields of the
/// `tls_legs` event (and alert) that reports it if it completes two legs.
pub type PendingHello = crate::verdict::legs::Hello<FlowHead>;

/// What a worker reports when asked (stats, end of run).
#[derive(Debug, Clone)]
pub struct Report {
    pub worker: usize,
    pub counters: Counters,
    pub queue_depth: usize,
    pub latency: Option<Box<hdrhistogram::Histogram<u64>>>,
}

/// One item of a worker's output.
#[derive(Debug)]
pub enum Item {
    /// A finished line: `buf[start..end]`, newline included.
    Line {
        key: Key,
        start: usize,
        end: usize,
        /// Its place in `config::EVENT_TYPES` (one byte: an item stays small).
        event_type: u8,
    },
    /// A lone leaf certificate for the shared-key tracker.
    Observe {
        key: Key,
        leaf: Arc<CertInfo>,
    },
    Decide {
        key: Key,
        p: Box<Pending>,
    },
    FlowEnd {
        key: Key,
        p: Box<PendingFlow>,
    },
    Hello {
        key: Key,
        p: Box<PendingHello>,
    },
    /// The ServerHello of a flow whose ClientHello went to the correlation.
    ServerHello {
        key: Key,
        at: Timestamp,
        frame: u64,
    },
    Report {
        key: Key,
        r: Box<Report>,
    },
    /// A protocol event whose head the writer makes from `heads[head]`,
    /// before `buf[start..end]`: the event's members after its head, each
    /// with its comma (`,"tls":{…}`), as [`Event::write_tail`] wrote them.
    /// The head (its time, addresses, Community ID) is half an event's
    /// serialising, and needs nothing of the worker's state
    /// ([`Output::defer`]).
    Tail {
        key: Key,
        head: usize,
        start: usize,
        end: usize,
        /// As [`Item::Line`]'s.
        event_type: u8,
    },
    /// A `flow` event for the writer to serialise: `lines[line]`.
    Flow {
        key: Key,
        line: usize,
    },
    /// The certificates a `tls` event names by hash: the writer logs each
    /// once (and again after the re-log interval) as a `certificate` event.
    Certs {
        key: Key,
        at: Timestamp,
        certs: Box<[Arc<CertInfo>]>,
    },
}

impl Item {
    pub fn key(&self) -> Key {
        match self {
            Item::Line { key, .. }
            | Item::Observe { key, .. }
            | Item::Decide { key, .. }
            | Item::FlowEnd { key, .. }
            | Item::Hello { key, .. }
            | Item::ServerHello { key, .. }
            | Item::Report { key, .. }
            | Item::Flow { key, .. }
            | Item::Tail { key, .. }
            | Item::Certs { key, .. } => *key,
        }
    }
}

/// Emptied buffers of an output, handed back for reuse.
#[derive(Debug, Default)]
pub struct Spare {
    pub buf: Vec<u8>,
    pub items: Vec<Item>,
    pub heads: Vec<FlowHead>,
    pub lines: Vec<FlowLine>,
}

impl Spare {
    /// Empties them (keeping their room).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
        self.heads.clear();
        self.lines.clear();
    }
}

/// A worker's output since it was last handed over.
#[derive(Debug, Default)]
pub struct Output {
    /// Sequence number of what is being processed now.
    pub seq: u64,
    pub buf: Vec<u8>,
    pub items: Vec<Item>,
    /// The heads of [`Item::Tail`]s and the events of [`Item::Flow`]s, by
    /// index: kept in vectors that come back for reuse, as `buf` does, not
    /// boxed one by one (a box made by the worker and freed by the writer,
    /// some 160,000 a run on the handshake-heavy bench capture, goes back to
    /// the worker's heap late and cold).
    pub heads: Vec<FlowHead>,
    pub lines: Vec<FlowLine>,
    pub types: Arc<EventTypes>,
    /// Leave to the writer the serialising of what needs nothing more of
    /// the worker's state: the `flow` events of flows without pending
    /// events, the heads of finished protocol events ([`Item::Tail`]), and
    /// those of pending events and of their flows' ends ([`Heads::Left`]).
    /// Worth it with one worker and a core beside it: the worker's
    /// time bounds the run and the writer's core has time to spare (on the
    /// handshake-heavy bench capture, per 300,000 packets, 952 M
    /// instructions in the worker and 132 M in the writer without it; with
    /// it, and the decoding of the same session, 725 M and 212 M). Each
    /// further worker would add as much to the single writer, which would
    /// become the bound: with more, each serialises its own.
    pub defer: bool,
}

impl Output {
    pub fn new(types: Arc<EventTypes>, defer: bool) -> Self {
        Output {
            types,
            defer,
            ..Default::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Makes room for `lines` more lines of about `bytes` each.
    pub fn reserve(&mut self, lines: usize, bytes: usize) {
        self.buf.reserve(lines.saturating_mul(bytes));
        self.items.reserve(lines);
    }

    /// Takes the output so far, leaving an empty one with the same settings
    /// and these (empty) buffers, if given.
    pub fn take(&mut self, spare: Option<Spare>) -> Output {
        let Spare {
            buf,
            items,
            heads,
            lines,
        } = spare.unwrap_or_else(|| Spare {
            buf: Vec::with_capacity(self.buf.capacity()),
            items: Vec::with_capacity(self.items.capacity()),
            heads: Vec::with_capacity(self.heads.capacity()),
            lines: Vec::with_capacity(self.lines.capacity()),
        });
        let fresh = Output {
            seq: self.seq,
            buf,
            items,
            heads,
            lines,
            types: Arc::clone(&self.types),
            defer: self.defer,
        };
        std::mem::replace(self, fresh)
    }

    fn key(&self, flow: u64) -> Key {
        Key {
            seq: self.seq,
            flow,
        }
    }

    /// Writes `e` into the buffer with `write`, if its type is wanted: its
    /// key, where it lies and its type's index. (Only a failing Serialize
    /// impl fails; none of ours does.)
    fn put(
        &mut self,
        flow: u64,
        e: &Event<'_>,
        write: impl FnOnce(&Event<'_>, &mut Vec<u8>) -> serde_json::Result<()>,
    ) -> Option<(Key, usize, usize, u8)> {
        if !self.types.wants(e.event_type) {
            return None;
        }
        let start = self.buf.len();
        if write(e, &mut self.buf).is_err() {
            self.buf.truncate(start);
            return None;
        }
        let t = crate::config::event_type_index(e.event_type);
        Some((self.key(flow), start, self.buf.len(), t))
    }

    /// Writes a finished event (if its type is wanted).
    pub fn line(&mut self, flow: u64, e: &Event<'_>) {
        let whole = |e: &Event<'_>, buf: &mut Vec<u8>| {
            e.write_json(buf)?;
            buf.push(b'\n');
            Ok(())
        };
        if let Some((key, start, end, event_type)) = self.put(flow, e, whole) {
            let line = Item::Line {
                key,
                start,
                end,
                event_type,
            };
            self.items.push(line);
        }
    }

    /// A finished protocol event, `e` its protocol object only, whose head
    /// the writer makes from `head` (see [`Item::Tail`]).
    pub fn tail(&mut self, flow: u64, e: &Event<'_>, head: impl FnOnce() -> FlowHead) {
        if let Some((key, start, end, event_type)) = self.put(flow, e, |e, buf| e.write_tail(buf)) {
            self.heads.push(head());
            self.items.push(Item::Tail {
                key,
                head: self.heads.len() - 1,
                start,
                end,
                event_type,
            });
        }
    }

    /// Certificates for the writer's `certificate` events (if wanted). Every
    /// handshake's go (a pointer each): which one is logged is decided in the
    /// writer, in input order, so the events do not depend on which worker
    /// saw a certificate first; a per-worker filter would.
    pub fn certificates(&mut self, flow: u64, at: Timestamp, certs: &[&Arc<CertInfo>]) {
        if certs.is_empty() || !self.types.wants("certificate") {
            return;
        }
        let key = self.key(flow);
        let certs = certs.iter().map(|c| Arc::clone(c)).collect();
        self.items.push(Item::Certs { key, at, certs });
    }

    pub fn observe(&mut self, flow: u64, leaf: Arc<CertInfo>) {
        let key = self.key(flow);
        self.items.push(Item::Observe { key, leaf });
    }

    /// Hands a protocol event to the writer for its verdict.
    pub fn decide(&mut self, flow: u64, facts: &Facts<'_>, ends: &Ends<'_>, e: Event<'_>) {
        self.decide_with(flow, facts, ends, e, None);
    }

    /// [`Output::decide`] for protocol event `e` (its type and protocol
    /// object) whose head the writer makes from `head`.
    pub fn decide_left(
        &mut self,
        flow: u64,
        facts: &Facts<'_>,
        ends: &Ends<'_>,
        (head, e): (FlowHead, Event<'_>),
    ) {
        self.decide_with(flow, facts, ends, e, Some(head));
    }

    fn decide_with(
        &mut self,
        flow: u64,
        facts: &Facts<'_>,
        ends: &Ends<'_>,
        e: Event<'_>,
        left: Option<FlowHead>,
    ) {
        let event_type = e.event_type;
        let at = left.as_ref().map_or(e.timestamp, |h| h.ts);
        let want = (self.types.wants(event_type), self.types.wants("alert"));
        let s = split(e, want, left);
        let key = self.key(flow);
        self.items.push(Item::Decide {
            key,
            p: Box::new(Pending {
                at,
                event_type,
                facts: OwnedFacts::of(facts),
                ends: OwnedEnds::of(ends),
                heads: s.heads,
                body: s.body,
                alert_body: s.alert_body,
            }),
        });
    }

    /// Hands the end of a flow with pending events to the writer: its
    /// `flow` event `e`, with its head, or the head's fields (`left`) for
    /// the writer to make it.
    pub fn flow_end(&mut self, flow: u64, mut e: Event<'_>, left: Option<FlowHead>) {
        let Some(ev) = e.flow.take() else { return };
        let want = (self.types.wants("flow"), self.types.wants("alert"));
        let s = split(e, want, left);
        let key = self.key(flow);
        self.items.push(Item::FlowEnd {
            key,
            p: Box::new(PendingFlow {
                heads: s.heads,
                flow: ev,
            }),
        });
    }

    /// An ended flow's `flow` event (if wanted), for the writer to serialise
    /// ([`Output::defer`]).
    pub fn flow_line(&mut self, flow: u64, line: impl FnOnce() -> FlowLine) {
        if !self.types.wants("flow") {
            return;
        }
        let key = self.key(flow);
        self.lines.push(line());
        let line = self.lines.len() - 1;
        self.items.push(Item::Flow { key, line });
    }

    /// Hands a ClientHello to the leg correlation.
    pub fn hello(&mut self, flow: u64, p: PendingHello) {
        let key = self.key(flow);
        self.items.push(Item::Hello {
            key,
            p: Box::new(p),
        });
    }

    /// Hands the flow's ServerHello to the leg correlation.
    pub fn server_hello(&mut self, flow: u64, at: Timestamp, frame: u64) {
        let key = self.key(flow);
        self.items.push(Item::ServerHello { key, at, frame });
    }

    pub fn report(&mut self, r: Report) {
        let key = self.key(r.worker as u64);
        self.items.push(Item::Report {
            key,
            r: Box::new(r),
        });
    }
}

/// An event serialised in its parts.
struct Split {
    heads: Heads,
    body: Vec<u8>,
    alert_body: Option<Vec<u8>>,
}

/// An event's head (as itself, and as an alert; or, `left`, its fields for
/// the writer) and protocol object (as itself, and as an alert carries it):
/// only the parts of the types wanted (`want`: the event's own type,
/// alerts) are serialised.
fn split(mut e: Event<'_>, (own, alert): (bool, bool), left: Option<FlowHead>) -> Split {
    fn keyed<T: Serialize>(name: &str, v: &T) -> Vec<u8> {
        let mut b = Vec::with_capacity(512);
        b.extend_from_slice(b",\"");
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(b"\":");
        if serde_json::to_writer(&mut b, v).is_err() {
            b.clear();
        }
        b
    }
    fn keyed_tls(t: &crate::analyzer::tls::TlsEvent<'_>) -> Vec<u8> {
        let mut b = Vec::with_capacity(512);
        b.extend_from_slice(b",\"tls\":");
        if t.write_json(&mut b).is_err() {
            b.clear();
        }
        b
    }
    let (mut body, mut alert_body) = (Vec::new(), None);
    if let Some(mut t) = e.tls.take() {
        if own || (alert && !t.by_hash()) {
            body = keyed_tls(&t);
        }
        if alert && t.by_hash() {
            t.inline();
            alert_body = Some(keyed_tls(&t));
        }
    } else if !(own || alert) {
        // nothing of it is written
    } else if let Some(d) = e.dns.take() {
        body = keyed("dns", d);
    } else if let Some(h) = e.http.take() {
        body = keyed("http", &h);
    } else if let Some(q) = e.quic.take() {
        body = keyed("quic", &q);
    }
    e.flow = None;
    if let Some(h) = left {
        return Split {
            heads: Heads::Left(h),
            body,
            alert_body,
        };
    }
    let head = |e: &Event<'_>| {
        let mut h = Vec::with_capacity(512);
        if e.write_json(&mut h).is_err() {
            h = b"{}".to_vec();
        }
        h.pop(); // the closing brace
        h
    };
    let proto = if own { head(&e) } else { Vec::new() };
    e.event_type = "alert";
    let alert_head = if alert { head(&e) } else { Vec::new() };
    Split {
        heads: Heads::Made {
            own: proto,
            alert: alert_head,
        },
        body,
        alert_body,
    }
}

/// [`Ends`], owned.
#[derive(Debug, Clone)]
pub struct OwnedEnds {
    pub client: IpAddr,
    pub server: IpAddr,
    pub client_seg: Option<Segment>,
    pub server_seg: Option<Segment>,
}

impl OwnedEnds {
    pub fn of(e: &Ends<'_>) -> Self {
        OwnedEnds {
            client: e.client,
            server: e.server,
            client_seg: e.client_seg.cloned(),
            server_seg: e.server_seg.cloned(),
        }
    }

    pub fn ends(&self) -> Ends<'_> {
        Ends {
            client: self.client,
            server: self.server,
            client_seg: self.client_seg.as_ref(),
            server_seg: self.server_seg.as_ref(),
        }
    }
}
