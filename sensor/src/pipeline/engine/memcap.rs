//! The reassembly memory cap: the streams of all the engine's flows hold at
//! most [`EngineConfig::stream_memcap`](super::EngineConfig) heap bytes
//! (256 MiB by default for all workers together, Suricata's default
//! `stream.reassembly.memcap`).
//!
//! Each direction is bounded on its own (128 KiB in order, 128 KiB out of
//! order, 8 KiB of first bytes and as much again for another copy of them).
//! Without a bound on the sum, a host that opens tens of thousands of
//! connections, each leaving a gap, would make the sensor hold gigabytes.
//! Over the cap, the flows holding the most are let go, largest first, until
//! the streams hold three quarters of it: their analyzers stop and they are
//! bypassed (a ClientHello read and not logged yet is still logged when the
//! flow ends), counted in `stats.stream_memcap_shed`. Largest first: a
//! connection reading its handshake holds a few KiB, the flows that fill
//! the memory hundreds.

use super::{let_go, recount, Engine};
use crate::flow::{Dir, FlowKey};

/// All workers' streams together, by default.
pub const DEFAULT_STREAM_MEMCAP: usize = 256 << 20;

impl Engine {
    /// Lets the flows holding the most stream memory go until the streams
    /// hold three quarters of the cap.
    pub(super) fn shed_streams(&mut self) {
        let target = self.cfg.stream_memcap / 4 * 3;
        let mut big: Vec<(usize, u64, FlowKey)> = (self.flows.iter())
            .map(|f| (f.data.stream_memory(), f.id, f.key))
            .filter(|(held, _, _)| *held > 0)
            .collect();
        // the same choice in every run: by size, then by flow id and key
        big.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        for (_, _, key) in big {
            if self.stream_memory <= target {
                break;
            }
            let Some(f) = self.flows.get_mut(&key) else {
                continue;
            };
            let held = f.data.stream_memory();
            if let Some(a) = f.data.analyzers_mut() {
                a.stop(Dir::ToServer);
                a.stop(Dir::ToClient);
            }
            let_go(&mut f.data);
            recount(&mut self.stream_memory, held, &f.data);
            self.counters.stream_memcap_shed += 1;
        }
    }
}
