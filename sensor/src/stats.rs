//! Counters: what the sensor saw, parsed, skipped and dropped.

use serde::Serialize;

use crate::decode::DecodeError;

/// Per-engine counters (summed across workers for reporting).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub decode_unknown_linktype: u64,
    pub decode_not_ip: u64,
    pub decode_truncated: u64,
    pub decode_malformed: u64,
    pub fragments: u64,
    pub fragments_reassembled: u64,
    pub fragments_dropped: u64,
    pub flows_created: u64,
    pub flows_timed_out: u64,
    pub flows_evicted: u64,
    pub flows_active: u64,
    pub bypassed_packets: u64,
    pub stream_gaps: u64,
    /// Directions that hit a reassembly cap (bytes or out-of-order segments).
    pub stream_overflows: u64,
    /// Segments that carried only data already seen.
    pub stream_retransmissions: u64,
    /// Bytes reassembly holds now (gauge).
    pub reassembly_bytes_held: u64,
    /// Heap bytes all streams hold now, buffers' room included, with the
    /// HTTP requests waiting for their response (gauge; the reassembly
    /// memory cap bounds it).
    pub stream_memory: u64,
    /// Flows whose streams were let go at the reassembly memory cap (their
    /// analyzers stopped, largest first; their waiting HTTP requests
    /// logged then).
    pub stream_memcap_shed: u64,
    pub tls_client_hellos: u64,
    pub tls_certificate_msgs: u64,
    pub tls_malformed: u64,
    pub certs_parsed: u64,
    pub cert_cache_hits: u64,
    pub certs_malformed: u64,
    pub dns_packets: u64,
    pub dns_malformed: u64,
    pub http_transactions: u64,
    /// TCP bytes seen twice with different content (a decoy copy, or a
    /// broken sender): the sensor read both versions.
    pub stream_overlap_conflicts: u64,
    /// TCP segments with payload whose checksum is wrong (a decoy meant to
    /// die at the receiver, or a capture on a host whose NIC sums outgoing
    /// packets); counted, still read.
    pub tcp_checksum_bad: u64,
    /// HTTP transactions read and matched but not logged (a flow's log is
    /// bounded; those a signature may match are always logged).
    pub http_unlogged: u64,
    /// The QUIC analyzer's counters.
    pub quic: QuicCounters,
    pub events_tls: u64,
    pub events_quic: u64,
    pub events_flow: u64,
    /// Alerts by severity: 1, 2, 3, 4.
    pub alerts: [u64; 4],
    /// Events that matched a signature but were allow-listed.
    pub sanctioned: u64,
    /// Alerts not raised, by reason (the verdict stage's).
    pub alerts_held: Held,
    /// The leg correlation's (the verdict stage's).
    pub tls_legs: LegStats,
    /// `certificate` events written, and certificates the writer's bounded
    /// cache forgot (logged again when next seen).
    pub certificates_logged: u64,
    pub certificates_forgotten: u64,
    /// Times one of a worker's fingerprint memos (JA3, JA3S, JA4 by hello;
    /// JA4's list digests) was full and started afresh (many distinct
    /// hellos: each costs its fingerprints again).
    pub fingerprint_memo_resets: u64,
    /// Handshakes whose rule pre-check (could a signature match?) a
    /// worker's memo answered, and times that memo was full and started
    /// afresh (see `detect::precheck`).
    pub precheck_memo_hits: u64,
    pub precheck_memo_resets: u64,
    /// Times a worker reading the file itself waited for a slower one (it
    /// was `walk::LEAD` records ahead): the work is unevenly shared.
    pub walk_waits: u64,
}

/// What the QUIC analyzer counted (the `quic` object of `stats`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuicCounters {
    /// Long-header packets looked at.
    pub packets: u64,
    pub initials_opened: u64,
    pub client_hellos: u64,
    pub server_hellos: u64,
    /// Initial packets that did not open with the keys the sensor had.
    pub decrypt_failed: u64,
    /// Headers or frames cut short or impossible, hellos that do not parse.
    pub malformed: u64,
    /// CRYPTO data beyond its bound (absurd offsets, too many pieces).
    pub crypto_out_of_bounds: u64,
    /// CRYPTO bytes that arrived again with different content.
    pub crypto_conflicts: u64,
    /// Flows that reached the bound on Initial packets opened.
    pub initial_limit: u64,
    pub short_header: u64,
    pub unknown_version: u64,
    pub version_negotiation: u64,
    pub retry: u64,
}

impl QuicCounters {
    pub fn add(&mut self, o: &QuicCounters) {
        self.packets += o.packets;
        self.initials_opened += o.initials_opened;
        self.client_hellos += o.client_hellos;
        self.server_hellos += o.server_hellos;
        self.decrypt_failed += o.decrypt_failed;
        self.malformed += o.malformed;
        self.crypto_out_of_bounds += o.crypto_out_of_bounds;
        self.crypto_conflicts += o.crypto_conflicts;
        self.initial_limit += o.initial_limit;
        self.short_header += o.short_header;
        self.unknown_version += o.unknown_version;
        self.version_negotiation += o.version_negotiation;
        self.retry += o.retry;
    }
}

