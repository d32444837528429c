//! Logging a flow's events: the EVE header from the flow, the protocol object
//! and facts from its analyzer, and the choice between a finished line and a
//! pending event the verdict stage completes.

use std::sync::Arc;

use smallvec::SmallVec;

use super::{Origin, Session};
use crate::analyzer::dns::{self, DnsMessage};
use crate::analyzer::http::HttpEvent;
use crate::analyzer::quic::{self, QuicEvent};
use crate::analyzer::tls::cert::CertInfo;
use crate::analyzer::tls::{self, TlsEvent};
use crate::capture::Packet;
use crate::config::{CertificateLog, Segment, SiteConfig};
use crate::detect::precheck::Precheck;
use crate::detect::{lone_leaf, Ends, Fact, Facts, RuleSet};
use crate::event::{Context, Event, FlowEvent};
use crate::flow::{Dir, EndReason, Flow};
use crate::pipeline::output::{FlowHead, FlowLine, Output};
use crate::stats::Counters;
use crate::time::Timestamp;
use crate::verdict::legs;

/// What logging an event needs besides the flow.
pub(super) struct Emit<'a, 'o> {
    pub rules: &'a RuleSet,
    pub site: &'a SiteConfig,
    pub origin: Origin<'a>,
    pub out: &'o mut Output,
    pub counters: &'o mut Counters,
    /// The pre-check's memo, for handshakes (TLS, QUIC).
    pub precheck: &'o mut Precheck,
}

/// The EVE header of one of the flow's events.
fn header<'a>(
    flow: &'a Flow<Session>,
    event_type: &'static str,
    ts: Timestamp,
    site: &'a SiteConfig,
    origin: Origin<'a>,
    frame: Option<u64>,
) -> Event<'a> {
    let cx = Context {
        sensor: site.sensor_name(),
        pcap_file: origin.pcap_file.map(|p| &**p),
        frame,
        app_proto: flow.data.app_proto(),
        anomaly: flow
            .data
            .overlap
            .then_some("stream.reassembly_overlap_different_data"),
        src_segment: flow.data.src_seg.as_ref().map(Segment::as_ref),
        dest_segment: flow.data.dest_seg.as_ref().map(Segment::as_ref),
    };
    Event::for_flow(flow, event_type, ts, cx)
}

/// The flow's EVE header fields, owned, for an event the writer may make.
fn flow_head(flow: &Flow<Session>, ts: Timestamp, frame: u64, origin: Origin<'_>) -> FlowHead {
    FlowHead {
        flow_id: flow.id,
        ts,
        frame,
        pcap_file: origin.pcap_file.cloned(),
        src: flow.client(),
        dst: flow.server(),
        proto: flow.key.proto,
        vlans: flow.key.vlans,
        app_proto: flow.data.app_proto(),
        anomaly: flow
            .data
            .overlap
            .then_some("stream.reassembly_overlap_different_data"),
        src_seg: flow.data.src_seg.clone(),
        dest_seg: flow.data.dest_seg.clone(),
    }
}

fn ends(flow: &Flow<Session>) -> Ends<'_> {
    Ends {
        client: flow.client().0,
        server: flow.server().0,
        client_seg: flow.data.src_seg.as_ref(),
        server_seg: flow.data.dest_seg.as_ref(),
    }
}

/// Should this event go to the verdict stage? Marks the flow if so. A
/// handshake's answer is remembered (`memo`): its facts repeat; a DNS
/// message's or an HTTP request's seldom do.
fn pending(
    rules: &RuleSet,
    memo: Option<&mut Precheck>,
    flow: &mut Flow<Session>,
    facts: &mut Facts<'_>,
) -> bool {
    facts.set(Fact::DestPort, flow.server().1.into());
    let p = match memo {
        Some(m) => m.may_match(rules, facts),
        None => rules.may_match(facts),
    };
    flow.data.decided |= p;
    p
}

