//! A worker's queue of batches, whose room is signalled in halves.
//!
//! Offline, the dispatcher outruns a busy worker and waits for room in its
//! queue. A channel wakes a waiting sender at every batch taken, so the two
//! threads would take turns a batch at a time, each turn a wake-up (a system
//! call, and on a virtual machine an interrupt to the other core). Here the
//! dispatcher waits until the queue is down to half, and is woken once for
//! those batches.

use std::sync::atomic::{fence, AtomicBool, Ordering};
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

    /// Waits until the queue is down to half, or [`MAX_WAIT`].
    fn wait_for_room(&self) {
        let room = &self.room;
        let mut held = room.lock.lock().unwrap_or_else(|e| e.into_inner());
        room.waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let until = Instant::now() + MAX_WAIT;
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
    /// half of it, and is woken once for those batches.
    #[test]
    fn a_full_queue_waits_for_half_and_loses_nothing() {
        let (tx, rx) = crossbeam_channel::bounded::<Batch>(QUEUE);
        let q = Queue {
            tx,
            room: Arc::new(Room::default()),
        };
        let room = Arc::clone(&q.room);
        let total = QUEUE * 40;
        let worker = std::thread::spawn(move || {
            let mut got = 0;
            let mut lengths = Vec::new();
            for _ in rx.iter() {
                room.taken(rx.len());
                got += 1;
                lengths.push(rx.len());
                // slower than the dispatcher: the queue fills
                std::thread::sleep(Duration::from_micros(200));
            }
            (got, lengths)
        });
        for _ in 0..total {
            assert!(q.send(batch()));
        }
        drop(q);
        let (got, lengths) = worker.join().expect("worker");
        assert_eq!(got, total, "every batch arrives");
        // while the dispatcher still sends, it refills only from half: the
        // worker sees the queue down to half, not only full minus one
        let sending = &lengths[..total - QUEUE];
        assert!(sending.iter().any(|&l| l <= LOW), "{lengths:?}");
    }

    /// A worker gone: the dispatcher is told, after at most the bounded wait.
    #[test]
    fn a_gone_worker_is_noticed() {
        let (tx, rx) = crossbeam_channel::bounded::<Batch>(1);
        let q = Queue {
            tx,
            room: Arc::new(Room::default()),
        };
        assert!(q.send(batch()));
        drop(rx);
        assert!(!q.send(batch()));
    }
}
