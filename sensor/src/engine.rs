//! The per-worker pipeline: decode → flow → stream → analyzers → events.
//!
//! An [`Engine`] owns its flows (no locks on the per-packet path) and is fed
//! packets in capture order, and ticks (capture time) at which idle flows
//! end. It is sans-IO: events go to an [`Output`] for the writer, and time is
//! capture time. Detection that needs no state beyond the flow is done here;
//! what needs state shared across flows is the writer's (see `writer`).

use std::sync::Arc;

use crate::analyzer::dns::{self, DnsMessage};
use crate::analyzer::http::{self, HttpSession};
use crate::analyzer::tls::cert::CertCache;
use crate::analyzer::tls::{self, ja3, ja4, TlsSession};
use crate::capture::Packet;
use crate::config::{Segment, SiteConfig};
use crate::decode::{self, defrag::Defragmenter, Decoded, Outcome, TcpHeader, Transport};
use crate::detect::{lone_leaf, Ends, Fact, Facts, RuleSet};
use crate::event::{ClientHandshake, Event, FlowEvent, HelloSummary, HttpEvent, Proto, TlsEvent};
use crate::flow::{Dir, EndReason, Flow, FlowTable, Timeouts, DEFAULT_MAX_FLOWS};
use crate::output::Output;
use crate::reassembly::{Stream, StreamError};
use crate::stats::Counters;
use crate::time::Timestamp;

/// Data chunks per direction looked at for a protocol before giving up.
pub const MAX_PROBES: u8 = 8;
/// DNS-over-TCP messages logged per flow.
pub const MAX_TCP_DNS_MESSAGES: u32 = 64;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub site: Arc<SiteConfig>,
    pub rules: Arc<RuleSet>,
    pub max_flows: usize,
    pub timeouts: Timeouts,
}

impl EngineConfig {
    /// Settings for a site, with the bundled signatures.
    pub fn for_site(site: SiteConfig) -> Self {
        EngineConfig {
            site: Arc::new(site),
            ..Default::default()
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            site: Arc::new(SiteConfig::default()),
            rules: crate::load::bundled_rules(),
            max_flows: DEFAULT_MAX_FLOWS,
            timeouts: Timeouts::default(),
        }
    }
}

/// What a direction's bytes are being read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Mode {
    /// Not known yet: each new chunk is looked at (finds STARTTLS and CONNECT).
    #[default]
    Probe,
    Tls,
    Http,
    Dns,
    /// Nothing more to read.
    Off,
}

/// Per-flow analyzer state.
#[derive(Debug, Default)]
pub struct Session {
    streams: [Stream; 2],
    modes: [Mode; 2],
    probes: [u8; 2],
    tls: Option<Box<TlsSession>>,
    http: Option<Box<HttpSession>>,
    dns_msgs: u32,
    tls_logged: bool,
    bypass: bool,
    app_proto: Option<&'static str>,
    src_seg: Option<Segment>,
    dest_seg: Option<Segment>,
    segs_known: bool,
    /// An event of this flow went to the writer for a verdict: so does its end.
    decided: bool,
}

impl Session {
    fn off(&self) -> bool {
        self.modes.iter().all(|m| *m == Mode::Off)
    }
}

/// Everything analysis of one chunk may touch besides the stream itself.
struct Ctx<'a> {
    certs: &'a mut CertCache,
    counters: &'a mut Counters,
    dns_out: &'a mut Vec<DnsMessage>,
}

pub struct Engine {
    cfg: EngineConfig,
    flows: FlowTable<Session>,
    defrag: Defragmenter,
    certs: CertCache,
    pub counters: Counters,
    ended: Vec<(Flow<Session>, EndReason)>,
    dns_out: Vec<DnsMessage>,
    /// Retransmitted segments of flows that have ended.
    retransmitted: u64,
}

