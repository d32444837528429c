//! The per-worker pipeline: decode → flow → stream → analyzers → events.
//!
//! An [`Engine`] owns its flows (no locks on the per-packet path) and is fed
//! packets in capture order, and ticks (capture time) at which idle flows
//! end. It is sans-IO: events go to an [`Output`] for the writer, and time is
//! capture time. Detection that needs no state beyond the flow is done here;
//! what needs state shared across flows is the writer's (see `writer`).

mod emit;
mod memcap;

pub use memcap::DEFAULT_STREAM_MEMCAP;

use std::sync::Arc;

use crate::analyzer::cert::CertCache;
use crate::analyzer::dns::DnsMessage;
use crate::analyzer::{Analyzers, Chunk, Ctx};
use crate::capture::Packet;
use crate::config::{Segment, SiteConfig};
use crate::decode::{self, defrag::Defragmenter, Decoded, Outcome, TcpHeader, Transport};
use crate::detect::RuleSet;
use crate::flow::{Dir, EndReason, Flow, FlowTable, Timeouts, DEFAULT_MAX_FLOWS};
use crate::pipeline::output::Output;
use crate::reassembly::{Stream, StreamError};
use crate::stats::Counters;
use crate::time::Timestamp;

pub use crate::analyzer::session::{MAX_PROBES, MAX_TCP_DNS_MESSAGES};

/// About what one `flow` event takes as a JSON line (for reserving room).
const FLOW_EVENT_BYTES: usize = 640;

/// Flows ended at the end of input between two hand-overs to the writer
/// ([`Engine::finish_in_parts`]).
pub const FINISH_PART: usize = 2048;
use emit::Emit;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub site: Arc<SiteConfig>,
    pub rules: Arc<RuleSet>,
    pub max_flows: usize,
    pub timeouts: Timeouts,
    /// Heap bytes all streams together may hold (see [`memcap`]).
    pub stream_memcap: usize,
    /// Flows ended at the end of input between two hand-overs to the
    /// writer ([`Engine::finish_in_parts`]; [`FINISH_PART`]).
    pub finish_part: usize,
}

impl EngineConfig {
    /// One of `n` workers' settings: its share of the flows and of the
    /// stream memory.
    pub fn share(&self, n: usize) -> EngineConfig {
        let n = n.max(1);
        EngineConfig {
            max_flows: (self.max_flows / n).max(1),
            stream_memcap: (self.stream_memcap / n).max(1),
            ..self.clone()
        }
    }

    /// Settings for a site (its `[flow.timeouts]`), with the bundled
    /// signatures and the default table size and memory cap.
    pub fn for_site(site: SiteConfig) -> Self {
        EngineConfig {
            timeouts: site.flow.timeouts(),
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
            stream_memcap: memcap::DEFAULT_STREAM_MEMCAP,
            finish_part: FINISH_PART,
        }
    }
}

/// Per-flow state: for TCP the two streams and the analyzers, for UDP the
/// analyzers alone (made when the flow first carries payload: a flow of bare
/// SYNs, what a flood is made of, holds none), where the flow's ends are.
#[derive(Debug, Default)]
pub struct Session {
    active: Option<Box<Active>>,
    /// A UDP flow's analyzers (DNS, QUIC): no streams, which are 288 bytes
    /// a flow would keep for its idle timeout.
    datagrams: Option<Box<Analyzers>>,
    /// Initial sequence numbers seen before there was payload.
    isn: [Option<u32>; 2],
    bypass: bool,
    /// Two copies of some of the flow's TCP bytes differed.
    overlap: bool,
    src_seg: Option<Segment>,
    dest_seg: Option<Segment>,
    segs_known: bool,
    /// An event of this flow went to the writer for a verdict: so does its end.
    decided: bool,
    /// The client's (last) SYN, and the round trip to the server's SYN-ACK.
    syn_at: Option<Timestamp>,
    rtt: Option<crate::time::Duration>,
    /// The flow's application protocol once its analyzers are gone.
    app_proto: Option<&'static str>,
}

/// What a flow with payload holds.
#[derive(Debug, Default)]
struct Active {
    streams: [Stream; 2],
    analyzers: Analyzers,
}

impl Session {
    /// The streams and analyzers, made on first use from the SYNs seen.
    fn active(&mut self) -> &mut Active {
        let isn = self.isn;
        self.active.get_or_insert_with(|| {
            let mut a = Box::<Active>::default();
            for (st, isn) in a.streams.iter_mut().zip(isn) {
                if let Some(seq) = isn {
                    st.syn(seq);
                }
            }
            a
        })
    }

