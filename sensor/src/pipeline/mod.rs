//! The multi-worker pipeline.
//!
//! ```text
//!  capture ──► dispatcher ──batches──► worker 0 (Engine) ──┐
//!  (file or    seq numbers,  bounded   worker 1 (Engine) ──┼──► writer ──► JSON lines
//!   live)      ticks, hash   queues    …                   ┘    (merge, cross-flow state)
//! ```
//!
//! The dispatcher numbers every packet, decodes just enough of it to find the
//! IP address pair, and sends it to the worker that owns that pair (a
//! symmetric hash: both directions of a flow, and every fragment of a
//! datagram, reach the same worker; for a fragmented *tunnel* packet it is the
//! outer pair). Packets travel in batches. A batch holds the buffers its
//! packets' bytes are in (for a mapped capture file, the one map; live, one
//! buffer per capture batch) and each packet as a span of one of them, so a
//! batch costs a reference count per buffer, not per packet. Emptied batch
//! vectors come back to the dispatcher to be reused.
//!
//! With one worker, the worker's time bounds the run, and while it is behind
//! (its queue half full) the dispatcher would only wait for room: it then
//! decodes the common case (Ethernet, IPv4, TCP) for the worker and hands the
//! result with the packet ([`decode::Found`], offsets into the frame), so the
//! packet is still decoded once. Not while the worker keeps up (the reading
//! is then the bound), and never for several workers.
//!
//! Time is capture time. When it passes a whole second the dispatcher sends
//! every worker a tick, numbered like a packet, at which each ends its idle
//! flows; so flows end at the same points of the input whatever the number of
//! workers. The writer merges the workers' outputs by those numbers (see
//! [`crate::pipeline::writer`]), which makes `read --workers N` write the same lines,
//! in the same order, for every N. Two things do depend on N: each worker
//! holds `max_flows / N` flows, so under table pressure a different flow may
//! be evicted; and per-worker counters in `stats`.
//!
//! `read` with several workers needs no dispatcher: each worker walks the
//! mapped file itself and numbers records and ticks the same way (see
//! [`walk`]).
//!
//! Offline, a full queue blocks the dispatcher (back-pressure, nothing lost).
//! Live, a full worker queue drops the packets of that batch (counted per
//! worker) rather than stall capture; ticks and control messages are always
//! delivered.

pub mod engine;
pub mod live;
pub mod output;
mod owner;
mod room;
pub mod walk;
pub mod writer;

pub use owner::worker_of;

use crate::sink::Sink;
use std::ops::Range;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::capture::{Frames, LinkType, Packet};
use crate::config::SiteConfig;
use crate::decode;
use crate::detect::RuleSet;
use crate::pipeline::engine::{Engine, EngineConfig, Origin};
use crate::pipeline::output::{EventTypes, Output, Report};
use crate::pipeline::writer::{Control, StatsRequest, Writer};
use crate::time::Timestamp;

/// Packets per batch sent to one worker.
pub const BATCH: usize = 1024;
/// Batches queued per worker.
pub const QUEUE: usize = 16;

/// Batches waiting in a lone worker's queue from which the dispatcher
/// decodes packets for it ([`Pipeline::flush`]).
const AHEAD_AT: usize = QUEUE / 2;

/// Pipeline settings.
#[derive(Clone)]
pub struct Settings {
    pub workers: usize,
    /// `max_flows` is the total, shared out among the workers.
    pub engine: EngineConfig,
    pub types: Arc<EventTypes>,
    /// Live capture: drop on a full queue instead of waiting.
    pub live: bool,
    /// Record per-packet processing time (for `stats`).
    pub latency: bool,
    /// The writer serialises what needs nothing of a worker's state
    /// ([`Output::defer`]); None: with one worker and more than one core.
    pub defer: Option<bool>,
    /// The dispatcher decodes the common case for a lone worker
    /// ([`decode::Found`]); None: while the worker is behind it
    /// ([`Pipeline::flush`]).
    pub decode_ahead: Option<bool>,
}

/// How far capture time must go back to start a new timeline (a day: more
/// than any flow timeout, so reordered packets never reset the clock).
const TIMELINE_JUMP: i64 = 86_400 * 1_000_000_000;