/// Logs a protocol event: finished, when no signature can match it; else
/// pending, for the verdict stage to decide with the state it keeps across
/// flows.
fn send(
    out: &mut Output,
    flow: u64,
    pending: bool,
    facts: &Facts<'_>,
    ends: &Ends<'_>,
    e: Event<'_>,
) {
    if pending {
        out.decide(flow, facts, ends, e);
    } else {
        if let Some(leaf) = lone_leaf(facts.chain) {
            out.observe(flow, Arc::clone(leaf));
        }
        out.line(flow, &e);
    }
}

/// The host of a CONNECT target (`host:port`, `[v6]:port`).
fn connect_host(target: &str) -> String {
    let host = match target.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => target.rsplit_once(':').map_or(target, |(h, _)| h),
    };
    host.to_string()
}

impl Packet<&[u8]> {
    /// A packet-less stand-in carrying only a time (for events at flow end).
    fn at(ts: Timestamp) -> Self {
        Packet {
            ts,
            linktype: crate::capture::LinkType::ETHERNET,
            data: &[],
            orig_len: 0,
            frame: 0,
        }
    }
}

impl Emit<'_, '_> {
    /// Logs protocol event `body` (its type and protocol object; the head is
    /// the flow's) at `(time, frame)`: pending (`p`), for the verdict stage,
    /// or finished. A finished event's head is left to the writer when the
    /// output defers ([`Output::defer`]). `reply`: it goes from the server
    /// to the client (a DNS response).
    fn log(
        &mut self,
        flow: &Flow<Session>,
        p: bool,
        facts: &Facts<'_>,
        (ts, frame): (Timestamp, Option<u64>),
        reply: bool,
        body: Event<'_>,
    ) {
        if self.out.defer {
            let origin = self.origin;
            let head = || {
                // its Community ID is the writer's to make (a SHA-1 of the
                // addresses: some 2 % of the worker's time on a
                // handshake-heavy capture)
                let mut h = flow_head(flow, ts, frame.unwrap_or(0), origin);
                if reply {
                    std::mem::swap(&mut h.src, &mut h.dst);
                    std::mem::swap(&mut h.src_seg, &mut h.dest_seg);
                }
                h
            };
            if p {
                let ends = ends(flow);
                return self.out.decide_left(flow.id, facts, &ends, (head(), body));
            }
            if let Some(leaf) = lone_leaf(facts.chain) {
                self.out.observe(flow.id, Arc::clone(leaf));
            }
            return self.out.tail(flow.id, &body, head);
        }
        let mut e = header(flow, body.event_type, ts, self.site, self.origin, frame);
        e.set_objects(body);
        if reply {
            std::mem::swap(&mut e.src_ip, &mut e.dest_ip);
            std::mem::swap(&mut e.src_port, &mut e.dest_port);
            std::mem::swap(&mut e.src_segment, &mut e.dest_segment);
        }
        send(self.out, flow.id, p, facts, &ends(flow), e);
    }

    /// The DNS messages read, each as the packet's own direction carries it
    /// (a response comes from the server).
    pub fn dns(
        &mut self,
        msgs: &mut Vec<DnsMessage>,
        flow: &mut Flow<Session>,
        dir: Dir,
        pkt: &Packet<&[u8]>,
    ) {
        for m in msgs.drain(..) {
            let mut facts = dns::facts(&m);
            let p = pending(self.rules, None, flow, &mut facts);
            let body = Event {
                event_type: "dns",
                dns: Some(&m),
                ..Default::default()
            };
            let at = (pkt.ts, Some(pkt.frame));
            self.log(flow, p, &facts, at, dir == Dir::ToClient, body);
        }
    }