/// Where the current packet came from (offline runs name the file).
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    pub pcap_file: Option<&'a str>,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        Engine {
            flows: FlowTable::new(cfg.max_flows, cfg.timeouts),
            cfg,
            defrag: Defragmenter::default(),
            certs: CertCache::default(),
            counters: Counters::default(),
            ended: Vec::new(),
            dns_out: Vec::new(),
            retransmitted: 0,
        }
    }

    /// Replaces the site configuration (segments of flows already seen stay).
    pub fn set_site(&mut self, site: Arc<SiteConfig>) {
        self.cfg.site = site;
    }

    /// Replaces the signatures.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        self.cfg.rules = rules;
    }

    /// Processes one captured frame. `now` is the latest capture time the
    /// sensor has seen (for fragment timeouts).
    pub fn process(
        &mut self,
        pkt: &Packet<&[u8]>,
        now: Timestamp,
        origin: Origin<'_>,
        out: &mut Output,
    ) {
        self.counters.packets += 1;
        self.counters.bytes += pkt.data.len() as u64;
        match decode::decode(pkt.linktype, pkt.data) {
            Ok(Outcome::Packet(d)) => self.packet(pkt, &d, origin, out),
            Ok(Outcome::Fragment(f)) => {
                if let Some(datagram) = self.defrag.add(now, &f) {
                    let f = decode::Fragment {
                        proto: datagram.proto,
                        ..f
                    };
                    match decode::decode_reassembled(&f, &datagram.data) {
                        Ok(d) => self.packet(pkt, &d, origin, out),
                        Err(e) => self.counters.decode_error(e),
                    }
                }
            }
            Err(e) => self.counters.decode_error(e),
        }
        self.end_flows(origin, out);
    }

    /// Capture time has reached `now`: ends idle flows, drops stale fragments.
    /// The dispatcher sends every worker the same ticks, at whole seconds.
    pub fn tick(&mut self, now: Timestamp, origin: Origin<'_>, out: &mut Output) {
        self.flows.expire(now, &mut self.ended);
        self.defrag.expire(now);
        self.end_flows(origin, out);
    }

    /// Ends every flow (end of input), logging each.
    pub fn finish(&mut self, origin: Origin<'_>, out: &mut Output) {
        self.flows.drain(&mut self.ended);
        self.end_flows(origin, out);
        self.sync_counters();
    }

    /// Copies the sub-components' counters into `counters`.
    pub fn sync_counters(&mut self) {
        let f = self.flows.stats;
        let c = &mut self.counters;
        c.flows_created = f.created;
        c.flows_timed_out = f.timed_out;
        c.flows_evicted = f.evicted;
        c.flows_active = self.flows.len() as u64;
        let (mut held, mut retrans) = (0u64, self.retransmitted);
        for f in self.flows.iter() {
            for st in &f.data.streams {
                held += st.held() as u64;
                retrans += st.retransmitted;
            }
        }
        c.reassembly_bytes_held = held;
        c.stream_retransmissions = retrans;
        c.certs_parsed = self.certs.stats.parsed;
        c.cert_cache_hits = self.certs.stats.hits;
        c.certs_malformed = self.certs.stats.errors;
        c.fragments = self.defrag.stats.fragments;
        c.fragments_reassembled = self.defrag.stats.reassembled;
        c.fragments_dropped = self.defrag.stats.dropped;
    }

    fn packet(
        &mut self,
        pkt: &Packet<&[u8]>,
        d: &Decoded<'_>,
        origin: Origin<'_>,
        out: &mut Output,
    ) {
        let site = &*self.cfg.site;
        let (flow, dir) = self.flows.track(
            d,
            pkt.orig_len.max(pkt.data.len() as u32),
            pkt.ts,
            pkt.frame,
            &mut self.ended,
            Session::default,
        );
        if !flow.data.segs_known {
            let src_seg = site.segment_of(flow.client().0, &flow.key.vlans);
            let dest_seg = site.segment_of(flow.server().0, &flow.key.vlans);
            flow.data.segs_known = true;
            flow.data.src_seg = src_seg;
            flow.data.dest_seg = dest_seg;
        }
        let s = &mut flow.data;
        match d.transport {
            Transport::Udp if dns::is_dns_port(d.sport, d.dport) && !d.payload.is_empty() => {
                self.counters.dns_packets += 1;
                match dns::parse(d.payload) {
                    Ok(m) => {
                        flow.data.app_proto = Some("dns");
                        self.dns_out.push(m);
                    }
                    Err(_) => self.counters.dns_malformed += 1,
                }
                let mut em = Emit {
                    rules: &self.cfg.rules,
                    site,
                    origin,
                    out,
                };
                emit_dns(&mut self.dns_out, &mut em, flow, dir, pkt);
            }
            Transport::Tcp(h) => {
                if s.bypass {
                    self.counters.bypassed_packets += 1;
                    return;
                }
                let st = &mut s.streams[dir as usize];
                // Data on a SYN (TCP Fast Open, RFC 7413) starts after the SYN's own number.
                let mut seq = h.seq;
                if h.has(TcpHeader::SYN) {
                    st.syn(h.seq);
                    seq = seq.wrapping_add(1);
                }
                if d.payload.is_empty() {
                    return;
                }
                let dns_port = dns::is_dns_port(d.sport, d.dport);
                let mut ctx = Ctx {
                    certs: &mut self.certs,
                    counters: &mut self.counters,
                    dns_out: &mut self.dns_out,
                };
                let Session {
                    streams,
                    modes,
                    probes,
                    tls,
                    http,
                    dns_msgs,
                    app_proto,
                    ..
                } = s;
                let r = streams[dir as usize].push(seq, d.payload, &mut |bytes: &[u8]| {
                    analyze(
                        dir,
                        bytes,
                        &mut modes[dir as usize],
                        &mut probes[dir as usize],
                        tls,
                        http,
                        dns_msgs,
                        app_proto,
                        dns_port,
                        &mut ctx,
                    )
                });
                if let Err(e) = r {
                    match e {
                        StreamError::Gap => self.counters.stream_gaps += 1,
                        StreamError::Overflow => self.counters.stream_overflows += 1,
                    }
                    s.modes[dir as usize] = Mode::Off;
                    if let Some(t) = s.tls.as_mut() {
                        t.stop(dir);
                    }
                }
                let mut em = Emit {
                    rules: &self.cfg.rules,
                    site,
                    origin,
                    out,
                };
                emit_dns(&mut self.dns_out, &mut em, flow, dir, pkt);
                emit_http(&mut em, flow, pkt, &mut self.counters);
                let s = &flow.data;
                if s.tls.as_ref().is_some_and(|t| t.done()) && !s.tls_logged {
                    emit_tls(&mut em, flow, pkt.ts, Some(pkt.frame), &mut self.counters);
                }
                let s = &mut flow.data;
                // One side talked past its probes and the other has said
                // nothing: no handshake will follow, stop reading both.
                let other = 1 - dir as usize;
                if s.modes[dir as usize] == Mode::Off
                    && s.streams[other].delivered() == 0
                    && s.probes[dir as usize] >= MAX_PROBES
                {
                    s.modes[other] = Mode::Off;
                }
                if s.off() {
                    s.bypass = true;
                    for st in s.streams.iter_mut() {
                        st.release();
                    }
                }
            }
            _ => {}
        }
    }

    fn end_flows(&mut self, origin: Origin<'_>, out: &mut Output) {
        if self.ended.is_empty() {
            return;
        }
        let site = &*self.cfg.site;
        let mut em = Emit {
            rules: &self.cfg.rules,
            site,
            origin,
            out,
        };
        for (mut flow, reason) in self.ended.drain(..) {
            self.retransmitted += flow
                .data
                .streams
                .iter()
                .map(|s| s.retransmitted)
                .sum::<u64>();
            if let Some(h) = flow.data.http.as_mut() {
                h.flush();
            }
            let last = flow.last;
            emit_http(&mut em, &mut flow, &Packet::at(last), &mut self.counters);
            let s = &flow.data;
            if !s.tls_logged
                && s.tls
                    .as_ref()
                    .is_some_and(|t| t.client_hello.is_some() || t.server_hello.is_some())
            {
                emit_tls(&mut em, &mut flow, last, None, &mut self.counters);
            }
            let ev = FlowEvent {
                pkts_toserver: flow.pkts[0],
                pkts_toclient: flow.pkts[1],
                bytes_toserver: flow.bytes[0],
                bytes_toclient: flow.bytes[1],
                start: flow.start,
                end: flow.last,
                age: flow.last.since(flow.start).0 / 1_000_000_000,
                state: flow.state(),
                reason: reason.as_str(),
                // the writer knows, for flows that had pending events
                alerted: false,
            };
            let mut e = header(&flow, "flow", last, site, origin, Some(flow.first_frame));
            e.flow = Some(ev);
            if flow.data.decided {
                // `alerted`, and the ledger's view of how long the flow went on
                em.out.flow_end(flow.id, e);
            } else {
                em.out.line(flow.id, &e);
            }
            self.counters.events_flow += 1;
        }
    }
}