/// Numbers packets and ticks, and says when a tick is due.
#[derive(Debug, Default, Clone)]
struct Sequencer {
    seq: u64,
    now: Timestamp,
    /// Where the next whole second of capture time starts (ns); none before
    /// the first packet.
    next_second: Option<i64>,
}

impl Sequencer {
    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Capture time has reached `ts`: the time of the tick now due, if a
    /// whole second has passed since the last one, and whether it starts a
    /// new timeline. Time does not go back, but for a jump back of more than
    /// [`TIMELINE_JUMP`]: a capture of another time, or the clock run away on
    /// one absurd timestamp (a packet dated in 2262 must not leave every
    /// later flow idle at once). Then the clock follows, and the flows of
    /// the other timeline end (their 5-tuples may come again).
    fn advance(&mut self, ts: Timestamp) -> Option<(Timestamp, bool)> {
        const SECOND: i64 = 1_000_000_000;
        let back = self.next_second.is_some() && self.now.0.saturating_sub(ts.0) > TIMELINE_JUMP;
        // the first packet sets the time, even one before 1970 (a pcapng
        // interface's time offset can put it there)
        if self.next_second.is_none() || ts > self.now || back {
            self.now = ts;
        }
        let sec = self.now.0.div_euclid(SECOND);
        let following = Some(sec.saturating_add(1).saturating_mul(SECOND));
        if back {
            self.next_second = following;
            return Some((self.now, true));
        }
        match self.next_second {
            Some(next) if self.now.0 < next => None,
            due => {
                self.next_second = following;
                due.map(|_| (self.now, false))
            }
        }
    }
}

/// Where a packet's bytes are: `len` bytes from `start` of buffer `buf` of
/// its batch.
#[derive(Debug, Clone, Copy)]
struct Span {
    buf: u32,
    len: u32,
    start: usize,
}

/// Work for a worker, in dispatch order.
enum Work {
    Packet {
        seq: u64,
        now: Timestamp,
        pkt: Packet<Span>,
        /// What the dispatcher found in the frame, if it looked.
        found: Option<decode::Found>,
    },
    Tick {
        seq: u64,
        now: Timestamp,
        /// Capture time went back to another timeline: every flow ends.
        reset: bool,
    },
    Report {
        seq: u64,
    },
    Reload {
        site: Arc<SiteConfig>,
        rules: Arc<RuleSet>,
    },
    /// End every flow.
    Finish {
        seq: u64,
    },
}

struct Batch {
    origin: Option<Arc<str>>,
    work: Filling,
    /// Everything for this worker numbered up to here has been sent.
    horizon: u64,
    /// Then a file to walk (offline, see [`walk`]).
    walk: Option<Box<walk::Walk>>,
}

/// A worker's next batch, being filled: its work, and the buffers its
/// packets' bytes are in.
struct Filling {
    items: Vec<Work>,
    bufs: Vec<Bytes>,
}

impl Filling {
    fn with_capacity(n: usize) -> Self {
        Filling {
            items: Vec::with_capacity(n),
            bufs: Vec::new(),
        }
    }

    /// The index of `buf` among this batch's buffers, taking a reference to
    /// it only when it is not the last one added (packets come in runs from
    /// one buffer).
    fn buffer(&mut self, buf: &Bytes) -> u32 {
        match self.bufs.last() {
            Some(b) if b.as_ptr() == buf.as_ptr() && b.len() == buf.len() => {}
            _ => self.bufs.push(buf.clone()),
        }
        (self.bufs.len() - 1) as u32
    }

    fn clear(&mut self) {
        self.items.clear();
        self.bufs.clear();
    }
}

enum ToWriter {
    Out {
        worker: usize,
        done: output::Key,
        out: Output,
    },
    Control {
        seq: u64,
        c: Control,
    },
}

/// One worker: an engine fed batches in dispatch order.
struct Worker {
    id: usize,
    /// How many there are.
    workers: usize,
    engine: Engine,
    out: Output,
    hist: Option<hdrhistogram::Histogram<u64>>,
}

