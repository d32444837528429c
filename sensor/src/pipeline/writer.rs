//! The writer: merges the workers' outputs into one ordered stream, applies
//! the state that spans flows, and writes JSON lines.
//!
//! Order. Every output item carries a [`Key`](super::output::Key): the sequence number the
//! dispatcher gave the packet (or tick, or end of input) that caused it, then
//! the flow id. Each worker's items arrive in sequence order, with a
//! watermark saying "everything up to this sequence number is in". The writer
//! releases items up to the lowest watermark, all items of one sequence
//! number at a time, sorted by flow id (stable, so one flow's events keep
//! their order). The result depends only on the input, not on how many
//! workers there are or how their threads were scheduled.
//!
//! Cross-flow state. The host activity ledger, re-alert suppression and the
//! shared-key tracker are updated here, in that order, so `first_seen`, which
//! alert of a repeated pair speaks, and the shared-key count are the same for
//! every run of the same input. Workers send the events that can touch that
//! state as [`Pending`] items (those that some signature may match, found
//! by evaluating the rules without the cross-flow conditions); all others
//! arrive as finished lines.

mod certs;
mod legs;
mod outbox;
mod release;
mod stats;
mod store;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{SiteConfig, EVENT_TYPES};
use crate::detect::RuleSet;
use crate::event::{AlertBody, Event, Sanctioned};
use crate::findings::{Alerts, Finding};
use crate::pipeline::output::{
    EventTypes, FlowHead, Heads, Item, Key, Output, Pending, PendingFlow, Report, Spare,
};
use crate::sink::{Batch, Line, Run, Sink};
use crate::stats::{Counters, InterfaceStats};
use crate::time::Timestamp;
use crate::verdict::legs::{LegEvent, LegTracker};
use crate::verdict::{Decision, FlowState, Verdicts};
use outbox::{chunk_bytes, Chunk, Outbox, Src, WRITE_AT};
use release::Ready;

/// What the dispatcher asks of the writer at a point of the stream.
pub enum Control {
    /// Log every ledger entry as `host_activity`.
    Ledger { reason: &'static str, at: Timestamp },
    /// Write a `stats` event (after every worker has reported at this point).
    Stats(Box<StatsRequest>),
    /// New site configuration and signatures.
    Reload {
        site: Arc<SiteConfig>,
        rules: Arc<RuleSet>,
    },
    /// Open the outputs anew (log rotation).
    Reopen,
    /// Keep the ledger in a database from now on (sent before any packet).
    Store(Box<crate::ledger::Link>),
}

/// The parts of a `stats` event only the dispatcher knows.
#[derive(Debug, Clone, Default)]
pub struct StatsRequest {
    pub at: Timestamp,
    pub uptime: u64,
    pub interfaces: Vec<InterfaceStats>,
    pub queue_depth: usize,
    /// Packets dropped because a worker's queue was full (live only), per worker.
    pub worker_dropped: Vec<u64>,
}

/// What the writer remembers of a flow that had pending events.
#[derive(Debug, Default)]
struct FlowPolicy {
    /// (signature, evidence) this flow has alerted on.
    alerted: Vec<(u32, u64)>,
    /// (host, tool) pairs this flow counts for in the ledger.
    ledger_keys: Vec<(IpAddr, String)>,
}

pub struct Writer<W: Sink> {
    out: W,
    outbox: Outbox,
    pub written: u64,
    pub errors: u64,
    last_error: Option<String>,
    types: Arc<EventTypes>,
    verdicts: Verdicts,
    /// What the alerts said, by host and tool (for the findings).
    alerted: Alerts,
    site: Arc<SiteConfig>,
    flows: HashMap<u64, FlowPolicy, ahash::RandomState>,
    /// A proxy's two TLS legs (cross-flow, like the verdict stage's state).
    legs: LegTracker<FlowHead>,
    /// Alerts and sanctioned sightings (the workers count the rest).
    counters: Counters,
    queues: Vec<VecDeque<Chunk>>,
    /// Per worker, the key up to which its output is complete.
    done: Vec<Key>,
    controls: VecDeque<(u64, Control)>,
    reports: Vec<Option<Report>>,
    group: Vec<Option<Ready>>,
    /// `group`'s release order: (flow id, worker, index in `group`).
    order: Vec<(u64, usize, usize)>,
    serial: u64,
    /// Written-out chunks, whose buffers go back to their workers.
    spent: Vec<(usize, Chunk)>,
    recycle: Vec<Option<crossbeam_channel::Sender<Spare>>>,
    /// The persistent ledger's store, when there is one.
    store: Option<crate::ledger::Link>,
    certs: certs::CertLog,
    /// The latest capture time a control carried (for the ledger's store).
    observed_until: Timestamp,
}

impl<W: Sink> Writer<W> {
    pub fn new(
        out: W,
        workers: usize,
        site: Arc<SiteConfig>,
        rules: Arc<RuleSet>,
        types: Arc<EventTypes>,
    ) -> Self {
        Writer {
            outbox: Outbox {
                typed: out.chooses_lines(),
                ..Outbox::default()
            },
            out,
            written: 0,
            errors: 0,
            last_error: None,
            types,
            verdicts: Verdicts::new(&site, rules),
            alerted: Alerts::default(),
            site,
            flows: HashMap::default(),
            legs: LegTracker::default(),
            counters: Counters::default(),
            queues: (0..workers).map(|_| VecDeque::new()).collect(),
            done: vec![Key::whole(0); workers],
            controls: VecDeque::new(),
            reports: (0..workers).map(|_| None).collect(),
            group: Vec::new(),
            order: Vec::new(),
            serial: 0,
            spent: Vec::new(),
            recycle: (0..workers).map(|_| None).collect(),
            store: None,
            certs: certs::CertLog::default(),
            observed_until: Timestamp::default(),
        }
    }

