//! `certificate` events: each distinct certificate is logged once, the first
//! time a handshake shows it, and again when it shows up more than
//! `[events] certificate_relog` (24 h of capture time) after it was last
//! logged, as Zeek's known-certificates cache does. Decided here, in input
//! order, so the events are the same for every number of workers. The
//! cache is bounded: the oldest entry goes first (and its certificate is
//! logged again when next seen), counted.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::Writer;
use crate::analyzer::tls::cert::CertInfo;
use crate::event::Event;
use crate::sink::Sink;
use crate::time::{Duration, Timestamp};

/// Certificates remembered at most.
pub const CERT_LOG_CAPACITY: usize = 65_536;
/// Default re-log interval.
pub const DEFAULT_RELOG: Duration = Duration(86_400 * 1_000_000_000);

#[derive(Debug, Default)]
pub(super) struct CertLog {
    /// SHA-256 → when it was last logged.
    last: HashMap<String, Timestamp, ahash::RandomState>,
    /// In the order first remembered (oldest first out).
    order: VecDeque<String>,
    pub logged: u64,
    pub evicted: u64,
}

impl CertLog {
    /// Whether `c` is to be logged now; remembers that it was.
    fn due(&mut self, c: &CertInfo, at: Timestamp, relog: Duration) -> bool {
        if let Some(t) = self.last.get_mut(&c.sha256) {
            if at.0 >= t.0.saturating_add(relog.0) {
                *t = at;
                return true;
            }
            return false;
        }
        if self.last.len() >= CERT_LOG_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.last.remove(&old);
                self.evicted += 1;
            }
        }
        self.last.insert(c.sha256.clone(), at);
        self.order.push_back(c.sha256.clone());
        true
    }
}

impl<W: Sink> Writer<W> {
    /// Logs the certificates of one handshake not logged lately.
    pub(super) fn certificates(&mut self, flow: u64, at: Timestamp, certs: &[Arc<CertInfo>]) {
        let relog = self
            .site
            .events
            .certificate_relog
            .map_or(DEFAULT_RELOG, |d| d.0);
        let site = Arc::clone(&self.site);
        for c in certs {
            if !self.certs.due(c, at, relog) {
                continue;
            }
            self.certs.logged += 1;
            let e = Event {
                timestamp: at,
                flow_id: Some(flow),
                sensor: site.sensor_name(),
                event_type: "certificate",
                certificate: Some(c.json()),
                ..Default::default()
            };
            self.emit(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(n: u8) -> CertInfo {
        CertInfo {
            sha256: format!("{n:02x}"),
            ..Default::default()
        }
    }

    #[test]
    fn once_then_again_after_the_relog_interval() {
        let mut l = CertLog::default();
        let day = DEFAULT_RELOG;
        assert!(l.due(&cert(1), Timestamp(0), day));
        assert!(!l.due(&cert(1), Timestamp(day.0 - 1), day));
        assert!(l.due(&cert(1), Timestamp(day.0), day));
        assert!(!l.due(&cert(1), Timestamp(day.0 + 5), day));
        assert!(l.due(&cert(2), Timestamp(5), day));
    }

    #[test]
    fn bounded_oldest_first() {
        let mut l = CertLog::default();
        for i in 0..CERT_LOG_CAPACITY + 3 {
            let c = CertInfo {
                sha256: i.to_string(),
                ..Default::default()
            };
            assert!(l.due(&c, Timestamp(0), DEFAULT_RELOG));
        }
        assert_eq!(l.evicted, 3);
        assert_eq!(l.last.len(), CERT_LOG_CAPACITY);
        // the first ones were forgotten: logged again when next seen
        let first = CertInfo {
            sha256: "0".into(),
            ..Default::default()
        };
        assert!(l.due(&first, Timestamp(1), DEFAULT_RELOG));
    }
}