impl Worker {
    fn new(id: usize, workers: usize, engine: Engine, out: Output, latency: bool) -> Self {
        Worker {
            id,
            workers,
            engine,
            out,
            hist: latency.then(|| {
                hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3)
                    .expect("histogram bounds are valid")
            }),
        }
    }

    fn packet(
        &mut self,
        (seq, now): (u64, Timestamp),
        pkt: &Packet<&[u8]>,
        found: Option<&decode::Found>,
        origin: Origin<'_>,
    ) {
        self.out.seq = seq;
        let out = &mut self.out;
        match &mut self.hist {
            Some(h) => {
                let t = std::time::Instant::now();
                self.engine.process_found(pkt, found, now, origin, out);
                let _ = h.record(t.elapsed().as_nanos().max(1) as u64);
            }
            None => self.engine.process_found(pkt, found, now, origin, out),
        }
    }

    fn run(&mut self, w: &Work, bufs: &[Bytes], origin: Origin<'_>, queue_depth: usize) {
        let Work::Packet {
            seq,
            now,
            pkt,
            found,
        } = w
        else {
            return self.control(w, origin, queue_depth);
        };
        let s = pkt.data;
        let data = bufs
            .get(s.buf as usize)
            .and_then(|b| b.get(s.start..)?.get(..s.len as usize))
            .unwrap_or_default();
        self.packet((*seq, *now), &pkt.with_data(data), found.as_ref(), origin);
    }

    /// Everything but a packet.
    fn control(&mut self, w: &Work, origin: Origin<'_>, queue_depth: usize) {
        let out = &mut self.out;
        match w {
            Work::Packet { .. } => {}
            Work::Tick { seq, now, reset } => {
                out.seq = *seq;
                if *reset {
                    self.engine.new_timeline(origin, out);
                }
                self.engine.tick(*now, origin, out);
            }
            Work::Report { seq } => {
                out.seq = *seq;
                self.engine.sync_counters();
                out.report(Report {
                    worker: self.id,
                    counters: self.engine.counters,
                    queue_depth,
                    latency: self.hist.clone().map(Box::new),
                });
            }
            Work::Reload { site, rules } => {
                self.engine.set_site(Arc::clone(site));
                self.engine.set_rules(Arc::clone(rules));
            }
            Work::Finish { seq } => {
                out.seq = *seq;
                self.engine.finish(origin, out);
            }
        }
    }
}

fn engine_for(s: &Settings) -> Engine {
    Engine::new(s.engine.share(s.workers))
}

/// The threaded pipeline: the caller's thread dispatches, `workers` threads
/// run engines, one thread writes.
pub struct Pipeline<W: Sink + 'static> {
    seq: Sequencer,
    live: bool,
    origin: Option<Arc<str>>,
    txs: Vec<room::Queue>,
    pending: Vec<Filling>,
    recycled: Receiver<Filling>,
    to_writer: Sender<ToWriter>,
    workers: Vec<JoinHandle<()>>,
    writer: JoinHandle<Writer<W>>,
    /// Packets dropped because a worker's queue was full (live), per worker.
    pub dropped: Vec<u64>,
    /// Decode the common case for the worker ([`decode::Found`]): one
    /// worker, behind this thread (see [`Pipeline::flush`]).
    ahead: bool,
    /// [`Settings::decode_ahead`], with one worker (else never).
    decode_ahead: Option<bool>,
}