    /// Sends a worker's written-out buffers back to it for reuse.
    pub fn recycle_to(&mut self, worker: usize, tx: crossbeam_channel::Sender<Spare>) {
        self.recycle[worker] = Some(tx);
    }

    fn give_back(&mut self) {
        for (w, c) in self.spent.drain(..) {
            let Some(tx) = &self.recycle[w] else { continue };
            let mut spare = Spare {
                buf: c.buf,
                items: Vec::from(c.items),
                heads: c.heads,
                lines: c.lines,
            };
            spare.clear();
            let _ = tx.try_send(spare);
        }
    }

    /// A worker's output, complete up to sequence number `done`.
    pub fn push(&mut self, worker: usize, done: u64, out: Output) {
        self.push_upto(worker, Key::whole(done), out);
    }

    /// A worker's output, complete up to key `done` (part of a sequence
    /// number: the end of input's flows, which come in parts, each
    /// complete up to its last flow).
    pub fn push_upto(&mut self, worker: usize, done: Key, mut out: Output) {
        if !out.items.is_empty() {
            self.render_flows(&mut out);
            self.serial += 1;
            self.queues[worker].push_back(Chunk {
                serial: self.serial,
                buf: out.buf,
                items: VecDeque::from(out.items),
                heads: out.heads,
                lines: out.lines,
            });
        }
        self.done[worker] = self.done[worker].max(done);
    }

    /// Serialises the `flow` events a worker left to the writer
    /// ([`Item::Flow`]) as soon as they come, into the chunk's own buffer,
    /// each becoming a finished line in its place: they need nothing but
    /// the sensor's name, so the writer does this while the worker works on,
    /// not only once every worker is past them (at the end of input, when
    /// the worker ends every flow still open and hands them over in parts,
    /// this is what lets the two run side by side). Not while a reload is
    /// waiting to be applied: the name may change with it, so those lines
    /// are made in order, as before (a chunk that comes after that reload's
    /// control holds only items after it: the dispatcher sends the control
    /// before the work that follows it).
    fn render_flows(&mut self, out: &mut Output) {
        if (self.controls.iter()).any(|(_, c)| matches!(c, Control::Reload { .. })) {
            return;
        }
        let sensor = self.site.sensor_name();
        let flow = crate::config::event_type_index("flow");
        for it in out.items.iter_mut() {
            let Item::Flow { key, line } = it else {
                continue;
            };
            let Some(line) = out.lines.get(*line) else {
                continue;
            };
            let start = out.buf.len();
            if !line.write(sensor, &mut out.buf) {
                // left as it is: made (and its failure counted) in order
                out.buf.truncate(start);
                continue;
            }
            *it = Item::Line {
                key: *key,
                start,
                end: out.buf.len(),
                event_type: flow,
            };
        }
    }

