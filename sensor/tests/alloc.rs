//! The steady-state per-packet path allocates nothing: once a flow is bypassed
//! (its handshake read, or found not to be a protocol we follow), its packets
//! cost decode + flow lookup + counters, with no heap allocation; and the
//! threaded pipeline around the engine allocates per batch at most, never per
//! packet.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use etherparse::PacketBuilder;
use spanwatch::capture::{LinkType, Packet};
use spanwatch::pipeline::engine::{Engine, EngineConfig, Origin};
use spanwatch::pipeline::output::Output;
use spanwatch::pipeline::{Pipeline, Settings, BATCH};
use spanwatch::time::Timestamp;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated and not yet freed.
static LIVE: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(l.size() as u64, Ordering::Relaxed);
        // SAFETY: forwards to the system allocator with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
        // SAFETY: `p` came from `System.alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(n as u64, Ordering::Relaxed);
        LIVE.fetch_sub(l.size() as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The count is process-wide: one test at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

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

/// A TCP connection to a port spanwatch follows, carrying a protocol it does
/// not: probed a few times, then bypassed. `n` packets after the handshake.
fn bypassed_flow(n: u64) -> Vec<Packet> {
    let mut pkts = vec![
        frame(true, 100, 0, "S", &[], 1),
        frame(false, 500, 101, "SA", &[], 2),
        frame(true, 101, 501, "A", &[], 3),
    ];
    // a protocol spanwatch does not follow: probed a few times, then bypassed
    let junk = [0x42u8; 1400];
    let (c, mut s) = (101u32, 501u32);
    for i in 0..n {
        if i % 2 == 0 {
            pkts.push(frame(false, s, c, "A", &junk, 4 + i));
            s = s.wrapping_add(junk.len() as u32);
        } else {
            pkts.push(frame(true, c, s, "A", &[], 4 + i));
        }
    }
    pkts
}

#[test]
fn bypassed_flow_packets_allocate_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pkts = bypassed_flow(2000);
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

/// An idle flow (a SYN nobody answered, what a flood is made of) costs at
/// most 512 bytes of heap in the flow table: the flow, its bucket, its
/// deadline, its community id; measured over a full table, every flow's
/// slot as the table holds it.
#[test]
fn an_idle_flow_costs_at_most_512_bytes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let n = spanwatch::flow::DEFAULT_MAX_FLOWS as u64;
    let syns: Vec<Packet> = (0..n)
        .map(|i| {
            let mut p = frame(true, 100, 0, "S", &[], i);
            // a client of its own per flow: 10.64.x.y
            let v = p.data.to_vec();
            let mut v = v;
            v[26..30].copy_from_slice(&[10, 64, (i >> 8) as u8, i as u8]);
            v[24..26].copy_from_slice(&[0, 0]); // the IP checksum is not checked
            p.data = Bytes::from(v);
            p
        })
        .collect();
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Output::default();
    let before = LIVE.load(Ordering::Relaxed);
    for p in &syns {
        engine.process(&p.view(), p.ts, Origin::default(), &mut out);
    }
    engine.sync_counters();
    let used = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    assert_eq!(engine.counters.flows_active, n);
    let per_flow = used / n;
    eprintln!("an idle flow: {per_flow} bytes ({used} for {n} flows)");
    assert!(
        per_flow <= 512,
        "{per_flow} bytes a flow ({used} for {n} flows)"
    );
}

#[test]
fn the_pipeline_allocates_per_batch_not_per_packet() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // every frame in one buffer, as a mapped capture file hands them out
    let pkts = bypassed_flow(60_000);
    let mut all = Vec::new();
    let ranged: Vec<Packet<std::ops::Range<usize>>> = pkts
        .iter()
        .map(|p| {
            let start = all.len();
            all.extend_from_slice(&p.data);
            p.with_data(start..all.len())
        })
        .collect();
    let buf = Bytes::from(all);
    let settings = Settings {
        workers: 2,
        engine: EngineConfig::default(),
        types: Default::default(),
        live: false,
        latency: false,
        defer: None,
        decode_ahead: None,
    };
    let mut p = Pipeline::start(settings, std::io::sink()).expect("threads start");
    // enough batches for the queues' vectors to be coming back for reuse
    let (warm, steady) = ranged.split_at(20 * BATCH);
    for pkt in warm {
        p.packet_in(&buf, pkt.clone());
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for pkt in steady {
        p.packet_in(&buf, pkt.clone());
    }
    p.flush();
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    p.end_flows();
    let w = p.close();
    assert_eq!(w.counters().packets, pkts.len() as u64);
    assert!(w.counters().bypassed_packets >= steady.len() as u64);
    let batches = steady.len() / BATCH;
    assert!(
        allocs < steady.len() as u64 / 100,
        "{allocs} allocations over {} steady-state packets ({batches} batches)",
        steady.len()
    );
}
