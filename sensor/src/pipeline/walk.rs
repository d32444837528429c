//! Workers that read a capture file themselves.
//!
//! Offline, a mapped capture needs no dispatcher: every worker walks the
//! whole file, numbers every record and every tick exactly as the dispatcher
//! would (the same [`Sequencer`] over the same records), and processes the
//! records whose address pair it owns ([`worker_of`]) and every tick. Each
//! tells the others how far it has got every [`BATCH`] records, and the
//! writer every [`HAND_OVER`] batches, so the writer merges by the same
//! numbers and writes the same lines, in the same order, as the dispatched
//! pipeline does, for every number of workers.
//!
//! Skipping a record costs its header and a hash of its address pair, so
//! walking the file `n` times costs less than handing each packet from one
//! thread to another; and the reading is shared out over the cores instead of
//! bounding them all.
//!
//! A worker may not run more than [`LEAD`] records ahead of the slowest: what
//! it has done waits in the writer until the others catch up, and that must
//! stay bounded (the dispatcher's queues set a like bound). Since output is
//! handed over every [`HAND_OVER`] batches, what waits in the writer is at
//! most `LEAD + (HAND_OVER - 1) × BATCH` records' output (dispatched:
//! `QUEUE + HAND_OVER - 1` batches), and a worker's output buffers settle at
//! [`HAND_OVER`] batches' worth.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::room::Room;
use super::{worker_of, Batch, Filling, Pipeline, Sequencer, ToWriter, Work, Worker, BATCH, QUEUE};
use crate::capture::{prefetch, CaptureError, FileReader};
use crate::pipeline::engine::Origin;
use crate::pipeline::output::{Key, Output, Spare};
use crate::sink::Sink;

/// How many records one worker may be ahead of the slowest.
pub const LEAD: u64 = (QUEUE * BATCH) as u64;

/// How many packets of a batch ahead a worker asks for the next packet's
/// bytes (a few hundred nanoseconds of work each: enough for the line to
/// arrive from the reader's core or memory).
const AHEAD: usize = 4;

/// How far behind the reading a mapped file's pages are given back
/// ([`FileReader::release_before`]; by the dispatcher, or while workers walk
/// by the thread that waits for them): well beyond what the queues hold in
/// flight, or the workers' lead on one another ([`LEAD`] records), some 24 MB
/// of full-size frames. A page given back too soon is only mapped again.
const RELEASE_LAG: usize = 64 << 20;

/// At most how many batches a busy worker processes before it hands its
/// output to the writer.
const HAND_OVER: usize = 8;

/// One file for one worker to walk.
pub(super) struct Walk {
    /// The worker it is for.
    pub id: usize,
    pub reader: FileReader,
    pub seq: Sequencer,
    pub progress: Arc<Progress>,
    pub reply: Sender<Walked>,
}

/// However a walk ends (walked, never started because its worker is gone,
/// or a panic), its worker holds no other back from then on.
impl Drop for Walk {
    fn drop(&mut self) {
        self.progress.leave(self.id);
    }
}

/// A worker has walked a file: where numbering stands after it, and the
/// error that stopped it early, if any.
pub(super) struct Walked {
    pub seq: Sequencer,
    pub error: Option<CaptureError>,
}

/// How far each worker has got (their shared pace), and how far into the
/// file (for a progress bar).
pub struct Progress {
    done: Vec<AtomicU64>,
    position: AtomicUsize,
    lock: Mutex<()>,
    moved: Condvar,
}

impl Progress {
    pub(super) fn new(workers: usize, start: u64) -> Self {
        Progress {
            done: (0..workers).map(|_| AtomicU64::new(start)).collect(),
            position: AtomicUsize::new(0),
            lock: Mutex::new(()),
            moved: Condvar::new(),
        }
    }

    /// Bytes of the file the first worker has read.
    pub fn position(&self) -> usize {
        self.position.load(Ordering::Relaxed)
    }

