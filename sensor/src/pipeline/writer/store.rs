//! The writer's side of the persistent ledger: it goes on from the stored
//! periods, hands its changes to the store thread without waiting, and
//! takes back the merged intervals (other sensors', earlier runs').

use crossbeam_channel::TrySendError;

use super::Writer;
use crate::ledger::{Link, Msg};
use crate::sink::Sink;
use crate::stats::LedgerStoreStats;
use crate::time::Timestamp;

impl<W: Sink> Writer<W> {
    /// From now on the ledger is kept in the store `link` leads to; it
    /// starts from the store's latest period of each (host, tool).
    pub(super) fn attach_store(&mut self, link: Link) {
        let ledger = &mut self.verdicts.ledger;
        ledger.persist();
        ledger.restore(link.restored.as_ref().clone());
        self.store = Some(link);
    }

    /// Hands what changed to the store (a full channel keeps it for the
    /// next time), and applies the merged intervals that came back.
    pub(super) fn sync_store(&mut self) {
        let Some(link) = &self.store else { return };
        let ledger = &mut self.verdicts.ledger;
        while let Ok(m) = link.merged.try_recv() {
            ledger.merged(m.host, &m.tool, m.first_seen, m.last_seen);
        }
        // a full channel (the store is behind): the changes stay where they
        // are, merged with what follows, and cost nothing until there is room
        if !ledger.has_updates() || link.tx.is_full() {
            return;
        }
        match link.tx.try_send(Msg::Updates(ledger.take_updates())) {
            Ok(()) => {}
            Err(TrySendError::Full(Msg::Updates(v))) => ledger.untake(v),
            Err(e) => {
                if let Msg::Updates(v) = e.into_inner() {
                    ledger.updates_dropped += v.len() as u64;
                }
            }
        }
    }

    /// The capture time the sensor has got to (for the audit's "still
    /// active?" and for retention).
    pub(super) fn observed(&mut self, at: Timestamp) {
        self.observed_until = self.observed_until.max(at);
        if let Some(link) = &self.store {
            let _ = link.tx.try_send(Msg::Observed(at));
        }
    }

    /// Updates the writer could not hand to the store.
    pub fn store_dropped(&self) -> u64 {
        self.verdicts.ledger.updates_dropped
    }

    pub(super) fn store_stats(&self) -> Option<LedgerStoreStats> {
        let link = self.store.as_ref()?;
        let mut s = link.counters.stats(&link.database);
        s.updates_dropped += self.verdicts.ledger.updates_dropped;
        Some(s)
    }

    /// Hands the last changes over (waiting for room) and lets the store
    /// finish: call at the end of the run, before `Store::finish`.
    pub fn close_store(&mut self) {
        let Some(link) = self.store.take() else {
            return;
        };
        let ledger = &mut self.verdicts.ledger;
        if ledger.has_updates() {
            let v = ledger.take_updates();
            let n = v.len() as u64;
            if link.tx.send(Msg::Updates(v)).is_err() {
                ledger.updates_dropped += n;
            }
        }
        // how far the run got, surely (retention and the audit's "still
        // active" rest on it)
        let _ = link.tx.send(Msg::Observed(self.observed_until));
    }
}
