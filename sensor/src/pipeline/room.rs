//! A worker's queue of batches, whose room is signalled in halves.
//!
//! Offline, the dispatcher outruns a busy worker and waits for room in its
//! queue. A channel wakes a waiting sender at every batch taken, so the two
//! threads would take turns a batch at a time, each turn a wake-up (a system
//! call, and on a virtual machine an interrupt to the other core). Here the
//! dispatcher waits until the queue is down to half, and is woken once for
//! those batches.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use super::{Batch, QUEUE};

/// The longest a dispatcher waits to be told of room before it waits as a
/// channel sender does (a lost wake-up costs this much, never a hang).
const MAX_WAIT: Duration = Duration::from_millis(10);

/// How full a queue may be for a waiting dispatcher to be woken.
const LOW: usize = QUEUE / 2;

/// The worker's side: what it tells the dispatcher.
#[derive(Default)]
pub(super) struct Room {
    waiting: AtomicBool,
    lock: Mutex<()>,
    woken: Condvar,
    /// Times the dispatcher waited for room.
    waits: AtomicU64,
}

impl Room {
    /// The worker has taken a batch and `left` remain: wakes a dispatcher
    /// waiting for room once the queue is down to half.
    pub fn taken(&self, left: usize) {
        // pairs with the dispatcher's: it says it waits, then looks at the
        // queue; this took a batch, then looks whether it waits
        fence(Ordering::SeqCst);
        if left <= LOW && self.waiting.load(Ordering::Relaxed) {
            let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.woken.notify_one();
        }
    }
}

/// The dispatcher's side of one worker's queue.
pub(super) struct Queue {
    pub tx: Sender<Batch>,
    pub room: Arc<Room>,
    /// The longest wait to be told of room ([`MAX_WAIT`]).
    pub max_wait: Duration,
}

impl Queue {
    pub fn new(tx: Sender<Batch>, room: Arc<Room>) -> Self {
        Queue {
            tx,
            room,
            max_wait: MAX_WAIT,
        }
    }
}

impl Queue {
    /// Sends `b`, waiting while the queue is full (offline: nothing is
    /// dropped). False once the worker is gone.
    pub fn send(&self, b: Batch) -> bool {
        match self.tx.try_send(b) {
            Ok(()) => true,
            Err(TrySendError::Full(b)) => {
                self.wait_for_room();
                self.tx.send(b).is_ok()
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Waits until the queue is down to half, or `max_wait`.
    fn wait_for_room(&self) {
        let room = &self.room;
        room.waits.fetch_add(1, Ordering::Relaxed);
        let mut held = room.lock.lock().unwrap_or_else(|e| e.into_inner());
        room.waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let until = Instant::now() + self.max_wait;
        while self.tx.len() > LOW {
            let now = Instant::now();
            if now >= until {
                break;
            }
            held = match room.woken.wait_timeout(held, until - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        room.waiting.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Filling;

    fn batch() -> Batch {
        Batch {
            origin: None,
            work: Filling::with_capacity(0),
            horizon: 0,
            walk: None,
        }
    }

    /// A dispatcher that fills the queue waits until a worker has taken
    /// half of it, and is woken then: with the bounded wait made long, the
    /// batches still flow at the worker's pace (a lost wake-up would cost
    /// the whole wait), and the dispatcher waits about once per half queue,
    /// not once per batch.
    #[test]
    fn a_full_queue_waits_for_half_and_is_woken() {
        let (tx, rx) = crossbeam_channel::bounded::<Batch>(QUEUE);
        let mut q = Queue::new(tx, Arc::new(Room::default()));
        q.max_wait = Duration::from_secs(5);
        let room = Arc::clone(&q.room);
        let total = QUEUE * 20;
        let worker = std::thread::spawn(move || {
            // the dispatcher fills the queue first
            std::thread::sleep(Duration::from_millis(20));
            let mut got = 0;
            for _ in rx.iter() {
                room.taken(rx.len());
                got += 1;
                // slower than the dispatcher: the queue stays full
                std::thread::sleep(Duration::from_micros(100));
            }
            got
        });
        let started = Instant::now();
        for _ in 0..total {
            assert!(q.send(batch()));
        }
        let took = started.elapsed();
        let waits = q.room.waits.load(Ordering::Relaxed) as usize;
        drop(q);
        assert_eq!(worker.join().expect("worker"), total, "every batch arrives");
        assert!(
            took < Duration::from_secs(3),
            "woken, not timed out: {took:?}"
        );
        // each wait lets half a queue in; woken at every batch taken, it
        // would wait once per batch
        let most = (total - QUEUE) / (QUEUE / 2) + 4;
        assert!((1..=most).contains(&waits), "{waits} waits, at most {most}");
    }

    /// A worker gone while the dispatcher waits: the send fails after the
    /// bounded wait, never hangs.
    #[test]
    fn a_worker_gone_during_the_wait_is_noticed() {
        let (tx, rx) = crossbeam_channel::bounded::<Batch>(1);
        let mut q = Queue::new(tx, Arc::new(Room::default()));
        q.max_wait = Duration::from_millis(200);
        assert!(q.send(batch()));
        let worker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(rx);
        });
        let started = Instant::now();
        assert!(!q.send(batch()), "the worker is gone");
        assert!(started.elapsed() < Duration::from_secs(2));
        worker.join().expect("worker");
        // and one gone before: at once
        assert!(!q.send(batch()));
    }
}