    /// A worker has nothing more up to sequence number `done`.
    pub fn advance(&mut self, worker: usize, done: u64) {
        self.done[worker] = self.done[worker].max(Key::whole(done));
    }

    /// Something to do once every item up to `seq` has been written.
    pub fn control(&mut self, seq: u64, c: Control) {
        self.controls.push_back((seq, c));
    }

    /// Writes everything every worker has completed.
    pub fn release(&mut self) {
        let horizon = (self.done.iter().copied().min()).unwrap_or(Key::whole(u64::MAX));
        // every sequence number up to this one is complete
        let whole = match horizon.flow {
            u64::MAX => horizon.seq,
            _ => horizon.seq.saturating_sub(1),
        };
        loop {
            let next = self
                .queues
                .iter()
                .filter_map(|q| q.front().and_then(|c| c.items.front()).map(Item::key))
                .filter(|k| *k <= horizon)
                .map(|k| k.seq)
                .min();
            self.apply_controls(next.map(|s| s.saturating_sub(1)).unwrap_or(whole));
            let Some(seq) = next else { break };
            // all of `seq`, or (the end of input's flows, in parts) its
            // flows up to the horizon's: each worker's come in flow order
            self.gather(seq, horizon);
            // One flow's items (all from one worker) keep their order: the
            // index breaks ties. Keys are sorted, not the items (a flow
            // event's fields are a few hundred bytes); one worker's group is
            // often in order already.
            if !self.order.is_sorted() {
                self.order.sort_unstable();
            }
            let mut group = std::mem::take(&mut self.group);
            let mut order = std::mem::take(&mut self.order);
            for (flow, _, i) in order.drain(..) {
                let Some(r) = group.get_mut(i).and_then(Option::take) else {
                    debug_assert!(false, "item {i} of the group released twice");
                    continue;
                };
                self.ready(flow, r);
                if self.outbox.bytes >= WRITE_AT {
                    self.write_out();
                }
            }
            group.clear();
            self.group = group;
            self.order = order;
        }
        // before the chunks go back to their workers
        self.write_out();
        self.give_back();
        self.sync_store();
    }

    /// Writes everything queued in the outbox, in order, to the sink. A
    /// line is either written whole or counted lost.
    fn write_out(&mut self) {
        if self.outbox.segs.is_empty() {
            return;
        }
        let Writer {
            out,
            outbox,
            queues,
            spent,
            written,
            errors,
            last_error,
            ..
        } = self;
        let bytes = |src: Src, start: usize, end: usize| -> &[u8] {
            match src {
                Src::Own => outbox.own.get(start..end).unwrap_or_default(),
                Src::Chunk { w, serial } => chunk_bytes(queues, spent, (w, serial), (start, end)),
            }
        };
        let runs: Vec<Run<'_>> = outbox
            .segs
            .iter()
            .map(|s| Run {
                bytes: bytes(s.src, s.start, s.end),
                lines: s.lines,
            })
            .collect();
        let lines: Vec<Line<'_>> = outbox
            .lines
            .iter()
            .map(|l| Line {
                event_type: l.event_type,
                severity: l.severity,
                json: bytes(l.src, l.start, l.end),
            })
            .collect();
        let sent = out.send(&Batch {
            lines: &lines,
            runs: &runs,
        });
        *written += sent.written;
        *errors += sent.lost;
        if sent.error.is_some() {
            *last_error = sent.error;
        }
        outbox.clear();
    }

