//! The reassembly memory cap: the streams of all the engine's flows, and the
//! HTTP requests they hold waiting for their response, take at most
//! [`EngineConfig::stream_memcap`](super::EngineConfig) heap bytes (256 MiB
//! by default for all workers together, Suricata's default
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
//! the memory hundreds. A flow let go logs the HTTP requests it was
//! holding at once, without their response (as at the flow's end).
//!
//! A flow may hold up to 64 parsed requests waiting for responses (pipelined,
//! or a capture that sees one direction only), each up to a few KiB: without
//! them in the count, tens of thousands of such flows would hold gigabytes
//! beside the capped streams.

use super::emit::Emit;
use super::{let_go, recount, Engine, Origin};
use crate::flow::{Dir, FlowKey};
use crate::pipeline::output::Output;

/// All workers' streams together, by default.
pub const DEFAULT_STREAM_MEMCAP: usize = 256 << 20;

impl Engine {
    /// Lets the flows holding the most stream memory go until the streams
    /// hold three quarters of the cap; the HTTP requests they held are
    /// logged now.
    pub(super) fn shed_streams(&mut self, origin: Origin<'_>, out: &mut Output) {
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
            let mut em = Emit {
                rules: &self.cfg.rules,
                site: &self.cfg.site,
                origin,
                out: &mut *out,
                counters: &mut self.counters,
                precheck: &mut self.precheck,
            };
            em.unanswered(f);
            // nothing reads the flow's HTTP state again (it is bypassed):
            // it goes, and with it the analyzers when nothing else is left
            if let Some(a) = f.data.analyzers_mut() {
                a.http = None;
            }
            let_go(&mut f.data);
            recount(&mut self.stream_memory, held, &f.data);
            self.counters.stream_memcap_shed += 1;
        }
    }
}