/// Reads one contiguous chunk of a direction; returns bytes consumed.
#[allow(clippy::too_many_arguments)]
fn analyze(
    dir: Dir,
    bytes: &[u8],
    mode: &mut Mode,
    probes: &mut u8,
    tls_s: &mut Option<Box<TlsSession>>,
    http_s: &mut Option<Box<HttpSession>>,
    dns_msgs: &mut u32,
    app_proto: &mut Option<&'static str>,
    dns_port: bool,
    ctx: &mut Ctx<'_>,
) -> usize {
    // A chunk that opens a TLS handshake switches any non-TLS mode to TLS:
    // that is how STARTTLS upgrades and CONNECT tunnels are followed.
    if matches!(*mode, Mode::Probe | Mode::Http) && tls::looks_like_handshake(bytes) {
        *mode = Mode::Tls;
        if app_proto.is_none_or(|p| p != "tls") {
            *app_proto = Some("tls");
        }
    }
    match *mode {
        Mode::Probe => {
            let is_http = match dir {
                Dir::ToServer => http::looks_like_request(bytes),
                Dir::ToClient => http::looks_like_response(bytes),
            };
            if is_http {
                *mode = Mode::Http;
                app_proto.get_or_insert("http");
                return analyze(
                    dir, bytes, mode, probes, tls_s, http_s, dns_msgs, app_proto, dns_port, ctx,
                );
            }
            if dns_port {
                *mode = Mode::Dns;
                app_proto.get_or_insert("dns");
                return analyze(
                    dir, bytes, mode, probes, tls_s, http_s, dns_msgs, app_proto, dns_port, ctx,
                );
            }
            // A short chunk that could be the start of a TLS record: wait for the rest.
            if bytes.len() < 5 && tls::looks_like_handshake(&pad5(bytes)) {
                return 0;
            }
            *probes += 1;
            if *probes >= MAX_PROBES {
                *mode = Mode::Off;
            }
            bytes.len()
        }
        Mode::Tls => {
            let t = tls_s.get_or_insert_with(Default::default);
            let was_malformed = t.malformed;
            let seen = t.client_hellos;
            let used = t.feed(dir, bytes, ctx.certs);
            if t.client_hellos > seen {
                ctx.counters.tls_client_hellos += 1;
            }
            if t.malformed && !was_malformed {
                ctx.counters.tls_malformed += 1;
            }
            if t.dir_done(dir) {
                *mode = Mode::Off;
            }
            used
        }
        Mode::Http => {
            let h = http_s.get_or_insert_with(Default::default);
            match dir {
                Dir::ToServer => h.feed_request(bytes),
                Dir::ToClient => h.feed_response(bytes),
            }
        }
        Mode::Dns => {
            // RFC 1035 §4.2.2: two-byte length, then the message.
            let mut used = 0;
            while let Some(len) = bytes
                .get(used..used + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            {
                let Some(msg) = bytes.get(used + 2..used + 2 + len) else {
                    break;
                };
                used += 2 + len;
                ctx.counters.dns_packets += 1;
                match dns::parse(msg) {
                    Ok(m) if *dns_msgs < MAX_TCP_DNS_MESSAGES => {
                        *dns_msgs += 1;
                        ctx.dns_out.push(m);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        ctx.counters.dns_malformed += 1;
                        *mode = Mode::Off;
                        return bytes.len();
                    }
                }
            }
            used
        }
        Mode::Off => bytes.len(),
    }
}

/// `b` (shorter than 5 bytes) completed with bytes that fit any TLS header.
fn pad5(b: &[u8]) -> [u8; 5] {
    let mut p = [22, 3, 1, 0, 0];
    p[..b.len().min(5)].copy_from_slice(&b[..b.len().min(5)]);
    p
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

fn header<'a>(
    flow: &'a Flow<Session>,
    event_type: &'static str,
    ts: Timestamp,
    site: &'a SiteConfig,
    origin: Origin<'a>,
    frame: Option<u64>,
) -> Event<'a> {
    let (c, s) = (flow.client(), flow.server());
    Event {
        timestamp: ts,
        flow_id: Some(flow.id),
        sensor: site.sensor.name.as_deref(),
        pcap_file: origin.pcap_file,
        pcap_frame: if origin.pcap_file.is_some() {
            frame.filter(|f| *f > 0)
        } else {
            None
        },
        event_type,
        src_ip: Some(c.0),
        src_port: Some(c.1),
        dest_ip: Some(s.0),
        dest_port: Some(s.1),
        proto: Some(Proto(flow.key.proto)),
        vlan: flow.key.vlans.as_slice(),
        community_id: Some(&flow.community_id),
        app_proto: flow.data.app_proto,
        src_segment: flow.data.src_seg.as_ref().map(Segment::as_ref),
        dest_segment: flow.data.dest_seg.as_ref().map(Segment::as_ref),
        ..Default::default()
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

/// What logging an event needs besides the flow.
struct Emit<'a, 'o> {
    rules: &'a RuleSet,
    site: &'a SiteConfig,
    origin: Origin<'a>,
    out: &'o mut Output,
}

/// Should this event go to the writer for a verdict? Marks the flow if so.
fn pending(rules: &RuleSet, flow: &mut Flow<Session>, facts: &Facts<'_>) -> bool {
    let p = rules.may_match(facts);
    flow.data.decided |= p;
    p
}

/// Logs a protocol event: finished, when no signature can match it; else
/// pending, for the writer to decide with the state it keeps across flows.
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

fn emit_dns(
    msgs: &mut Vec<DnsMessage>,
    em: &mut Emit<'_, '_>,
    flow: &mut Flow<Session>,
    dir: Dir,
    pkt: &Packet<&[u8]>,
) {
    for m in msgs.drain(..) {
        let mut facts = Facts::default();
        for q in &m.queries {
            facts.push(Fact::DnsQuery, &q.rrname);
        }
        for a in &m.answers {
            facts.push(Fact::DnsAnswer, &a.rrname);
            facts.push_opt(Fact::DnsAnswer, a.rdata.as_deref());
        }
        facts.set(Fact::DestPort, flow.server().1.into());
        let p = pending(em.rules, flow, &facts);
        let ends = ends(flow);
        let mut e = header(flow, "dns", pkt.ts, em.site, em.origin, Some(pkt.frame));
        // DNS events carry the packet's own direction (a response comes from the server).
        if dir == Dir::ToClient {
            std::mem::swap(&mut e.src_ip, &mut e.dest_ip);
            std::mem::swap(&mut e.src_port, &mut e.dest_port);
            std::mem::swap(&mut e.src_segment, &mut e.dest_segment);
        }
        e.dns = Some(&m);
        send(em.out, flow.id, p, &facts, &ends, e);
    }
}

fn emit_http(
    em: &mut Emit<'_, '_>,
    flow: &mut Flow<Session>,
    pkt: &Packet<&[u8]>,
    counters: &mut Counters,
) {
    let Some(mut h) = flow.data.http.take() else {
        return;
    };
    for (req, resp) in h.done.drain(..) {
        let connect = req
            .as_ref()
            .filter(|r| r.http_method.eq_ignore_ascii_case("CONNECT"));
        let mut facts = Facts::default();
        if let Some(r) = &req {
            let host = r.hostname.as_deref();
            if connect.is_none() {
                facts.push_opt(Fact::HttpHost, host);
            } else {
                facts.push_opt(Fact::HttpConnect, host);
            }
            facts.push(Fact::HttpUrl, url_path(&r.url));
            facts.push_opt(Fact::HttpUserAgent, r.http_user_agent.as_deref());
        }
        if let Some(r) = &resp {
            facts.push_opt(Fact::HttpServer, r.server.as_deref());
            facts.push_opt(Fact::HttpTitle, r.title.as_deref());
            facts.push(Fact::HttpReason, &r.reason);
            facts.push_opt(Fact::HttpCookie, r.set_cookie.as_deref());
            facts.set(Fact::HttpStatus, r.status.into());
            facts.set(Fact::HttpHeaderCount, r.header_count as i64);
        }
        facts.set(Fact::DestPort, flow.server().1.into());
        let p = pending(em.rules, flow, &facts);
        let ends = ends(flow);
        let mut e = header(flow, "http", pkt.ts, em.site, em.origin, Some(pkt.frame));
        e.http = Some(HttpEvent {
            request: req.as_ref(),
            protocol: match (&req, &resp) {
                (None, Some(r)) => Some(r.protocol.as_str()),
                _ => None,
            },
            response: resp.as_ref(),
        });
        send(em.out, flow.id, p, &facts, &ends, e);
        h.logged += 1;
        counters.http_transactions += 1;
    }
    flow.data.http = Some(h);
}

/// The path of a request target, also in absolute form (`http://host/path`,
/// what a client sends through a proxy).
fn url_path(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
        None => url,
    }
}

fn tls_version_name(v: u16) -> &'static str {
    match v {
        0x0304 => "TLS 1.3",
        0x0303 => "TLS 1.2",
        0x0302 => "TLS 1.1",
        0x0301 => "TLS 1.0",
        0x0300 => "SSLv3",
        0x0002 => "SSLv2",
        v if v >> 8 == 0x7f => "TLS 1.3",
        _ => "UNDETERMINED",
    }
}