    fn apply_controls(&mut self, upto: u64) {
        while self.controls.front().is_some_and(|(s, _)| *s <= upto) {
            let Some((_, c)) = self.controls.pop_front() else {
                break;
            };
            // lines before the control are written first (a reopen must not
            // send them to the new file)
            self.write_out();
            match c {
                Control::Ledger { reason, at } => {
                    self.observed(at);
                    let site = Arc::clone(&self.site);
                    for a in self.verdicts.ledger.snapshot() {
                        self.emit(&Event::host_activity(&a, reason, at, site.sensor_name()));
                    }
                }
                Control::Stats(req) => {
                    self.observed(req.at);
                    let st = self.stats(&req);
                    let site = Arc::clone(&self.site);
                    self.emit(&Event::stats(&st, req.at, site.sensor_name()));
                    if let Err(e) = self.flush() {
                        self.last_error = Some(e.to_string());
                    }
                    if let Some(e) = self.take_error() {
                        // the library does not print: the operator's log
                        // (standard error by default) says it at warn level
                        tracing::warn!("writing events: {e} ({} lost so far)", self.errors);
                    }
                }
                Control::Reload { site, rules } => {
                    self.verdicts.reload(&site, rules);
                    let store = self.store.as_ref();
                    if store.is_some_and(|l| l.tx.try_send(crate::ledger::settings(&site)).is_err())
                    {
                        tracing::warn!("the ledger store is busy: it keeps its [ledger] settings");
                    }
                    self.site = site;
                }
                Control::Store(link) => self.attach_store(*link),
                Control::Reopen => {
                    let _ = self.flush();
                    if let Err(e) = self.out.reopen() {
                        tracing::warn!("reopening the output: {e}; writing to the old one");
                    }
                }
            }
        }
    }

    fn handle(&mut self, flow: u64, it: Item) {
        match it {
            // cut out in `gather`
            Item::Line { .. } | Item::Tail { .. } | Item::Flow { .. } => {}
            Item::Observe { leaf, .. } => self.verdicts.spki.observe(&[leaf]),
            Item::Certs { at, certs, .. } => self.certificates(flow, at, &certs),
            Item::Decide { p, .. } => self.decide(flow, &p),
            Item::FlowEnd { p, .. } => self.flow_end(flow, *p),
            Item::Hello { p, .. } => self.legs(LegEvent::Client(p), 0),
            Item::ServerHello { at, frame, .. } => self.legs(LegEvent::Server { flow, at }, frame),
            Item::Report { r, .. } => {
                let w = r.worker;
                if let Some(slot) = self.reports.get_mut(w) {
                    *slot = Some(*r);
                }
            }
        }
    }

    fn decide(&mut self, flow: u64, p: &Pending) {
        let facts = p.facts.facts();
        let ends = p.ends.ends();
        let st = self.flows.entry(flow).or_default();
        let state = FlowState {
            alerted: &st.alerted,
            ledger_keys: &st.ledger_keys,
        };
        let d = self.verdicts.decide(&facts, &ends, state, p.at);
        st.alerted.extend(&d.alerted);
        st.ledger_keys.extend(d.ledger_keys.iter().cloned());
        if st.alerted.is_empty() && st.ledger_keys.is_empty() {
            self.flows.remove(&flow);
        }
        let site = Arc::clone(&self.site);
        let sensor = site.sensor_name();
        if let Some((by, ids, tools)) = &d.sanctioned {
            self.counters.sanctioned += 1;
            if self.types.wants(p.event_type) {
                let s = Sanctioned {
                    allowed_by: by,
                    signature_ids: ids.clone(),
                    tools: tools.iter().map(String::as_str).collect(),
                };
                let t = (p.event_type, None);
                let head = p.heads.of(p.event_type, sensor);
                self.compose(t, &head, Some(("sanctioned", &s)), &p.body);
            }
        } else if self.types.wants(p.event_type) {
            let head = p.heads.of(p.event_type, sensor);
            self.compose::<()>((p.event_type, None), &head, None, &p.body);
        }
        let body = p.alert_body.as_deref().unwrap_or(&p.body);
        let alert_head = self.alert_head(&d, &p.heads, sensor);
        self.alerts(&d, &alert_head, body, p.at);
    }