    /// What the flow was found to carry (`tls`, `http`, …).
    fn app_proto(&self) -> Option<&'static str> {
        self.analyzers().map_or(self.app_proto, |a| a.app_proto)
    }

    fn analyzers(&self) -> Option<&Analyzers> {
        (self.active.as_deref().map(|a| &a.analyzers)).or(self.datagrams.as_deref())
    }

    fn analyzers_mut(&mut self) -> Option<&mut Analyzers> {
        match self.active.as_deref_mut() {
            Some(a) => Some(&mut a.analyzers),
            None => self.datagrams.as_deref_mut(),
        }
    }

    fn streams(&self) -> &[Stream] {
        self.active.as_deref().map_or(&[], |a| &a.streams[..])
    }

    /// Heap bytes the flow holds for reading what it carries: its streams,
    /// and the HTTP requests waiting for their response (what the engine's
    /// memory cap counts).
    fn stream_memory(&self) -> usize {
        let http = self.analyzers().and_then(|a| a.http.as_ref());
        self.streams().iter().map(Stream::memory).sum::<usize>() + http.map_or(0, |h| h.memory())
    }
}

pub struct Engine {
    cfg: EngineConfig,
    flows: FlowTable<Session>,
    defrag: Defragmenter,
    certs: CertCache,
    pub counters: Counters,
    ended: Vec<(Box<Flow<Session>>, EndReason)>,
    dns_out: Vec<DnsMessage>,
    /// Heap bytes all flows hold now for reading (their streams, and the
    /// HTTP requests waiting for a response: [`Session::stream_memory`]).
    stream_memory: usize,
    /// The running thread's fingerprint-memo resets when the engine started
    /// on it (the memo is per thread: see [`Engine::on_this_thread`]).
    memo_resets_at_start: u64,
    /// The rule pre-check's memo for handshakes.
    precheck: crate::detect::precheck::Precheck,
}