    /// Every finished HTTP transaction.
    pub fn http(&mut self, flow: &mut Flow<Session>, pkt: &Packet<&[u8]>) {
        let Some(mut h) = flow.data.analyzers_mut().and_then(|a| a.http.take()) else {
            return;
        };
        let mut connect = None;
        for (req, resp) in h.done.drain(..) {
            if let Some(r) = req.as_ref().filter(|r| r.http_method == "CONNECT") {
                connect = Some(connect_host(&r.url));
            }
            let ev = HttpEvent::of(req.as_ref(), resp.as_ref());
            let mut facts = ev.facts();
            let p = pending(self.rules, None, flow, &mut facts);
            self.counters.http_transactions += 1;
            if !p && h.logged >= crate::analyzer::http::MAX_TRANSACTIONS {
                // read and matched, not logged: the log of one flow is bounded
                self.counters.http_unlogged += 1;
                continue;
            }
            let body = Event {
                event_type: "http",
                http: Some(ev),
                ..Default::default()
            };
            self.log(flow, p, &facts, (pkt.ts, Some(pkt.frame)), false, body);
            h.logged += 1;
        }
        if let Some(a) = flow.data.analyzers_mut() {
            a.http = Some(h);
            if connect.is_some() {
                a.connect = connect;
            }
        }
    }

    /// What a TCP segment's bytes completed: HTTP transactions, the hellos
    /// for the leg correlation, the TLS handshake.
    pub fn stream_events(&mut self, flow: &mut Flow<Session>, pkt: &Packet<&[u8]>) {
        self.http(flow, pkt);
        let Some(a) = flow.data.analyzers() else {
            return;
        };
        let tls = a.tls.as_ref();
        let hello = !a.hello_sent && tls.is_some_and(|t| t.client_hello.is_some());
        let server_hello =
            a.legs_open && !a.sh_sent && tls.is_some_and(|t| t.server_hello.is_some());
        let done = !a.tls_logged && tls.is_some_and(|t| t.done());
        if hello {
            self.hello(flow, pkt);
        }
        if server_hello {
            self.server_hello(flow, pkt);
        }
        if done {
            self.tls(flow, pkt.ts, Some(pkt.frame));
        }
    }

    /// The flow's first ClientHello, for the leg correlation: by its server
    /// name, else the target of the flow's CONNECT (no name, no legs).
    pub fn hello(&mut self, flow: &mut Flow<Session>, pkt: &Packet<&[u8]>) {
        let (rtt, client_seg, server_seg) = (
            flow.data.rtt,
            flow.data.src_seg.clone(),
            flow.data.dest_seg.clone(),
        );
        let (id, client, server) = (flow.id, flow.client().0, flow.server().0);
        let Some(a) = flow.data.analyzers_mut() else {
            return;
        };
        a.hello_sent = true;
        let connect = a.connect.as_deref();
        let Some(t) = a.tls.as_deref_mut() else {
            return;
        };
        let Some(name) = t
            .client_hello
            .as_ref()
            .and_then(|c| c.sni.as_deref())
            .or(connect)
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        else {
            return;
        };
        let Some(ch) = t.client_hello.as_ref() else {
            return;
        };
        // (there is one: the hello is there)
        let ja4 = t.ja4_shared().unwrap_or_else(|| Arc::from(""));
        let hello = legs::Hello {
            at: pkt.ts,
            flow: id,
            client,
            server,
            name,
            random: ch.random,
            ja4,
            rtt,
            client_seg,
            server_seg,
            sh_at: None,
            tag: flow_head(flow, pkt.ts, pkt.frame, self.origin),
        };
        self.out.hello(id, hello);
        if let Some(a) = flow.data.analyzers_mut() {
            a.legs_open = true;
        }
    }

    /// The ServerHello of a flow whose ClientHello went to the correlation.
    pub fn server_hello(&mut self, flow: &mut Flow<Session>, pkt: &Packet<&[u8]>) {
        if let Some(a) = flow.data.analyzers_mut() {
            a.sh_sent = true;
        }
        self.out.server_hello(flow.id, pkt.ts, pkt.frame);
    }