    fn slowest(&self) -> u64 {
        self.done
            .iter()
            .map(|d| d.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Worker `id` is out of the race: no other waits for it.
    fn leave(&self, id: usize) {
        self.done[id].store(u64::MAX, Ordering::Release);
        if let Ok(_g) = self.lock.lock() {
            self.moved.notify_all();
        }
    }

    /// Worker `id` has done everything up to `seq`: tells the others, then
    /// waits while it is more than [`LEAD`] ahead of the slowest. True if
    /// it had to wait.
    fn reached(&self, id: usize, seq: u64) -> bool {
        self.done[id].store(seq, Ordering::Release);
        let Ok(mut g) = self.lock.lock() else {
            return false;
        };
        self.moved.notify_all();
        let mut waited = false;
        // bounded wait: a missed wake-up costs a millisecond, never a hang
        while seq > self.slowest().saturating_add(LEAD) {
            waited = true;
            g = match self.moved.wait_timeout(g, Duration::from_millis(1)) {
                Ok((g, _)) => g,
                Err(_) => return waited,
            };
        }
        waited
    }
}

impl<W: Sink + 'static> Pipeline<W> {
    /// Every packet of a capture file, read by the workers themselves (see
    /// [`walk`]); `progress` is told, now and then, how many of the file's
    /// bytes have been read. Offline only. Returns the error that cut the
    /// file short, if any (what came before it is processed).
    pub fn walk(
        &mut self,
        mut reader: FileReader,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<(), CaptureError> {
        self.flush();
        let n = self.txs.len();
        let shared = Arc::new(Progress::new(n, self.seq.seq));
        let (reply, replies) = crossbeam_channel::bounded(n);
        for (id, tx) in self.txs.iter().enumerate() {
            let b = Batch {
                origin: self.origin.clone(),
                work: Filling::with_capacity(0),
                horizon: self.seq.seq,
                walk: Some(Box::new(Walk {
                    id,
                    reader: reader.clone(),
                    seq: self.seq.clone(),
                    progress: Arc::clone(&shared),
                    reply: reply.clone(),
                })),
            };
            tx.send(b);
        }
        drop(reply);
        // every worker numbers the same records the same way and stops at
        // the same error: any reply will do
        let mut done: Option<Walked> = None;
        let mut walked = 0;
        while walked < n {
            // every 20 ms: pages given back in steps of some 20 ms of reading
            // (at 5 GB/s, 100 MB), not only at the end
            match replies.recv_timeout(std::time::Duration::from_millis(20)) {
                Ok(w) => {
                    walked += 1;
                    done.get_or_insert(w);
                }
                Err(RecvTimeoutError::Timeout) => {
                    let at = shared.position();
                    progress(at, reader.len());
                    reader.release_before(at.saturating_sub(RELEASE_LAG));
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        match done {
            Some(d) if walked == n => {
                self.seq = d.seq;
                d.error.map_or(Ok(()), Err)
            }
            // a worker is gone (it panicked): what it owned is lost
            _ => Err(CaptureError::Stopped {
                path: reader.path().to_owned(),
                what: format!("{} of {n} workers read it to the end", walked),
            }),
        }
    }

    /// Every packet of a capture file, handed to the workers by this thread
    /// (one worker: this thread reads while it works); `progress` as for
    /// [`Pipeline::walk`].
    pub fn dispatch(
        &mut self,
        mut reader: FileReader,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<(), CaptureError> {
        let mut n = 0u32;
        while let Some(pkt) = reader.next_range() {
            self.packet_in(reader.data(), pkt?);
            n = n.wrapping_add(1);
            if n.is_multiple_of(8192) {
                progress(reader.position(), reader.len());
                reader.release_before(reader.position().saturating_sub(RELEASE_LAG));
            }
        }
        Ok(())
    }
}

/// A worker thread: batches in dispatch order, and the files it is to walk,
/// until the pipeline closes.
pub(super) fn serve(
    w: &mut Worker,
    (rx, room): (&Receiver<Batch>, &Room),
    to_writer: &Sender<ToWriter>,
    spares: &Receiver<Spare>,
    recycle: &Sender<Filling>,
) {
    let id = w.id;
    w.engine.on_this_thread();
    // the output so far to the writer, complete up to `done`
    let hand_over = |out: &mut Output, done: Key| {
        let out = out.take(spares.try_recv().ok());
        let msg = ToWriter::Out {
            worker: id,
            done,
            out,
        };
        to_writer.send(msg).is_ok()
    };
    let mut held = 0;
    for mut b in rx.iter() {
        room.taken(rx.len());
        let origin = Origin {
            pcap_file: b.origin.as_ref(),
        };
        let depth = rx.len();
        let items = &b.work.items;
        for (i, item) in items.iter().enumerate() {
            if let Work::Finish { seq } = item {
                // in parts, each handed over as made (the last with the
                // batch), complete up to the part's last flow
                w.out.seq = *seq;
                let hand = |out: &mut Output, upto: Option<u64>| {
                    let done = match upto {
                        Some(flow) => Key { seq: *seq, flow },
                        None => Key::whole(seq.saturating_sub(1)),
                    };
                    hand_over(out, done);
                };
                w.engine.finish_in_parts(origin, &mut w.out, hand);
                continue;
            }
            // the reader touched the packets a few ahead on its own core:
            // bring their first bytes (the headers decode reads) to this one
            if let Some(Work::Packet { pkt, .. }) = items.get(i + AHEAD) {
                if let Some(buf) = b.work.bufs.get(pkt.data.buf as usize) {
                    prefetch(buf, pkt.data.start);
                    prefetch(buf, pkt.data.start + 64);
                }
            }
            w.run(item, &b.work.bufs, origin, depth);
        }
        let mut send = |w: &mut Worker, done: u64| hand_over(&mut w.out, Key::whole(done));
        // Each hand-over may wake the writer (a system call, and on a virtual
        // machine an interrupt to another core): hand over every few batches
        // while more wait, and at once when the queue has run dry (live
        // capture's latency, the last batch) or a file is to be walked.
        held += 1;
        if held >= HAND_OVER || rx.is_empty() || b.walk.is_some() {
            held = 0;
            if !send(w, b.horizon) {
                break;
            }
        }
        if let Some(job) = b.walk.as_mut() {
            let error = walk(w, job, origin, &mut send);
            let seq = job.seq.clone();
            let _ = job.reply.send(Walked { seq, error });
        }
        // the vectors, emptied, back to the dispatcher
        b.work.clear();
        let _ = recycle.try_send(b.work);
    }
}

/// Walks the file of `walk` as worker `w.id` of `w.workers`; `send` hands the
/// output so far to the writer with the number everything up to which is
/// done. Returns the numbering after the file and the error that stopped it.
pub(super) fn walk(
    w: &mut Worker,
    walk: &mut Walk,
    origin: Origin<'_>,
    mut send: impl FnMut(&mut Worker, u64) -> bool,
) -> Option<CaptureError> {
    let data = walk.reader.data().clone();
    let seq = &mut walk.seq;
    let mut since = 0usize;
    let error = loop {
        let pkt = match walk.reader.next_range() {
            None => break None,
            Some(Err(e)) => break Some(e),
            Some(Ok(p)) => p,
        };
        if let Some((now, reset)) = seq.advance(pkt.ts) {
            let s = seq.next();
            w.run(&Work::Tick { seq: s, now, reset }, &[], origin, 0);
        }
        let s = seq.next();
        // out of bounds (never, from our reader): an empty frame, counted as such
        let bytes = data.get(pkt.data.clone()).unwrap_or_default();
        if worker_of(pkt.linktype, bytes, w.workers) == w.id {
            w.packet((s, seq.now), &pkt.with_data(bytes), None, origin);
        }
        since += 1;
        if since.is_multiple_of(BATCH) {
            if since >= BATCH * HAND_OVER {
                since = 0;
                if !send(w, s) {
                    break None;
                }
            }
            if w.id == 0 {
                let at = walk.reader.position();
                walk.progress.position.store(at, Ordering::Relaxed);
            }
            if walk.progress.reached(w.id, s) {
                w.engine.counters.walk_waits += 1;
            }
        }
    };
    send(w, seq.seq);
    walk.progress.leave(w.id);
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A worker more than [`LEAD`] ahead of the slowest waits for it, and
    /// one that has left waits for nobody.
    #[test]
    fn a_worker_waits_while_too_far_ahead() {
        let p = Arc::new(Progress::new(2, 0));
        let through = Arc::new(AtomicBool::new(false));
        let ahead = {
            let (p, through) = (Arc::clone(&p), Arc::clone(&through));
            std::thread::spawn(move || {
                let waited = p.reached(0, 3 * LEAD);
                through.store(true, Ordering::SeqCst);
                waited
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!through.load(Ordering::SeqCst), "ran 3 LEAD ahead");
        p.reached(1, LEAD);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!through.load(Ordering::SeqCst), "still 2 LEAD ahead");
        p.reached(1, 2 * LEAD);
        // it went on, and says it waited (counted in `walk_waits`)
        assert!(ahead.join().expect("the worker ahead goes on"));
        assert!(through.load(Ordering::SeqCst));
        // one within LEAD does not wait
        assert!(!p.reached(1, 3 * LEAD));
        // a worker that has left (its walk over, or a panic) holds no one back
        p.leave(1);
        assert!(goes_on(&p, 0, 100 * LEAD));
    }

    /// Does worker `id` reaching `seq` go on within five seconds?
    fn goes_on(p: &Arc<Progress>, id: usize, seq: u64) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let p = Arc::clone(p);
        std::thread::spawn(move || {
            p.reached(id, seq);
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(5)).is_ok()
    }

    /// A walk that is never walked (its worker gone before it came) holds
    /// no one back either: dropping it is leaving.
    #[test]
    fn a_walk_dropped_unwalked_releases_the_others() {
        let p = Arc::new(Progress::new(2, 0));
        let mut header = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        header.extend_from_slice(&[0; 8]);
        header.extend_from_slice(&[0xff, 0xff, 0, 0, 1, 0, 0, 0]);
        let reader = FileReader::from_bytes("empty.pcap".into(), header.into()).expect("a pcap");
        let (reply, _replies) = crossbeam_channel::bounded(1);
        drop(Walk {
            id: 1,
            reader,
            seq: Sequencer::default(),
            progress: Arc::clone(&p),
            reply,
        });
        assert!(goes_on(&p, 0, 100 * LEAD));
    }
}
