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
        if !ledger.has_updates() {
            return;
        }
        match link.tx.try_send(Msg::Updates(ledger.take_updates())) {
            Ok(()) => {}
            Err(TrySendError::Full(Msg::Updates(v))) => ledger.untake(v),
            Err(_) => ledger.updates_dropped += 1,
        }
    }

    /// The capture time the sensor has got to (for the audit's "still
    /// active?" and for retention).
    pub(super) fn observed(&mut self, at: Timestamp) {
        if let Some(link) = &self.store {
            let _ = link.tx.try_send(Msg::Observed(at));
        }
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
        if ledger.has_updates() && link.tx.send(Msg::Updates(ledger.take_updates())).is_err() {
            ledger.updates_dropped += 1;
        }
    }
}