    /// The TLS handshake (once per flow).
    pub fn tls(&mut self, flow: &mut Flow<Session>, ts: Timestamp, frame: Option<u64>) {
        let Some(a) = flow.data.analyzers_mut() else {
            return;
        };
        a.tls_logged = true;
        let Some(t) = a.tls.take() else {
            return;
        };
        let mut ev = TlsEvent::of(&t);
        let prints = tls::Fingerprints::of(&t);
        let mut facts = tls::facts(&t, &prints);
        let p = pending(self.rules, Some(self.precheck), flow, &mut facts);
        if !self.site.events.client_handshake {
            ev.client_handshake = None;
        }
        if self.site.events.certificates == CertificateLog::Once {
            ev.by_reference();
            let certs: SmallVec<[&Arc<CertInfo>; 8]> = (t.chain.iter())
                .chain(&t.client_chain)
                .chain(&t.overlap_chain)
                .collect();
            self.out.certificates(flow.id, ts, &certs);
        }
        let body = Event {
            event_type: "tls",
            tls: Some(ev),
            ..Default::default()
        };
        self.log(flow, p, &facts, (ts, frame), false, body);
        self.counters.events_tls += 1;
        if !t.chain.is_empty() {
            self.counters.tls_certificate_msgs += 1;
        }
        // they borrow the session, which goes back to the flow
        drop(facts);
        drop(prints);
        if let Some(a) = flow.data.analyzers_mut() {
            a.tls = Some(t);
        }
    }

    /// The QUIC ClientHellos read and not logged yet (with the server's
    /// hello, when its Initial has been read).
    pub fn quic(&mut self, flow: &mut Flow<Session>, ts: Timestamp, frame: Option<u64>) {
        let Some(q) = flow.data.analyzers_mut().and_then(|a| a.quic.take()) else {
            return;
        };
        if q.unlogged() {
            let mut ev = QuicEvent::of(&q);
            if !self.site.events.client_handshake {
                ev.client_handshake = None;
            }
            let prints = ev.prints();
            let mut facts = quic::facts(&q, &prints);
            let p = pending(self.rules, Some(self.precheck), flow, &mut facts);
            let body = Event {
                event_type: "quic",
                quic: Some(ev),
                ..Default::default()
            };
            self.log(flow, p, &facts, (ts, frame), false, body);
            self.counters.events_quic += 1;
        }
        let mut q = q;
        q.logged();
        if let Some(a) = flow.data.analyzers_mut() {
            a.quic = Some(q);
        }
    }

    /// The HTTP requests still waiting for a response, logged without one
    /// at the flow's last packet (it ends, or is let go at the memory cap).
    pub fn unanswered(&mut self, flow: &mut Flow<Session>) {
        if let Some(h) = flow.data.analyzers_mut().and_then(|a| a.http.as_mut()) {
            h.flush();
        }
        let last = flow.last;
        self.http(flow, &Packet::at(last));
    }

    /// A flow ends: what its analyzers still hold, then its `flow` event.
    pub fn flow_end(&mut self, flow: &mut Flow<Session>, reason: EndReason) {
        self.unanswered(flow);
        let last = flow.last;
        let unlogged_hello = flow.data.analyzers().is_some_and(|a| {
            !a.tls_logged
                && a.tls
                    .as_ref()
                    .is_some_and(|t| t.client_hello.is_some() || t.server_hello.is_some())
        });
        if unlogged_hello {
            self.tls(flow, last, None);
        }
        self.quic(flow, last, None);
        let ev = FlowEvent::of(flow, reason);
        self.counters.events_flow += 1;
        if self.out.defer && !flow.data.decided {
            let origin = self.origin;
            return self.out.flow_line(flow.id, || FlowLine {
                head: flow_head(flow, last, flow.first_frame, origin),
                flow: ev,
            });
        }
        if self.out.defer {
            // `alerted`, and the ledger's view of how long the flow went on:
            // the writer's, as is the head
            let head = flow_head(flow, last, flow.first_frame, self.origin);
            let body = Event {
                event_type: "flow",
                flow: Some(ev),
                ..Default::default()
            };
            return self.out.flow_end(flow.id, body, Some(head));
        }
        let frame = Some(flow.first_frame);
        let mut e = header(flow, "flow", last, self.site, self.origin, frame);
        e.flow = Some(ev);
        if flow.data.decided {
            // `alerted`, and the ledger's view of how long the flow went on
            self.out.flow_end(flow.id, e, None);
        } else {
            self.out.line(flow.id, &e);
        }
    }
}
