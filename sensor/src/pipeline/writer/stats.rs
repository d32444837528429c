//! The writer's counters and `stats` events.

use super::{StatsRequest, Writer};
use crate::sink::Sink;
use crate::stats::{Counters, Latency, StatsEvent, WorkerStats};

impl<W: Sink> Writer<W> {
    /// Every worker's last report, summed, with the writer's own counts.
    pub fn counters(&self) -> Counters {
        let mut c = Counters::default();
        for r in self.reports.iter().flatten() {
            c.add(&r.counters);
        }
        c.alerts = self.counters.alerts;
        c.sanctioned = self.counters.sanctioned;
        c.alerts_held = self.verdicts.held;
        c.tls_legs = self.legs.stats();
        c.certificates_logged = self.certs.logged;
        c.certificates_forgotten = self.certs.evicted;
        c
    }

    /// Each worker's share as of its last report, with its queue drops.
    pub fn worker_stats(&self, dropped: &[u64]) -> Vec<WorkerStats> {
        self.reports
            .iter()
            .enumerate()
            .map(|(i, r)| WorkerStats {
                worker: i,
                packets: r.as_ref().map_or(0, |r| r.counters.packets),
                bytes: r.as_ref().map_or(0, |r| r.counters.bytes),
                flows_active: r.as_ref().map_or(0, |r| r.counters.flows_active),
                queue_depth: r.as_ref().map_or(0, |r| r.queue_depth),
                queue_dropped: dropped.get(i).copied().unwrap_or(0),
            })
            .collect()
    }

    pub(super) fn stats(&self, req: &StatsRequest) -> StatsEvent {
        let mut hist: Option<hdrhistogram::Histogram<u64>> = None;
        for h in self
            .reports
            .iter()
            .flatten()
            .filter_map(|r| r.latency.as_deref())
        {
            match &mut hist {
                Some(acc) => {
                    let _ = acc.add(h);
                }
                None => hist = Some(h.clone()),
            }
        }
        StatsEvent {
            uptime: req.uptime,
            interfaces: req.interfaces.clone(),
            queue_depth: req.queue_depth,
            workers: self.worker_stats(&req.worker_dropped),
            counters: self.counters(),
            latency_ns: hist.as_ref().map(Latency::of).unwrap_or_default(),
            events_written: self.written,
            events_lost: self.errors,
            outputs: self.out.outputs(),
            alerts_suppressed: self.suppressed(),
            ledger_store: self.store_stats(),
        }
    }
}