/// What the leg correlation counted (the `tls_legs` object of `stats`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LegStats {
    /// ClientHellos looked at.
    pub hellos: u64,
    /// Hellos held now (gauge; bounded by `verdict::legs::MAX_HELLOS`).
    pub held: u64,
    /// Hellos dropped before their window ended (the bounds).
    pub evicted: u64,
    pub relays: u64,
    pub reoriginated: u64,
}

/// Alerts the verdict stage did not raise, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Held {
    /// The same host, signature and evidence (and, for an interceptor, the
    /// same client) alerted less than `realert_after` ago.
    pub repeat: u64,
    /// The flow had already alerted on the signature.
    pub same_flow: u64,
    /// Supporting evidence on a host where the tool has no stronger evidence.
    pub supporting_only: u64,
}

impl Counters {
    pub fn decode_error(&mut self, e: DecodeError) {
        match e {
            DecodeError::UnknownLinkType => self.decode_unknown_linktype += 1,
            DecodeError::NotIp => self.decode_not_ip += 1,
            DecodeError::Truncated => self.decode_truncated += 1,
            DecodeError::Malformed => self.decode_malformed += 1,
        }
    }

    pub fn alert(&mut self, severity: u8) {
        let i = (severity.clamp(1, 4) - 1) as usize;
        self.alerts[i] += 1;
    }

    pub fn alerts_total(&self) -> u64 {
        self.alerts.iter().sum()
    }

    /// Adds another engine's counters (workers → total).
    pub fn add(&mut self, o: &Counters) {
        macro_rules! sum {
            ($($f:ident),*) => { $(self.$f += o.$f;)* };
        }
        sum!(
            packets,
            bytes,
            decode_unknown_linktype,
            decode_not_ip,
            decode_truncated,
            decode_malformed,
            fragments,
            fragments_reassembled,
            fragments_dropped,
            flows_created,
            flows_timed_out,
            flows_evicted,
            flows_active,
            bypassed_packets,
            stream_gaps,
            stream_overflows,
            stream_retransmissions,
            reassembly_bytes_held,
            stream_memory,
            stream_memcap_shed,
            tls_client_hellos,
            tls_certificate_msgs,
            tls_malformed,
            certs_parsed,
            cert_cache_hits,
            certs_malformed,
            dns_packets,
            dns_malformed,
            http_transactions,
            stream_overlap_conflicts,
            tcp_checksum_bad,
            http_unlogged,
            events_tls,
            events_quic,
            events_flow,
            fingerprint_memo_resets,
            precheck_memo_hits,
            precheck_memo_resets,
            walk_waits
        );
        self.quic.add(&o.quic);
    }

    /// Malformed input of every kind, for the summary.
    pub fn malformed(&self) -> u64 {
        self.decode_truncated
            + self.decode_malformed
            + self.tls_malformed
            + self.certs_malformed
            + self.dns_malformed
            + self.quic.malformed
            + self.quic.crypto_out_of_bounds
    }
}

/// Per-interface capture counters, as logged.
#[derive(Debug, Default, Clone, Serialize)]
pub struct InterfaceStats {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
    pub kernel_dropped: u64,
    pub if_dropped: u64,
    pub queue_dropped: u64,
}

/// Per-packet processing latency percentiles (nanoseconds).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        Latency {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// EVE's `stats` object (spanwatch's fields).
#[derive(Debug, Clone, Serialize)]
pub struct StatsEvent {
    pub uptime: u64,
    pub interfaces: Vec<InterfaceStats>,
    /// Packets waiting in the engine's queue when this was written.
    pub queue_depth: usize,
    pub workers: Vec<WorkerStats>,
    #[serde(flatten)]
    pub counters: Counters,
    pub latency_ns: Latency,
    pub events_written: u64,
    pub events_lost: u64,
    pub alerts_suppressed: u64,
    /// Events written and lost by each output, when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<crate::sink::OutputStats>,
    /// The persistent ledger's store, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_store: Option<LedgerStoreStats>,
}

/// What the ledger's store thread has done (`[ledger] database`).
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct LedgerStoreStats {
    /// The file, or the server without its password.
    pub database: String,
    /// The last attempt reached the database.
    pub connected: bool,
    /// Transactions committed.
    pub batches: u64,
    pub updates_stored: u64,
    /// Updates waiting for the next commit (or for the database to return).
    pub updates_pending: u64,
    /// Updates lost: the buffer was full, or the end of the run came first.
    pub updates_dropped: u64,
    /// Commits that failed (retried).
    pub failures: u64,
    /// New distinct values not stored: the pair had its maximum.
    pub sightings_dropped: u64,
    /// Activity periods removed by `retain`.
    pub periods_pruned: u64,
}

/// One worker's share, as logged.
#[derive(Debug, Default, Clone, Serialize)]
pub struct WorkerStats {
    pub worker: usize,
    pub packets: u64,
    pub bytes: u64,
    pub flows_active: u64,
    /// Batches waiting in the worker's queue when it last reported.
    pub queue_depth: usize,
    /// Packets dropped because the worker's queue was full (live capture).
    pub queue_dropped: u64,
}