/// Where the current packet came from (offline runs name the file).
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    pub pcap_file: Option<&'a Arc<str>>,
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
            precheck: Default::default(),
            stream_memory: 0,
            memo_resets_at_start: crate::analyzer::tls::memo::resets(),
        }
    }

    /// Replaces the site configuration (segments of flows already seen
    /// stay) and applies its flow timeouts; the table's size and the memory
    /// cap stay as they were made.
    pub fn set_site(&mut self, site: Arc<SiteConfig>) {
        self.cfg.timeouts = site.flow.timeouts();
        self.flows.set_timeouts(self.cfg.timeouts);
        self.cfg.site = site;
    }

    /// Replaces the signatures.
    /// The engine now runs on the calling thread (a worker's, after being
    /// made on another): its per-thread counters start from here.
    pub fn on_this_thread(&mut self) {
        self.memo_resets_at_start = crate::analyzer::tls::memo::resets();
    }

    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        if !Arc::ptr_eq(&self.cfg.rules, &rules) {
            // cached certificates remember the old rule set's matches
            self.certs.clear();
        }
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
        self.process_found(pkt, None, now, origin, out);
    }

    /// [`Engine::process`], with what the reading thread found in the
    /// frame, if it looked ([`decode::Found`]: the same as decoding it).
    pub fn process_found(
        &mut self,
        pkt: &Packet<&[u8]>,
        found: Option<&decode::Found>,
        now: Timestamp,
        origin: Origin<'_>,
        out: &mut Output,
    ) {
        self.counters.packets += 1;
        self.counters.bytes += pkt.data.len() as u64;
        if let Some(d) = found.and_then(|f| f.decoded(pkt.data)) {
            self.packet(pkt, &d, origin, out);
            self.after_packet(origin, out);
            return;
        }
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
        self.after_packet(origin, out);
    }

    fn after_packet(&mut self, origin: Origin<'_>, out: &mut Output) {
        // the flows this packet ended (evicted, a SYN on a closed one) go
        // first: their memory is not the live flows' to make up for
        self.end_flows(origin, out);
        if self.stream_memory > self.cfg.stream_memcap {
            self.shed_streams(origin, out);
        }
    }

    /// Capture time has reached `now`: ends idle flows, drops stale fragments.
    /// The dispatcher sends every worker the same ticks, at whole seconds.
    pub fn tick(&mut self, now: Timestamp, origin: Origin<'_>, out: &mut Output) {
        self.flows.expire(now, &mut self.ended);
        self.defrag.expire(now);
        self.end_flows(origin, out);
    }

    /// Capture time went back to another timeline: every flow ends (as at
    /// the end of input, without the counters' final sync).
    pub fn new_timeline(&mut self, origin: Origin<'_>, out: &mut Output) {
        self.flows.drain(&mut self.ended);
        self.end_flows(origin, out);
    }

    /// Ends every flow (end of input), logging each.
    pub fn finish(&mut self, origin: Origin<'_>, out: &mut Output) {
        self.finish_in_parts(origin, out, |_, _| {});
    }

    /// [`Engine::finish`], handing the output over (`hand`) after every
    /// `finish_part` flows ([`EngineConfig`]) but the last, with the flow id
    /// up to which everything is in (None: not even the first): a busy capture leaves thousands of
    /// flows open at its end (on the handshake bench capture, one in six).
    /// The flows end in the order of their ids, the order the writer writes
    /// them in, so it writes each part as it comes (and makes the `flow`
    /// events left to it, [`Output::defer`]) while the worker ends the next;
    /// the output is the same.
    pub fn finish_in_parts(
        &mut self,
        origin: Origin<'_>,
        out: &mut Output,
        mut hand: impl FnMut(&mut Output, Option<u64>),
    ) {
        let mut rest = std::mem::take(&mut self.ended);
        self.flows.drain(&mut rest);
        while !rest.is_empty() {
            let n = rest.len().min(self.cfg.finish_part.max(1));
            self.ended.extend(rest.drain(..n));
            let last = self.ended.last().map_or(0, |(f, _)| f.id);
            // a part's events at once: room for them up front, not by
            // doubling (a doubling holds the old buffer and the new one)
            out.reserve(n, FLOW_EVENT_BYTES);
            self.end_flows(origin, out);
            if let Some((next, _)) = rest.first() {
                // (two flows of one id, 53 bits of a hash, split by the
                // part: the id is not complete yet)
                let upto = if next.id == last {
                    last.checked_sub(1)
                } else {
                    Some(last)
                };
                hand(out, upto);
            }
        }
        self.ended = rest;
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
        let streams = self.flows.iter().flat_map(|f| f.data.streams());
        c.reassembly_bytes_held = streams.map(|st| st.held() as u64).sum();
        c.stream_memory = self.stream_memory as u64;
        c.fingerprint_memo_resets =
            crate::analyzer::tls::memo::resets().saturating_sub(self.memo_resets_at_start);
        c.precheck_memo_hits = self.precheck.stats.hits;
        c.precheck_memo_resets = self.precheck.stats.resets;
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
        let mut shortened = None;
        let (flow, dir) = self.flows.track(
            d,
            pkt.orig_len.max(pkt.data.len() as u32),
            pkt.ts,
            pkt.frame,
            &mut self.ended,
            Session::default,
        );
        locate(flow, site);
        let chunk = Chunk {
            dir,
            bytes: d.payload,
            sport: d.sport,
            dport: d.dport,
        };
        let mut ctx = Ctx {
            certs: &mut self.certs,
            counters: &mut self.counters,
            dns_out: &mut self.dns_out,
        };
        match d.transport {
            Transport::Udp if !d.payload.is_empty() => shortened = datagram(flow, &chunk, &mut ctx),
            Transport::Udp => return,
            Transport::Tcp(h) => {
                if flow.data.bypass {
                    ctx.counters.bypassed_packets += 1;
                    return;
                }
                count_bad_checksum(pkt, d, ctx.counters);
                timing(&mut flow.data, h, dir, pkt.ts);
                let held = flow.data.stream_memory();
                let data = segment(&mut flow.data, h, &chunk, &mut ctx);
                recount(&mut self.stream_memory, held, &flow.data);
                if !data {
                    return;
                }
            }
            Transport::Other => return,
        }
        let mut em = Emit {
            rules: &self.cfg.rules,
            site,
            origin,
            out,
            counters: &mut self.counters,
            precheck: &mut self.precheck,
        };
        em.dns(&mut self.dns_out, flow, dir, pkt);
        let quic_ready = flow
            .data
            .analyzers()
            .is_some_and(|a| a.quic.as_ref().is_some_and(|q| q.ready()));
        if quic_ready {
            em.quic(flow, pkt.ts, Some(pkt.frame));
        }
        if matches!(d.transport, Transport::Tcp(_)) {
            em.stream_events(flow, pkt);
            let held = flow.data.stream_memory();
            settle(&mut flow.data, dir);
            recount(&mut self.stream_memory, held, &flow.data);
        }
        if let Some(key) = shortened {
            self.flows.requeue(&key);
        }
    }

    fn end_flows(&mut self, origin: Origin<'_>, out: &mut Output) {
        if self.ended.is_empty() {
            return;
        }
        let mut em = Emit {
            rules: &self.cfg.rules,
            site: &self.cfg.site,
            origin,
            out,
            counters: &mut self.counters,
            precheck: &mut self.precheck,
        };
        for (mut flow, reason) in self.ended.drain(..) {
            let held = flow.data.stream_memory();
            self.stream_memory = self.stream_memory.saturating_sub(held);
            em.flow_end(&mut flow, reason);
        }
    }
}

/// Reads a datagram of `flow`; the flow's key if that made its timeout
/// shorter (it was read as DNS), for the table to queue it again.
fn datagram(
    flow: &mut Flow<Session>,
    chunk: &Chunk<'_>,
    ctx: &mut Ctx<'_>,
) -> Option<crate::flow::FlowKey> {
    let a = flow.data.datagrams.get_or_insert_with(Default::default);
    a.datagram(chunk, ctx);
    if a.exchanges && !flow.exchanges {
        flow.exchanges = true;
        return Some(flow.key);
    }
    None
}

/// The handshake's round trip as the sensor sees it: the client's last SYN
/// to the server's SYN-ACK (JA4L measures the same).
fn timing(s: &mut Session, h: TcpHeader, dir: Dir, ts: Timestamp) {
    if !h.has(TcpHeader::SYN) || s.rtt.is_some() {
        return;
    }
    match (dir, h.has(TcpHeader::ACK)) {
        (Dir::ToServer, false) => s.syn_at = Some(ts),
        (Dir::ToClient, true) => s.rtt = s.syn_at.map(|t| ts.since(t)),
        _ => {}
    }
}