impl<W: Sink + 'static> Pipeline<W> {
    /// Starts the worker and writer threads (fails only if the system
    /// refuses a thread).
    pub fn start(s: Settings, out: W) -> std::io::Result<Self> {
        let n = s.workers.max(1);
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let defer = s.defer.unwrap_or(n == 1 && cores > 1);
        let (to_writer, from_workers) = crossbeam_channel::bounded::<ToWriter>(n * QUEUE);
        let (recycle, recycled) = crossbeam_channel::bounded::<Filling>(n * (QUEUE + 2));
        let mut txs = Vec::with_capacity(n);
        let mut workers = Vec::with_capacity(n);
        let mut writer = Writer::new(
            out,
            n,
            Arc::clone(&s.engine.site),
            Arc::clone(&s.engine.rules),
            Arc::clone(&s.types),
        );
        for id in 0..n {
            let (give, spares) = crossbeam_channel::bounded(4);
            writer.recycle_to(id, give);
            let (tx, rx) = crossbeam_channel::bounded::<Batch>(QUEUE);
            let room = Arc::new(room::Room::default());
            let taken = Arc::clone(&room);
            txs.push(room::Queue::new(tx, room));
            let out = Output::new(Arc::clone(&s.types), defer);
            let mut w = Worker::new(id, n, engine_for(&s), out, s.latency);
            let to_writer = to_writer.clone();
            let recycle = recycle.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("spanwatch-worker-{id}"))
                .spawn(move || walk::serve(&mut w, (&rx, &taken), &to_writer, &spares, &recycle));
            workers.push(spawned?);
        }
        let writer = std::thread::Builder::new()
            .name("spanwatch-writer".into())
            .spawn(move || {
                for m in from_workers.iter() {
                    match m {
                        ToWriter::Out { worker, done, out } => writer.push_upto(worker, done, out),
                        ToWriter::Control { seq, c } => writer.control(seq, c),
                    }
                    writer.release();
                }
                writer.release();
                writer
            })?;
        Ok(Pipeline {
            seq: Sequencer::default(),
            live: s.live,
            origin: None,
            txs,
            pending: (0..n).map(|_| Filling::with_capacity(BATCH)).collect(),
            recycled,
            to_writer,
            workers,
            writer,
            dropped: vec![0; n],
            ahead: n == 1 && s.decode_ahead == Some(true),
            decode_ahead: if n == 1 { s.decode_ahead } else { Some(false) },
        })
    }

    /// Names the capture the next packets come from (offline).
    pub fn set_origin(&mut self, name: Option<Arc<str>>) {
        if self.origin != name {
            self.flush();
            self.origin = name;
        }
    }

    /// Dispatches one packet.
    pub fn packet(&mut self, pkt: Packet) {
        let range = 0..pkt.data.len();
        self.packet_in(&pkt.data, pkt.with_data(range));
    }

    /// Dispatches every packet of a capture batch.
    pub fn frames(&mut self, f: Frames) {
        for pkt in f.packets {
            self.packet_in(&f.data, pkt);
        }
    }

    /// Dispatches one packet whose bytes are `buf[pkt.data]`: the batch it
    /// joins takes a reference to `buf` only if its last packet was in
    /// another buffer.
    pub fn packet_in(&mut self, buf: &Bytes, pkt: Packet<Range<usize>>) {
        self.clock(pkt.ts);
        let seq = self.seq.next();
        // out of bounds (never, from our readers): an empty frame, counted as such
        let data = buf.get(pkt.data.clone()).unwrap_or_default();
        let w = worker_of(pkt.linktype, data, self.txs.len());
        let found = (self.ahead && pkt.linktype == LinkType::ETHERNET)
            .then(|| decode::Found::find(data))
            .flatten();
        let now = self.seq.now;
        let f = &mut self.pending[w];
        let span = Span {
            buf: f.buffer(buf),
            len: data.len() as u32,
            start: pkt.data.start,
        };
        f.items.push(Work::Packet {
            seq,
            now,
            pkt: pkt.with_data(span),
            found,
        });
        if f.items.len() >= BATCH {
            self.flush();
        }
    }

    /// How many workers there are.
    pub fn workers(&self) -> usize {
        self.txs.len()
    }

    /// Capture time has reached `ts` (live: also called when the link is
    /// idle, with the wall clock, so idle flows still end).
    pub fn clock(&mut self, ts: Timestamp) {
        if let Some((now, reset)) = self.seq.advance(ts) {
            let seq = self.seq.next();
            self.broadcast(|| Work::Tick { seq, now, reset });
        }
    }

    fn broadcast(&mut self, mut f: impl FnMut() -> Work) {
        for p in &mut self.pending {
            p.items.push(f());
        }
    }

    /// Sends every worker what is waiting for it (possibly nothing: the
    /// batch still tells it, and the writer, how far the input has got).
    pub fn flush(&mut self) {
        self.send_all();
        // One worker with batches waiting bounds the run, and this thread
        // would wait for room: it decodes the next batch's packets for it
        // (on a handshake-heavy capture, 3 % less time). Not when the worker
        // keeps up (bulk transfers): this thread's reading is then the bound.
        self.ahead = (self.decode_ahead)
            .unwrap_or_else(|| matches!(&self.txs[..], [q] if q.tx.len() >= AHEAD_AT));
    }

    fn send_all(&mut self) {
        let horizon = self.seq.seq;
        for w in 0..self.txs.len() {
            let fresh = self
                .recycled
                .try_recv()
                .unwrap_or_else(|_| Filling::with_capacity(BATCH));
            let work = std::mem::replace(&mut self.pending[w], fresh);
            let b = Batch {
                origin: self.origin.clone(),
                work,
                horizon,
                walk: None,
            };
            if !self.live {
                self.txs[w].send(b);
                continue;
            }
            match self.txs[w].tx.try_send(b) {
                Ok(()) => {}
                Err(TrySendError::Full(mut b)) => {
                    let before = b.work.items.len();
                    b.work.items.retain(|i| !matches!(i, Work::Packet { .. }));
                    b.work.bufs.clear();
                    self.dropped[w] += (before - b.work.items.len()) as u64;
                    // ticks and control messages always get through
                    let _ = self.txs[w].tx.send(b);
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    fn control(&mut self, seq: u64, c: Control) {
        let _ = self.to_writer.send(ToWriter::Control { seq, c });
    }

    /// Writes a `stats` event once every worker has reported.
    pub fn stats(&mut self, mut req: StatsRequest) {
        let seq = self.seq.next();
        self.broadcast(|| Work::Report { seq });
        req.worker_dropped = self.dropped.clone();
        self.control(seq, Control::Stats(Box::new(req)));
        self.flush();
    }

    /// Keeps the ledger in a database from here on: call before the first
    /// packet.
    pub fn attach_store(&mut self, link: crate::ledger::Link) {
        let seq = self.seq.seq;
        self.control(seq, Control::Store(Box::new(link)));
    }

    /// Logs the host activity ledger.
    pub fn ledger(&mut self, reason: &'static str) {
        let seq = self.seq.next();
        let at = self.seq.now;
        self.control(seq, Control::Ledger { reason, at });
        self.flush();
    }

    /// New site configuration and signatures, from this point of the input.
    pub fn reload(&mut self, site: Arc<SiteConfig>, rules: Arc<RuleSet>) {
        let seq = self.seq.next();
        let (s, r) = (Arc::clone(&site), Arc::clone(&rules));
        self.broadcast(|| Work::Reload {
            site: Arc::clone(&s),
            rules: Arc::clone(&r),
        });
        self.control(seq, Control::Reload { site, rules });
        self.flush();
    }

    /// Opens the outputs anew from this point of the input (log rotation).
    pub fn reopen(&mut self) {
        let seq = self.seq.next();
        self.control(seq, Control::Reopen);
        self.flush();
    }

    /// Ends every open flow (end of input, or the sensor stopping).
    pub fn end_flows(&mut self) {
        let seq = self.seq.next();
        self.broadcast(|| Work::Finish { seq });
        self.flush();
    }

    /// Waits for every worker and the writer; returns the writer (counters,
    /// events written) once all is written.
    pub fn close(mut self) -> Writer<W> {
        let seq = self.seq.next();
        self.broadcast(|| Work::Report { seq });
        self.flush();
        drop(self.txs);
        for h in self.workers {
            let _ = h.join();
        }
        drop(self.to_writer);
        match self.writer.join() {
            Ok(w) => w,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

/// The same pipeline in the caller's thread, one engine (tests, fuzzing,
/// tools). Writes exactly what [`Pipeline`] writes.
pub struct Inline<W: Sink> {
    seq: Sequencer,
    origin: Option<Arc<str>>,
    worker: Worker,
    writer: Writer<W>,
    /// The bytes of the packet being processed.
    buf: [Bytes; 1],
}

impl<W: Sink> Inline<W> {
    pub fn new(cfg: EngineConfig, types: Arc<EventTypes>, out: W) -> Self {
        let writer = Writer::new(
            out,
            1,
            Arc::clone(&cfg.site),
            Arc::clone(&cfg.rules),
            Arc::clone(&types),
        );
        Inline {
            seq: Sequencer::default(),
            origin: None,
            // one thread: nothing to gain from the writer serialising
            worker: Worker::new(0, 1, Engine::new(cfg), Output::new(types, false), false),
            writer,
            buf: Default::default(),
        }
    }

    pub fn set_origin(&mut self, name: Option<Arc<str>>) {
        self.origin = name;
    }

    fn run(&mut self, w: Work) {
        let origin = Origin {
            pcap_file: self.origin.as_ref(),
        };
        self.worker.run(&w, &self.buf, origin, 0);
        if self.worker.out.is_empty() {
            self.writer.advance(0, self.seq.seq);
        } else {
            let out = self.worker.out.take(None);
            self.writer.push(0, self.seq.seq, out);
        }
        self.writer.release();
    }

    pub fn packet(&mut self, pkt: Packet) {
        if let Some((now, reset)) = self.seq.advance(pkt.ts) {
            let seq = self.seq.next();
            self.run(Work::Tick { seq, now, reset });
        }
        let seq = self.seq.next();
        let now = self.seq.now;
        let span = Span {
            buf: 0,
            len: pkt.data.len() as u32,
            start: 0,
        };
        let meta = pkt.with_data(span);
        self.buf = [pkt.data];
        self.run(Work::Packet {
            seq,
            now,
            pkt: meta,
            found: None,
        });
    }

    /// Ends every flow, logs the ledger, and returns the writer.
    pub fn finish(mut self) -> Writer<W> {
        let seq = self.seq.next();
        self.run(Work::Finish { seq });
        let seq = self.seq.next();
        let at = self.seq.now;
        self.writer.control(
            seq,
            Control::Ledger {
                reason: "end_of_run",
                at,
            },
        );
        self.run(Work::Report { seq });
        self.writer
    }
}

#[cfg(test)]
mod tests {
    use super::owner::tcp_pair;
    use super::*;
    use crate::capture::LinkType;
    use crate::decode::Outcome;

    /// The fast path agrees with the full decode on every packet of `pcaps/`.
    #[test]
    fn fast_pair_agrees_with_decode() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcaps");
        let mut fast = 0;
        for e in std::fs::read_dir(&dir).expect("pcaps/") {
            let path = e.expect("entry").path();
            if !path
                .extension()
                .is_some_and(|x| x == "pcap" || x == "pcapng")
            {
                continue;
            }
            let mut r = crate::capture::FileReader::open(&path).expect("opens");
            while let Some(Ok(p)) = r.next() {
                let Some(pair) = tcp_pair(p.linktype, &p.data) else {
                    continue;
                };
                fast += 1;
                let full = match decode::decode(p.linktype, &p.data) {
                    Ok(Outcome::Packet(d)) => (d.src, d.dst),
                    Ok(Outcome::Fragment(f)) => (f.src, f.dst),
                    Err(e) => panic!(
                        "{}: fast path took an undecodable packet: {e:?}",
                        path.display()
                    ),
                };
                assert_eq!(pair, full, "{}", path.display());
            }
        }
        assert!(fast > 100, "the fast path was hardly used ({fast})");
        assert_eq!(tcp_pair(LinkType::RAW, &[0x45; 40]), None);
        assert_eq!(tcp_pair(LinkType::ETHERNET, &[0; 10]), None);
    }

    /// Packets whose bytes alternate between buffers (live batches of two
    /// interfaces, say) are dispatched with the right bytes: the threaded
    /// pipeline writes what the in-thread one writes.
    #[test]
    fn packets_in_several_buffers_keep_their_bytes() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcaps/tls12-chain.pcap");
        let mut r = crate::capture::FileReader::open(&path).expect("opens");
        let mut packets = Vec::new();
        while let Some(p) = r.next() {
            packets.push(p.expect("reads"));
        }
        assert!(packets.len() > 10);
        // runs of one, two and three packets in each buffer
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut placed = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            let (which, buf) = if i % 5 < 2 { (0, &mut a) } else { (1, &mut b) };
            let start = buf.len();
            buf.extend_from_slice(&p.data);
            placed.push((which, p.with_data(start..buf.len())));
        }
        let bufs = [Bytes::from(a), Bytes::from(b)];
        let cfg = EngineConfig::default();
        let mut inline = Inline::new(cfg.clone(), Default::default(), Vec::new());
        for p in &packets {
            inline.packet(p.clone());
        }
        let expected = inline.finish().into_inner();
        assert!(!expected.is_empty());
        for workers in [1, 2, 3] {
            let s = Settings {
                workers,
                engine: cfg.clone(),
                types: Default::default(),
                live: false,
                latency: false,
                defer: None,
                decode_ahead: None,
            };
            let mut p = Pipeline::start(s, Vec::new()).expect("threads start");
            for (which, pkt) in &placed {
                p.packet_in(&bufs[*which], pkt.clone());
            }
            p.end_flows();
            p.ledger("end_of_run");
            let got = p.close().into_inner();
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&expected),
                "{workers} workers"
            );
        }
    }

    #[test]
    fn a_tick_is_due_each_time_capture_time_crosses_a_whole_second() {
        let mut s = Sequencer::default();
        let t = |ns: i64| Timestamp(ns);
        let tick = |ns: i64| Some((Timestamp(ns), false));
        assert_eq!(s.advance(t(1_400_000_000)), None, "the first packet");
        assert_eq!(s.advance(t(1_900_000_000)), None);
        assert_eq!(s.advance(t(2_000_000_000)), tick(2_000_000_000));
        assert_eq!(s.advance(t(2_999_999_999)), None);
        // a gap of many seconds: one tick, at the packet's time
        assert_eq!(s.advance(t(9_500_000_000)), tick(9_500_000_000));
        // time going back neither ticks nor moves `now` back
        assert_eq!(s.advance(t(3_000_000_000)), None);
        assert_eq!(s.now, t(9_500_000_000));
        // ... unless it goes back more than a day: another timeline
        let mut r = Sequencer::default();
        r.advance(t(1_000_000_000));
        assert_eq!(r.advance(t(i64::MAX)), tick(i64::MAX), "a runaway stamp");
        assert_eq!(
            r.advance(t(1_200_000_000)),
            Some((t(1_200_000_000), true)),
            "back: a new timeline"
        );
        assert_eq!(r.now, t(1_200_000_000));
        assert_eq!(r.advance(t(1_900_000_000)), None, "no tick every packet");
        assert_eq!(r.advance(t(2_000_000_000)), tick(2_000_000_000));
        assert_eq!(s.advance(t(10_000_000_000)), tick(10_000_000_000));
        // before 1970 the seconds are whole too
        let mut s = Sequencer::default();
        assert_eq!(s.advance(t(-1_500_000_000)), None);
        assert_eq!(s.advance(t(-1_000_000_001)), None);
        assert_eq!(s.advance(t(-1_000_000_000)), tick(-1_000_000_000));
        // and the end of time does not overflow
        let mut s = Sequencer::default();
        assert_eq!(s.advance(t(i64::MAX - 1)), None);
        assert_eq!(s.advance(t(i64::MAX)), tick(i64::MAX));
    }

    #[test]
    fn both_directions_reach_the_same_worker() {
        let d = |s: [u8; 4], t: [u8; 4]| {
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]);
            f.extend_from_slice(&s);
            f.extend_from_slice(&t);
            f.extend_from_slice(&[0; 20]);
            f
        };
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..64u8 {
            let (a, b) = ([10, 0, 0, i], [192, 0, 2, 255 - i]);
            let w = worker_of(LinkType::ETHERNET, &d(a, b), 4);
            assert_eq!(w, worker_of(LinkType::ETHERNET, &d(b, a), 4));
            seen.insert(w);
        }
        assert_eq!(seen.len(), 4, "64 pairs spread over all 4 workers");
    }
}