fn emit_tls(
    em: &mut Emit<'_, '_>,
    flow: &mut Flow<Session>,
    ts: Timestamp,
    frame: Option<u64>,
    counters: &mut Counters,
) {
    flow.data.tls_logged = true;
    let Some(t) = flow.data.tls.as_deref() else {
        return;
    };
    let ch = t.client_hello.as_ref();
    let sh = t.server_hello.as_ref();
    let leaf = t.chain.first().map(|c| &**c);
    let version = match (sh, ch) {
        (Some(sh), _) => tls_version_name(sh.version()),
        (None, Some(ch)) if ch.sslv2 => "SSLv2",
        _ => "UNDETERMINED",
    };
    let ja3 = ch.filter(|c| !c.sslv2).map(ja3::ja3);
    let ja4 = ch.map(|c| ja4::ja4(c, ja4::Transport::Tcp));
    let mut facts = Facts::of_chain(&t.chain);
    facts.push_opt(Fact::Sni, ch.and_then(|c| c.sni.as_deref()));
    facts.push_opt(Fact::Ja3, ja3.as_ref().map(|j| j.hash.as_str()));
    facts.push_opt(Fact::Ja4, ja4.as_deref());
    facts.set(Fact::DestPort, flow.server().1.into());
    let p = em.rules.may_match(&facts);
    flow.data.decided |= p;
    let ev = TlsEvent {
        sni: ch.and_then(|c| c.sni.as_deref()),
        version,
        client_alpns: ch.map(|c| &c.alpns[..]).unwrap_or(&[]),
        server_alpns: sh.and_then(|s| s.alpn.as_deref()).map(|a| [a]),
        ja3: ja3.clone(),
        ja3s: sh.map(ja3::ja3s),
        ja4: ja4.clone(),
        cipher_suite: sh.map(|s| s.cipher),
        subject: leaf.map(|c| c.subject.as_str()),
        issuerdn: leaf.map(|c| c.issuerdn.as_str()),
        serial: leaf.map(|c| c.serial.as_str()),
        fingerprint: leaf.map(|c| c.fingerprint.as_str()),
        notbefore: leaf.map(|c| c.notbefore.as_str()),
        notafter: leaf.map(|c| c.notafter.as_str()),
        subjectaltname: leaf.map(|c| &c.san[..]).filter(|s| !s.is_empty()),
        chain: t.chain.iter().map(|c| &**c).collect(),
        client_handshake: ch.map(|c| ClientHandshake {
            version: c.legacy_version,
            ciphers: &c.ciphers,
            exts: &c.extensions,
            supported_versions: &c.supported_versions,
            groups: &c.groups,
            sig_algs: &c.sig_algs,
            point_formats: &c.point_formats,
            sslv2: c.sslv2,
        }),
        client_chain: t.client_chain.iter().map(|c| &**c).collect(),
        second_client_hello: t.second_client_hello.as_ref().map(|c| HelloSummary {
            sni: c.sni.as_deref(),
            ja3: ja3::ja3(c),
            ja4: ja4::ja4(c, ja4::Transport::Tcp),
        }),
    };
    let has_chain = !t.chain.is_empty();
    let ends = ends(flow);
    let mut e = header(flow, "tls", ts, em.site, em.origin, frame);
    e.tls = Some(ev);
    send(em.out, flow.id, p, &facts, &ends, e);
    counters.events_tls += 1;
    if has_chain {
        counters.tls_certificate_msgs += 1;
    }
}
