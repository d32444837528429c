//! The steady-state per-packet path allocates nothing: once a flow is bypassed
//! (its handshake read, or found not to be a protocol we follow), its packets
//! cost decode + flow lookup + counters, with no heap allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use etherparse::PacketBuilder;
use spanwatch::capture::{LinkType, Packet};
use spanwatch::engine::{Engine, EngineConfig, Origin};
use spanwatch::output::Output;
use spanwatch::time::Timestamp;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwards to the system allocator with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn frame(from_client: bool, seq: u32, ack: u32, flags: &str, payload: &[u8], i: u64) -> Packet {
    let (s, d, sp, dp) = if from_client {
        ([10, 1, 0, 5], [198, 51, 100, 7], 40000, 443)
    } else {
        ([198, 51, 100, 7], [10, 1, 0, 5], 443, 40000)
    };
    let mut b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(s, d, 64)
        .tcp(sp, dp, seq, 65535);
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('A') {
        b = b.ack(ack);
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("frame");
    Packet {
        ts: Timestamp(1_700_000_000_000_000_000 + i as i64 * 100_000),
        linktype: LinkType::ETHERNET,
        orig_len: v.len() as u32,
        data: Bytes::from(v),
        frame: i,
    }
}

#[test]
fn bypassed_flow_packets_allocate_nothing() {
    let mut pkts = vec![
        frame(true, 100, 0, "S", &[], 1),
        frame(false, 500, 101, "SA", &[], 2),
        frame(true, 101, 501, "A", &[], 3),
    ];
    // a protocol spanwatch does not follow: probed a few times, then bypassed
    let junk = [0x42u8; 1400];
    let (c, mut s) = (101u32, 501u32);
    for i in 0..2000u64 {
        if i % 2 == 0 {
            pkts.push(frame(false, s, c, "A", &junk, 4 + i));
            s = s.wrapping_add(junk.len() as u32);
        } else {
            pkts.push(frame(true, c, s, "A", &[], 4 + i));
        }
    }
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Output::default();
    let (warm, steady) = pkts.split_at(200);
    for p in warm {
        engine.process(&p.view(), p.ts, Origin::default(), &mut out);
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for p in steady {
        engine.process(&p.view(), p.ts, Origin::default(), &mut out);
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert!(
        engine.counters.bypassed_packets >= steady.len() as u64,
        "{:?}",
        engine.counters
    );
    assert_eq!(
        allocs,
        0,
        "{allocs} allocations over {} steady-state packets",
        steady.len()
    );
}