    /// The alert head of a pending event, made only if it raises alerts
    /// that are written.
    fn alert_head<'h>(
        &self,
        d: &Decision,
        heads: &'h Heads,
        sensor: Option<&str>,
    ) -> std::borrow::Cow<'h, [u8]> {
        if d.alerts.is_empty() || !self.types.wants("alert") {
            return (&[][..]).into();
        }
        heads.of("alert", sensor)
    }

    fn flow_end(&mut self, flow: u64, mut p: PendingFlow) {
        let st = self.flows.remove(&flow).unwrap_or_default();
        p.flow.alerted = !st.alerted.is_empty();
        let site = Arc::clone(&self.site);
        let sensor = site.sensor_name();
        if self.types.wants("flow") {
            let head = p.heads.of("flow", sensor);
            self.compose(("flow", None), &head, Some(("flow", &p.flow)), b"");
        }
        // The ledger hears how long and how much the flows it counts went on.
        let last = p.flow.end;
        let total = p.flow.bytes_toserver + p.flow.bytes_toclient;
        let late = self.verdicts.flow_end(&st.ledger_keys, last, total);
        let alert_head = self.alert_head(&late, &p.heads, sensor);
        self.alerts(&late, &alert_head, b"", last);
    }

    /// A decision's alerts (each with the event's protocol object), then the
    /// ledger's news.
    fn alerts(&mut self, d: &Decision, alert_head: &[u8], body: &[u8], at: Timestamp) {
        for a in &d.alerts {
            self.counters.alert(a.severity);
            self.alerted.add(a);
            if self.types.wants("alert") {
                let t = ("alert", Some(a.severity));
                self.compose(t, alert_head, Some(("alert", &AlertBody::of(a))), body);
            }
        }
        let site = Arc::clone(&self.site);
        for (a, reason) in &d.activity {
            self.emit(&Event::host_activity(a, reason, at, site.sensor_name()));
        }
    }

    /// Writes `head`, then `"name":value`, then `body`, then the closing brace.
    fn compose<T: serde::Serialize>(
        &mut self,
        (event_type, severity): (&'static str, Option<u8>),
        head: &[u8],
        field: Option<(&str, &T)>,
        body: &[u8],
    ) {
        let made = self.outbox.own_line(event_type, severity, |line| {
            line.extend_from_slice(head);
            if let Some((name, v)) = field {
                line.extend_from_slice(b",\"");
                line.extend_from_slice(name.as_bytes());
                line.extend_from_slice(b"\":");
                if serde_json::to_writer(&mut *line, v).is_err() {
                    return false;
                }
            }
            line.extend_from_slice(body);
            line.extend_from_slice(b"}\n");
            true
        });
        self.made(made);
    }

    /// Writes an event the writer made itself.
    pub fn emit(&mut self, e: &Event<'_>) {
        if !self.types.wants(e.event_type) {
            return;
        }
        let made = self.outbox.own_line(e.event_type, None, |line| {
            let ok = e.write_json(line).is_ok();
            line.push(b'\n');
            ok
        });
        self.made(made);
    }

    /// A line the writer made is queued (or, not serialisable, lost).
    fn made(&mut self, ok: bool) {
        if !ok {
            self.errors += 1;
        }
        if self.outbox.bytes >= WRITE_AT {
            self.write_out();
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.write_out();
        Sink::flush(&mut self.out)
    }

    /// The end: network outputs get up to `deadline` to send what they
    /// queued; what they could not is counted lost.
    pub fn drain(&mut self, deadline: std::time::Duration) {
        self.write_out();
        let lost = Sink::drain(&mut self.out, deadline);
        if lost > 0 {
            self.errors += lost;
            self.last_error = Some(format!("{lost} events not delivered by a network output"));
        }
    }

    pub fn take_error(&mut self) -> Option<String> {
        self.last_error.take()
    }

    /// One row per tool and host the run found: the ledger's entries with
    /// what their alerts said.
    pub fn findings(&self) -> Vec<Finding> {
        Finding::collect(self.verdicts.ledger.snapshot(), &self.alerted)
    }

    pub fn suppressed(&self) -> u64 {
        self.verdicts.held.repeat
    }

    /// The output, back (end of run).
    pub fn into_inner(mut self) -> W {
        self.write_out();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::output::FlowLine;

    /// An output holding one line per (seq, flow, text).
    fn out(lines: &[(u64, u64, &str)]) -> Output {
        let mut o = Output::default();
        for (seq, flow, text) in lines {
            let start = o.buf.len();
            o.buf.extend_from_slice(text.as_bytes());
            o.buf.push(b'\n');
            o.items.push(Item::Line {
                key: Key {
                    seq: *seq,
                    flow: *flow,
                },
                start,
                end: o.buf.len(),
                event_type: 1,
            });
        }
        o
    }

    fn writer(workers: usize) -> Writer<Vec<u8>> {
        let cfg = crate::pipeline::engine::EngineConfig::default();
        Writer::new(Vec::new(), workers, cfg.site, cfg.rules, Default::default())
    }

    fn text(w: &Writer<Vec<u8>>) -> String {
        String::from_utf8(w.out.clone()).expect("utf-8")
    }

    /// An output that takes at most `step` bytes a call, and fails (disk
    /// full) once it holds `room` bytes.
    struct Narrow {
        got: Vec<u8>,
        step: usize,
        room: usize,
    }

    impl std::io::Write for Narrow {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let n = b.len().min(self.step).min(self.room - self.got.len());
            if n == 0 && !b.is_empty() {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn narrow(step: usize, room: usize) -> Writer<Narrow> {
        let cfg = crate::pipeline::engine::EngineConfig::default();
        let out = Narrow {
            got: Vec::new(),
            step,
            room,
        };
        Writer::new(out, 2, cfg.site, cfg.rules, Default::default())
    }

    /// Lines from two workers, interleaved: many short runs in two buffers.
    fn interleaved(w: &mut Writer<impl Sink>) {
        let a: Vec<(u64, u64, String)> = (0..300).map(|i| (2 * i, 1, format!("a{i}"))).collect();
        let b: Vec<(u64, u64, String)> =
            (0..300).map(|i| (2 * i + 1, 2, format!("b{i}"))).collect();
        let lines = |v: &[(u64, u64, String)]| -> Output {
            out(&v
                .iter()
                .map(|(s, f, t)| (*s, *f, t.as_str()))
                .collect::<Vec<_>>())
        };
        w.push(0, 600, lines(&a));
        w.push(1, 600, lines(&b));
        w.release();
    }

    #[test]
    fn short_writes_lose_nothing() {
        let mut w = narrow(7, usize::MAX);
        interleaved(&mut w);
        let want: String = (0..300).map(|i| format!("a{i}\nb{i}\n")).collect();
        assert_eq!(String::from_utf8_lossy(&w.out.got), want);
        assert_eq!((w.written, w.errors), (600, 0));
    }

    #[test]
    fn a_failed_write_counts_what_is_lost() {
        // room for "a0\nb0\na1\n" and half of "b1\n"
        let mut w = narrow(1 << 20, 10);
        interleaved(&mut w);
        assert_eq!(w.written, 3, "the lines written whole");
        assert_eq!(w.errors, 597, "the part-written line and all after it");
        assert!(w.take_error().is_some_and(|e| e.contains("storage")));
        // later lines are tried again, and counted
        w.advance(0, 700);
        w.advance(1, 700);
        w.push(0, 700, out(&[(650, 1, "late")]));
        w.release();
        assert_eq!((w.written, w.errors), (3, 598));
    }

    #[test]
    fn holds_until_every_worker_is_past_and_orders_by_sequence_then_flow() {
        let mut w = writer(2);
        w.push(0, 5, out(&[(2, 9, "a"), (5, 1, "b")]));
        w.release();
        assert_eq!(text(&w), "", "worker 1 has not reported yet");
        w.push(1, 3, out(&[(2, 4, "c"), (3, 7, "d")]));
        w.release();
        // up to 3: seq 2 sorted by flow (c before a), then d; b (seq 5) waits
        assert_eq!(text(&w), "c\na\nd\n");
        w.advance(1, 10);
        w.release();
        assert_eq!(text(&w), "c\na\nd\nb\n");
        assert_eq!(w.written, 4);
    }

    /// The end of input's flows come in parts, each complete up to a flow:
    /// what every worker has completed is written at once, in flow order
    /// across the workers, the rest waits; a control at that sequence
    /// number waits until all of it is written.
    #[test]
    fn parts_of_a_sequence_number_are_written_as_far_as_every_worker_is() {
        let mut w = rotating(2);
        w.control(5, Control::Reopen);
        let upto = |flow| Key { seq: 5, flow };
        w.push(0, 4, out(&[(4, 9, "z")]));
        w.push_upto(0, upto(10), out(&[(5, 3, "a"), (5, 10, "b")]));
        w.push_upto(1, upto(7), out(&[(4, 1, "y"), (5, 4, "c"), (5, 7, "d")]));
        w.release();
        // up to (5, 7) for both: b (flow 10) waits for worker 1
        assert_eq!(w.out.0, [b"y\nz\na\nc\nd\n".to_vec()]);
        w.push_upto(0, upto(11), out(&[(5, 11, "f")]));
        w.push_upto(1, upto(8), out(&[(5, 8, "e")]));
        w.release();
        assert_eq!(w.out.0, [b"y\nz\na\nc\nd\ne\n".to_vec()]);
        // both past 5: the rest of it, then the reopen, then what follows
        w.push(1, 6, out(&[(5, 12, "g"), (6, 1, "after")]));
        w.advance(0, 6);
        w.release();
        let first = b"y\nz\na\nc\nd\ne\nb\nf\ng\n".to_vec();
        assert_eq!(w.out.0, [first, b"after\n".to_vec()]);
        assert_eq!(w.written, 10);
    }

    /// A `flow` event left to the writer, for flow `id` ended at `seq`.
    fn flow_line(id: u64) -> FlowLine {
        let at = Timestamp(1_700_000_000_000_000_000);
        let head = FlowHead {
            flow_id: id,
            ts: at,
            frame: 0,
            pcap_file: None,
            src: ("10.0.0.1".parse().expect("address"), 40000),
            dst: ("10.0.0.2".parse().expect("address"), 443),
            proto: 6,
            vlans: Default::default(),
            app_proto: Some("tls"),
            anomaly: None,
            src_seg: None,
            dest_seg: None,
        };
        let flow = crate::event::FlowEvent {
            pkts_toserver: 3,
            pkts_toclient: 2,
            bytes_toserver: 300,
            bytes_toclient: 200,
            start: at,
            end: at,
            age: 0,
            state: "closed",
            reason: "shutdown",
            alerted: false,
        };
        FlowLine { head, flow }
    }

    /// Leaves [`flow_line`]`(id)` to the writer in `o`, ended at `seq`.
    fn push_flow(o: &mut Output, seq: u64, id: u64) {
        o.seq = seq;
        o.flow_line(id, || flow_line(id));
    }

    /// The line [`flow_line`] makes, with this sensor name.
    fn flow_text(id: u64, sensor: Option<&str>) -> String {
        let mut l = Vec::new();
        assert!(flow_line(id).write(sensor, &mut l));
        String::from_utf8(l).expect("utf-8")
    }

    /// Is every `flow` item of worker `w`'s queued chunks already a line?
    fn made_on_receipt(w: &Writer<Vec<u8>>, worker: usize) -> Vec<bool> {
        (w.queues[worker].iter().flat_map(|c| c.items.iter()))
            .filter(|it| it.key().flow >= 100)
            .map(|it| matches!(it, Item::Line { .. }))
            .collect()
    }

    /// The `flow` events a worker leaves to the writer are made as they
    /// come, before the items around them can be written (at the end of
    /// input the worker hands them over in parts), and are written in their
    /// places. While a reload waits its turn they are made in order
    /// instead, each with the sensor name in force at its place.
    #[test]
    fn flow_lines_are_made_as_they_come_and_written_in_their_places() {
        let mut w = writer(1);
        let mut first = out(&[(2, 50, "c")]);
        push_flow(&mut first, 2, 109);
        push_flow(&mut first, 2, 101);
        w.push(0, 1, first);
        w.release();
        assert_eq!(text(&w), "", "seq 2 is not complete");
        assert_eq!(made_on_receipt(&w, 0), [true, true]);
        w.push(0, 2, out(&[(2, 1, "a")]));
        w.release();
        let want = format!("a\nc\n{}{}", flow_text(101, None), flow_text(109, None));
        assert_eq!(text(&w), want);
        assert_eq!((w.written, w.errors), (4, 0));

        // a reload at 4 that names the sensor: lines after it carry the name
        let mut site = crate::config::SiteConfig::default();
        site.sensor.name = Some("renamed".into());
        let rules = crate::pipeline::engine::EngineConfig::default().rules;
        w.control(
            4,
            Control::Reload {
                site: Arc::new(site),
                rules,
            },
        );
        let mut later = Output::default();
        push_flow(&mut later, 3, 103);
        push_flow(&mut later, 5, 105);
        w.push(0, 5, later);
        assert_eq!(made_on_receipt(&w, 0), [false, false], "made in order");
        w.release();
        let want = format!(
            "{want}{}{}",
            flow_text(103, None),
            flow_text(105, Some("renamed"))
        );
        assert_eq!(text(&w), want);
        assert!(want.contains(r#""sensor":"renamed""#));
        // with the reload applied, lines are made as they come again
        w.push(0, 6, {
            let mut o = Output::default();
            push_flow(&mut o, 7, 107);
            o
        });
        assert_eq!(made_on_receipt(&w, 0), [true]);
        w.advance(0, 7);
        w.release();
        assert!(text(&w).ends_with(&flow_text(107, Some("renamed"))));
    }

    /// The heads and `flow` events a worker leaves to the writer travel in
    /// vectors (not boxes) that come back to the worker, emptied, with the
    /// chunk's other buffers; each event is made from its own entry.
    #[test]
    fn heads_and_flow_events_come_back_for_reuse() {
        let mut w = writer(1);
        let (give, spares) = crossbeam_channel::bounded(4);
        w.recycle_to(0, give);
        let mut o = out(&[(1, 1, "a")]);
        push_flow(&mut o, 2, 102);
        push_flow(&mut o, 2, 101);
        // a protocol event of flow 103, its head the writer's to make
        o.heads.push(flow_line(103).head);
        let start = o.buf.len();
        o.buf.extend_from_slice(br#","x":1"#);
        o.items.push(Item::Tail {
            key: Key { seq: 3, flow: 103 },
            head: 0,
            start,
            end: o.buf.len(),
            event_type: crate::config::event_type_index("tls"),
        });
        w.push(0, 3, o);
        w.release();
        let mut tls = Vec::new();
        assert!(flow_line(103)
            .head
            .write_line("tls", None, br#","x":1"#, &mut tls));
        let tls = String::from_utf8(tls).expect("utf-8");
        let want = format!("a\n{}{}{tls}", flow_text(101, None), flow_text(102, None));
        assert_eq!(text(&w), want);
        let spare = spares.try_recv().expect("the chunk's buffers come back");
        assert!(spare.buf.is_empty() && spare.items.is_empty());
        assert!(spare.heads.is_empty() && spare.heads.capacity() >= 1);
        assert!(spare.lines.is_empty() && spare.lines.capacity() >= 2);
    }

    /// A sink that starts a new "file" on every reopen.
    #[derive(Default)]
    struct Rotating(Vec<Vec<u8>>);

    impl Sink for Rotating {
        fn send(&mut self, b: &Batch<'_>) -> crate::sink::Sent {
            if self.0.is_empty() {
                self.0.push(Vec::new());
            }
            let last = self.0.len() - 1;
            crate::sink::write_runs(&mut self.0[last], b.runs)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
        fn reopen(&mut self) -> std::io::Result<()> {
            self.0.push(Vec::new());
            Ok(())
        }
    }

    /// A writer of `workers` workers to a [`Rotating`] sink.
    fn rotating(workers: usize) -> Writer<Rotating> {
        let cfg = crate::pipeline::engine::EngineConfig::default();
        Writer::new(
            Rotating::default(),
            workers,
            cfg.site,
            cfg.rules,
            Default::default(),
        )
    }

    #[test]
    fn one_flows_lines_keep_their_order_and_controls_wait_their_turn() {
        let mut w = rotating(1);
        w.control(
            3,
            Control::Ledger {
                reason: "end_of_run",
                at: Timestamp(0),
            },
        );
        w.control(4, Control::Reopen);
        w.push(0, 2, out(&[(2, 5, "x1"), (2, 5, "x2"), (2, 3, "y")]));
        w.release();
        assert_eq!(w.out.0, [b"y\nx1\nx2\n".to_vec()]);
        w.push(0, 4, out(&[(4, 1, "z")]));
        w.push(0, 6, out(&[(5, 1, "after")]));
        w.release();
        // the reopen (seq 4) applies after every item up to 4: z is in the old
        // output, what follows in the new one
        assert_eq!(w.out.0, [b"y\nx1\nx2\nz\n".to_vec(), b"after\n".to_vec()]);
        assert_eq!(w.written, 5);
    }
}