/// Counts a TCP segment whose checksum is wrong, where the capture has the
/// whole segment (not counting segments the sender's NIC was to sum).
fn count_bad_checksum(pkt: &Packet<&[u8]>, d: &Decoded<'_>, counters: &mut Counters) {
    if !d.payload.is_empty()
        && pkt.orig_len as usize == pkt.data.len()
        && !decode::tcp_checksum_ok(d.src, d.dst, d.segment)
    {
        counters.tcp_checksum_bad += 1;
    }
}

/// The site segments of the flow's ends, found once.
fn locate(flow: &mut Flow<Session>, site: &SiteConfig) {
    if !flow.data.segs_known {
        flow.data.src_seg = site.segment_of(flow.client().0, &flow.key.vlans);
        flow.data.dest_seg = site.segment_of(flow.server().0, &flow.key.vlans);
        flow.data.segs_known = true;
    }
}

/// A TCP segment into its direction's stream, and what the stream delivers
/// into the analyzers. False when there was no data to deliver.
fn segment(s: &mut Session, h: TcpHeader, c: &Chunk<'_>, ctx: &mut Ctx<'_>) -> bool {
    let d = c.dir as usize;
    // Data on a SYN (TCP Fast Open, RFC 7413) starts after the SYN's own number.
    let mut seq = h.seq;
    if h.has(TcpHeader::SYN) {
        match s.active.as_deref_mut() {
            Some(a) => a.streams[d].syn(h.seq),
            None => s.isn[d] = Some(h.seq),
        }
        seq = seq.wrapping_add(1);
    }
    if c.bytes.is_empty() {
        return false;
    }
    let Active { streams, analyzers } = s.active();
    let (retransmitted, conflicts) = (streams[d].retransmitted, streams[d].conflicts);
    let r = streams[d].push(seq, c.bytes, &mut |bytes: &[u8]| {
        analyzers.feed(&Chunk { bytes, ..*c }, ctx)
    });
    // counted as they happen: a flow's streams may go before the flow ends
    ctx.counters.stream_retransmissions += streams[d].retransmitted - retransmitted;
    ctx.counters.stream_overlap_conflicts += streams[d].conflicts - conflicts;
    if let Err(e) = r {
        match e {
            StreamError::Gap => ctx.counters.stream_gaps += 1,
            StreamError::Overflow => ctx.counters.stream_overflows += 1,
        }
        analyzers.stop(c.dir);
    }
    // Two copies of the same bytes that differ: the sensor cannot know which
    // one the receiver kept, so the client's other version is read too.
    let conflict = streams[d].conflicts > 0;
    if let Some(alt) = streams[d].take_alt() {
        let t = analyzers.tls.get_or_insert_with(Default::default);
        t.read_other_copy(c.dir, &alt, ctx.certs);
    }
    s.overlap |= conflict;
    true
}

/// After a segment: stop reading what will say nothing more, and bypass the
/// flow once both directions are done.
///
/// A bypassed flow's state goes at once, while it is still in the cache, not
/// when the flow ends ten seconds or ten minutes later: a busy link has
/// thousands of finished connections waiting out their timeout, and holding
/// their sessions made the live flows' memory miss the cache. The stream
/// buffers go; a logged handshake's TLS session (hellos, chain, fingerprints)
/// goes; and with nothing left that the flow's end reads (a TLS handshake not
/// logged yet, HTTP or QUIC state), the streams and analyzers go whole, the
/// flow keeping its application protocol.
fn settle(s: &mut Session, dir: Dir) {
    let other = 1 - dir as usize;
    let Some(a) = s.active.as_deref_mut() else {
        return;
    };
    let delivered = a.streams[other].delivered();
    a.analyzers.give_up_if_silent(dir, delivered);
    if a.analyzers.off() {
        let_go(s);
    }
}

/// Bypasses a flow whose analyzers are off and lets its state go (see
/// [`settle`]).
fn let_go(s: &mut Session) {
    s.bypass = true;
    let Some(a) = s.active.as_deref_mut() else {
        return;
    };
    for st in a.streams.iter_mut() {
        st.release();
    }
    let an = &mut a.analyzers;
    if an.tls_logged {
        an.tls = None;
    }
    if an.tls.is_none() && an.http.is_none() && an.quic.is_none() {
        s.app_proto = an.app_proto;
        s.active = None;
    }
}

/// Moves the engine's count of stream memory by what a flow's streams hold
/// now against what they held (`held`) before a change.
fn recount(total: &mut usize, held: usize, s: &Session) {
    *total = (*total + s.stream_memory()).saturating_sub(held);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::output::{EventTypes, Item};

    fn engine_over(name: &str) -> (Engine, Output) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../pcaps")
            .join(name);
        let mut r = crate::capture::FileReader::open(&path).expect("opens");
        let mut engine = Engine::new(EngineConfig::default());
        let mut out = Output::default();
        while let Some(p) = r.next() {
            let p = p.expect("reads");
            engine.process(&p.view(), p.ts, Origin::default(), &mut out);
        }
        (engine, out)
    }

    /// The lines of an output in order, the writer's making them from the
    /// items it serialises; how many it made, and of which types.
    fn lines_of(out: &Output, sensor: Option<&str>) -> (Vec<Vec<u8>>, (usize, Vec<&'static str>)) {
        let (mut lines, mut made, mut types) = (Vec::new(), 0, Vec::new());
        for it in &out.items {
            let mut l = Vec::new();
            match it {
                Item::Line { start, end, .. } => l.extend_from_slice(&out.buf[*start..*end]),
                Item::Flow { line, .. } => {
                    types.push("flow");
                    assert!(out.lines[*line].write(sensor, &mut l));
                }
                Item::Tail {
                    head,
                    start,
                    end,
                    event_type,
                    ..
                } => {
                    let t = crate::config::EVENT_TYPES[usize::from(*event_type)];
                    types.push(t);
                    let head = &out.heads[*head];
                    assert!(head.write_line(t, sensor, &out.buf[*start..*end], &mut l));
                }
                _ => continue,
            }
            made += usize::from(!matches!(it, Item::Line { .. }));
            lines.push(l);
        }
        (lines, (made, types))
    }

    /// Ending the flows open at the end of input in parts hands the output
    /// over between parts, and the lines, put together, are those of ending
    /// them at once; with and without `defer`.
    #[test]
    fn the_end_in_parts_makes_the_same_lines() {
        for defer in [false, true] {
            let run = |part: usize| {
                let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../pcaps/lab/lab-negatives.pcap");
                let mut r = crate::capture::FileReader::open(&path).expect("opens");
                let cfg = EngineConfig {
                    finish_part: part,
                    ..EngineConfig::default()
                };
                let mut engine = Engine::new(cfg);
                let types = Arc::new(EventTypes::default());
                let mut out = Output::new(types, defer);
                while let Some(p) = r.next() {
                    let p = p.expect("reads");
                    engine.process(&p.view(), p.ts, Origin::default(), &mut out);
                }
                let open = engine.flows.len();
                // what came before the end, then the parts
                let mut parts = vec![out.take(None)];
                engine.finish_in_parts(Origin::default(), &mut out, |o, upto| {
                    let upto = upto.expect("distinct flow ids");
                    // complete up to its last flow, which the next part is past
                    let flows = o.items.iter().map(|it| it.key().flow);
                    assert_eq!(flows.max(), Some(upto));
                    parts.push(o.take(None));
                });
                parts.push(out);
                for pair in parts[1..].windows(2) {
                    let last = pair[0].items.iter().map(|it| it.key().flow).max();
                    let next = pair[1].items.iter().map(|it| it.key().flow).min();
                    assert!(next > last, "flows in id order");
                }
                let lines: Vec<Vec<u8>> =
                    (parts.iter()).flat_map(|o| lines_of(o, None).0).collect();
                (open, parts.len() - 1, lines)
            };
            let (open, one, whole) = run(FINISH_PART);
            assert!(open > 5, "{open} flows open at the end");
            assert_eq!(one, 1);
            let (_, parts, lines) = run(2);
            assert_eq!(parts, open.div_ceil(2), "defer: {defer}");
            assert_eq!(lines, whole, "defer: {defer}");
        }
    }

    /// Each item's key and kind, a line (whoever makes it) as "line".
    fn kinds(out: &Output) -> Vec<(crate::pipeline::output::Key, &'static str)> {
        let kind = |it: &Item| match it {
            Item::Line { .. } | Item::Tail { .. } | Item::Flow { .. } => "line",
            Item::Observe { .. } => "observe",
            Item::Certs { .. } => "certs",
            Item::Decide { .. } => "decide",
            Item::FlowEnd { .. } => "flow end",
            Item::Hello { .. } => "hello",
            Item::ServerHello { .. } => "server hello",
            Item::Report { .. } => "report",
        };
        out.items.iter().map(|it| (it.key(), kind(it))).collect()
    }

    /// Reads capture `name` as the worker does (`defer` off) and as it does
    /// leaving heads to the writer, and compares the lines and the other
    /// items, in order; the number of lines the writer made, and their types.
    fn both_ways(
        name: &str,
        cfg: &EngineConfig,
        types: &Arc<EventTypes>,
    ) -> (usize, Vec<&'static str>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcaps");
        let file: Arc<str> = Arc::from(name);
        let origin = Origin {
            pcap_file: Some(&file),
        };
        let run = |defer: bool| {
            let mut r = crate::capture::FileReader::open(&dir.join(name)).expect("opens");
            let mut engine = Engine::new(cfg.share(1));
            let mut out = Output::new(Arc::clone(types), defer);
            while let Some(p) = r.next() {
                let p = p.expect("reads");
                engine.process(&p.view(), p.ts, origin, &mut out);
            }
            engine.new_timeline(origin, &mut out);
            engine.finish(origin, &mut out);
            let kinds = kinds(&out);
            (lines_of(&out, cfg.site.sensor_name()), kinds)
        };
        let (((own, (none, _)), own_kinds), ((left, made), left_kinds)) = (run(false), run(true));
        assert_eq!(none, 0, "{name}");
        assert_eq!(left.len(), own.len(), "{name}");
        for (a, b) in left.iter().zip(&own) {
            assert_eq!(
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b),
                "{name}"
            );
        }
        assert_eq!(left_kinds, own_kinds, "{name}");
        made
    }

    /// With `defer`, the heads of finished protocol events and ended flows'
    /// `flow` events are left to the writer, and the lines it makes are the
    /// ones the worker's own path (`header`, `Output::line`) makes, byte for
    /// byte, in their places, the other items unmoved. With the lab's site
    /// (segments, a sensor name) and a file name; once with the signatures
    /// (which hold some events back for the verdict stage), once without
    /// (the overlap captures' events, with their anomaly, made by the
    /// writer) and with chains inline, ClientHellos logged and only some
    /// event types. The flows end mid-run (a new timeline): at `finish` the
    /// worker makes the lines either way.
    #[test]
    fn the_writer_makes_the_lines_a_worker_would() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcaps");
        let text = std::fs::read_to_string(dir.join("lab/site.toml")).expect("lab site");
        let mut site = crate::config::SiteConfig::parse("site.toml", &text).expect("parses");
        site.sensor.name = Some("lab-sensor".into());
        let ruled = EngineConfig::for_site(site.clone());
        site.events.certificates = crate::config::CertificateLog::Inline;
        site.events.client_handshake = true;
        let bare = EngineConfig {
            rules: Arc::new(crate::detect::RuleSet::compile(Vec::new())),
            ..EngineConfig::for_site(site)
        };
        // `http` left out: its events are read, not logged
        let some: Vec<String> = ["dns", "flow", "quic", "tls"].map(String::from).into();
        let configs = [
            (ruled, Arc::new(EventTypes::default())),
            (bare, Arc::new(EventTypes::new(&some))),
        ];
        let (mut deferred, mut types) = (0, std::collections::BTreeSet::new());
        for (cfg, wanted) in &configs {
            for name in [
                "tls12-chain.pcap",
                "tls13-vlan-ipv6.pcap",
                "lab/lab-mitmproxy-explicit.pcap",
                "lab/lab-negatives.pcap",
                "lab/lab-http3-benign.pcap",
                "evasion-dns-odd-ports.pcap",
                "evasion-http-heads.pcap",
                "evasion-decoy-overlap.pcap",
            ] {
                let (made, made_types) = both_ways(name, cfg, wanted);
                deferred += made;
                types.extend(made_types);
            }
        }
        assert!(deferred > 4, "the writer made lines: {deferred}");
        // every kind of protocol event had its head made by the writer
        let want = ["dns", "flow", "http", "quic", "tls"];
        assert!(want.iter().all(|t| types.contains(t)), "{types:?}");
    }

    /// A UDP flow read as DNS or QUIC holds its analyzers without the two
    /// TCP streams (288 bytes it would keep for its idle timeout).
    #[test]
    fn datagram_flows_hold_no_streams() {
        for name in ["evasion-dns-odd-ports.pcap", "evasion-quic-shapes.pcap"] {
            let (engine, _) = engine_over(name);
            let udp: Vec<_> = (engine.flows.iter())
                .filter(|f| f.key.proto == 17 && f.data.analyzers().is_some())
                .collect();
            assert!(!udp.is_empty(), "{name}: a UDP flow read");
            for f in udp {
                assert!(
                    f.data.active.is_none() && f.data.datagrams.is_some(),
                    "{name}"
                );
            }
        }
    }

    /// A TLS flow whose handshake was logged and which is bypassed keeps
    /// neither streams nor analyzers while it waits for its end, only what
    /// its `flow` event says (its events are pinned by the pcaps snapshots).
    #[test]
    fn a_bypassed_flow_with_its_handshake_logged_lets_its_state_go() {
        let (engine, _) = engine_over("tls12-chain.pcap");
        let tls: Vec<_> = (engine.flows.iter())
            .filter(|f| f.data.app_proto() == Some("tls"))
            .collect();
        assert!(!tls.is_empty(), "the capture has a TLS flow");
        for f in tls {
            assert!(f.data.bypass, "bypassed once the handshake is read");
            assert!(f.data.active.is_none(), "streams and analyzers gone");
        }
    }

    /// The streams let go at the bypass still count: the totals of
    /// retransmitted segments and differing copies are what they were when
    /// the streams stayed to the flow's end (`12cbf0e`), while the flows
    /// wait and once they have ended.
    #[test]
    fn counters_of_streams_let_go_are_kept() {
        for (name, expected) in [
            ("tls12-reordered.pcap", (2, 0)),
            ("evasion-decoy-overlap.pcap", (1, 1)),
        ] {
            let (mut engine, mut out) = engine_over(name);
            let counts = |e: &Engine| {
                let c = &e.counters;
                (c.stream_retransmissions, c.stream_overlap_conflicts)
            };
            engine.sync_counters();
            assert_eq!(counts(&engine), expected, "{name}, flows waiting");
            engine.finish(Origin::default(), &mut out);
            assert_eq!(engine.counters.flows_active, 0, "{name}");
            assert_eq!(counts(&engine), expected, "{name}, flows ended");
        }
    }

    /// The engine's running count of stream memory is the streams' own sum
    /// after every packet, with the default limits and with a table and a
    /// memory cap small enough that flows are evicted and let go; and 0
    /// once every flow has ended.
    #[test]
    fn the_stream_memory_count_is_the_streams_sum() {
        let names = [
            "tls12-chain.pcap",
            "tls12-reordered.pcap",
            "tls12-tiny-mss.pcap",
            "http-connect.pcap",
            "evasion-decoy-overlap.pcap",
            "evasion-second-client-hello.pcap",
        ];
        let small = EngineConfig {
            max_flows: 2,
            stream_memcap: 2048,
            ..EngineConfig::default()
        };
        let mut pressed = 0;
        for cfg in [EngineConfig::default(), small] {
            let mut engine = Engine::new(cfg);
            let mut out = Output::default();
            for name in names {
                let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../pcaps")
                    .join(name);
                let mut r = crate::capture::FileReader::open(&path).expect("opens");
                while let Some(p) = r.next() {
                    let p = p.expect("reads");
                    engine.process(&p.view(), p.ts, Origin::default(), &mut out);
                    let sum: usize = engine.flows.iter().map(|f| f.data.stream_memory()).sum();
                    assert_eq!(engine.stream_memory, sum, "{name}");
                }
            }
            pressed += engine.counters.stream_memcap_shed + engine.flows.stats.evicted;
            engine.finish(Origin::default(), &mut out);
            assert_eq!(engine.stream_memory, 0);
        }
        assert!(pressed > 0, "the small limits were reached");
    }

    /// A frame of a TCP connection from 10.9.x.y:40000 to 192.0.2.1:443.
    fn tcp_frame(client: u16, to_server: bool, seq: u32, flags: &str, data: &[u8]) -> Vec<u8> {
        let c = [10, 9, (client >> 8) as u8, client as u8];
        let (src, dst, sp, dp) = if to_server {
            (c, [192, 0, 2, 1], 40000, 443)
        } else {
            ([192, 0, 2, 1], c, 443, 40000)
        };
        let mut b = etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, seq, 65535);
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('A') {
            b = b.ack(1);
        }
        let mut v = Vec::new();
        b.write(&mut v, data).expect("frame");
        v
    }

    /// Connection `client`'s SYN and SYN-ACK at `ms`.
    fn open(engine: &mut Engine, out: &mut Output, client: u16, ms: i64) {
        feed(engine, out, &tcp_frame(client, true, 0, "S", &[]), ms);
        feed(engine, out, &tcp_frame(client, false, 0, "SA", &[]), ms);
    }

    fn feed(engine: &mut Engine, out: &mut Output, frame: &[u8], ms: i64) {
        let ts = Timestamp(1_700_000_000_000_000_000 + ms * 1_000_000);
        let p = Packet {
            ts,
            linktype: crate::capture::LinkType::ETHERNET,
            orig_len: frame.len() as u32,
            data: frame,
            frame: 0,
        };
        engine.process(&p, ts, Origin::default(), out);
    }

    /// Connections that each leave a gap and pile up out-of-order data are
    /// held to the cap, the biggest let go first; a handshake read beside
    /// them (a few hundred bytes waiting for its second segment) is read.
    #[test]
    fn gapped_streams_are_held_to_the_memory_cap() {
        let cap = 1 << 20;
        let mut engine = Engine::new(EngineConfig {
            stream_memcap: cap,
            ..EngineConfig::default()
        });
        let mut out = Output::default();
        let hello: &[u8] =
            include_bytes!("../../analyzer/tls/fixtures/rustls-tls12-client-hello.bin");
        let (first, second) = hello.split_at(100);
        let chunk = [0x17u8; 1400];
        let mut ms = 0;
        // the handshake's first part waits for the rest
        for (to_server, seq, flags, data) in [
            (true, 0, "S", &[][..]),
            (false, 0, "SA", &[]),
            (true, 1, "A", first),
        ] {
            feed(
                &mut engine,
                &mut out,
                &tcp_frame(1, to_server, seq, flags, data),
                ms,
            );
        }
        for client in 2..200u16 {
            ms += 1;
            open(&mut engine, &mut out, client, ms);
            // a gap of 1,000 bytes, then 60 segments held out of order
            for i in 0..60u32 {
                let seq = 1 + 1000 + i * chunk.len() as u32;
                feed(
                    &mut engine,
                    &mut out,
                    &tcp_frame(client, true, seq, "A", &chunk),
                    ms,
                );
                let slack = 64 * 1024;
                assert!(
                    engine.stream_memory <= cap + slack,
                    "{}",
                    engine.stream_memory
                );
            }
        }
        assert!(
            engine.counters.stream_memcap_shed > 100,
            "{:?}",
            engine.counters
        );
        feed(
            &mut engine,
            &mut out,
            &tcp_frame(1, true, 101, "A", second),
            ms + 1,
        );
        assert_eq!(
            engine.counters.tls_client_hellos, 1,
            "the small one was kept"
        );
        let sum: usize = engine.flows.iter().map(|f| f.data.stream_memory()).sum();
        assert_eq!(engine.stream_memory, sum);
        engine.sync_counters();
        assert_eq!(engine.counters.stream_memory, sum as u64);
    }

    /// HTTP requests waiting for their response count against the cap:
    /// clients that pipeline requests no response comes back to (or a
    /// capture of one direction) are held to it, and the requests of the
    /// flows let go are logged then, not lost.
    #[test]
    fn pending_http_requests_are_held_to_the_memory_cap() {
        let cap = 2 << 20;
        let mut engine = Engine::new(EngineConfig {
            stream_memcap: cap,
            ..EngineConfig::default()
        });
        let mut out = Output::default();
        // each request about 3 KiB once parsed (its fields are kept up to 1 KiB)
        let long = "a".repeat(1000);
        let (flows, requests) = (60u16, 60u32);
        // what the flows hold, counted here from the streams and the requests
        let held = |engine: &Engine| -> usize {
            (engine.flows.iter())
                .filter_map(|f| f.data.active.as_deref())
                .map(|a| {
                    let http = a.analyzers.http.as_ref().map_or(0, |h| h.memory());
                    a.streams.iter().map(Stream::memory).sum::<usize>() + http
                })
                .sum()
        };
        let mut logged_early = 0;
        for client in 1..=flows {
            let ms = i64::from(client);
            open(&mut engine, &mut out, client, ms);
            let mut seq = 1;
            for i in 0..requests {
                let req = format!(
                    "GET /{long}{i} HTTP/1.1\r\nHost: {long}.test\r\nUser-Agent: {long}\r\n\r\n"
                );
                let frame = tcp_frame(client, true, seq, "A", req.as_bytes());
                feed(&mut engine, &mut out, &frame, ms);
                seq += req.len() as u32;
                let now = held(&engine);
                assert_eq!(engine.stream_memory, now);
                assert!(now <= cap + 256 * 1024, "{now}");
            }
            logged_early = engine.counters.http_transactions;
        }
        let shed = engine.counters.stream_memcap_shed;
        assert!(
            shed > 30 && shed < u64::from(flows),
            "{:?}",
            engine.counters
        );
        let gone = (engine.flows.iter())
            .filter(|f| f.data.bypass && f.data.active.is_none())
            .count();
        assert_eq!(gone as u64, shed, "a flow let go keeps no HTTP state");
        assert_eq!(
            logged_early,
            shed * u64::from(requests),
            "the requests of the flows let go were logged when they went"
        );
        engine.finish(Origin::default(), &mut out);
        assert_eq!(
            engine.counters.http_transactions,
            u64::from(flows) * u64::from(requests),
            "every request read, once"
        );
        assert_eq!(engine.stream_memory, 0);
    }

    /// A reloaded site configuration's flow timeouts apply to the flows
    /// already open.
    #[test]
    fn a_reload_applies_the_new_timeouts() {
        let mut engine = Engine::new(EngineConfig::default());
        let mut out = Output::default();
        for (to_server, flags) in [(true, "S"), (false, "SA"), (true, "A")] {
            feed(
                &mut engine,
                &mut out,
                &tcp_frame(1, to_server, 0, flags, &[]),
                0,
            );
        }
        let site: SiteConfig =
            SiteConfig::parse("t", "[flow.timeouts]\ntcp_established = \"5s\"\n").expect("parses");
        engine.set_site(Arc::new(site));
        let at = |s: i64| Timestamp(1_700_000_000_000_000_000 + s * 1_000_000_000);
        engine.tick(at(4), Origin::default(), &mut out);
        assert_eq!(engine.flows.len(), 1);
        engine.tick(at(5), Origin::default(), &mut out);
        assert_eq!(
            engine.flows.len(),
            0,
            "ended 5 s after its last packet, not 600 s"
        );
    }

    /// A flow pushed out of a full table by the packet that takes the
    /// memory over the cap is not counted against the live flows: they are
    /// not let go to make up for memory that goes anyway.
    #[test]
    fn an_evicted_flow_is_not_made_up_for_by_the_live_ones() {
        let chunk = [0x17u8; 1400];
        let gapped = |engine: &mut Engine, out: &mut Output, client: u16| {
            open(engine, out, client, 0);
            for i in 0..60u32 {
                let seq = 1001 + i * chunk.len() as u32;
                feed(engine, out, &tcp_frame(client, true, seq, "A", &chunk), 0);
            }
        };
        // what two such flows hold
        let mut probe = Engine::new(EngineConfig::default());
        let mut out = Output::default();
        gapped(&mut probe, &mut out, 1);
        gapped(&mut probe, &mut out, 2);
        let two = probe.stream_memory;
        // a table of two, and a cap just above them: a third flow's first
        // segment (no SYN: picked up mid-stream) pushes the oldest out
        let mut engine = Engine::new(EngineConfig {
            max_flows: 2,
            stream_memcap: two + 500,
            ..EngineConfig::default()
        });
        gapped(&mut engine, &mut out, 1);
        gapped(&mut engine, &mut out, 2);
        assert_eq!(engine.stream_memory, two);
        feed(
            &mut engine,
            &mut out,
            &tcp_frame(3, true, 5000, "A", &chunk),
            1,
        );
        assert_eq!(engine.flows.stats.evicted, 1);
        assert_eq!(
            engine.counters.stream_memcap_shed, 0,
            "{}",
            engine.stream_memory
        );
        assert!(engine.stream_memory < two);
    }
}
