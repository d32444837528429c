//! What detection concludes, as the verdict stage logs it: alerts and the
//! host activity ledger's entries.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use super::rules::Confidence;
use super::Evidence;
use crate::config::SegmentKind;
use crate::time::Timestamp;

/// The built-in signature raised when a tool stays active on a host longer than
/// the ledger's `max_active`.
pub const LONG_RUNNING_ID: u32 = 9_000_001;

/// An alert ready to log (owned: alerts are rare).
#[derive(Debug, Clone)]
pub struct AlertOut {
    pub id: u32,
    pub rev: u32,
    pub name: String,
    pub tool: String,
    pub category: String,
    pub confidence: Confidence,
    pub references: Vec<String>,
    pub evidence: Vec<Evidence>,
    /// Other signatures of the same tool and category that matched the same
    /// event (folded into this alert rather than alerting again).
    pub also_matched: Vec<u32>,
    pub host: IpAddr,
    pub severity: u8,
    pub segment: Option<Arc<str>>,
    pub segment_kind: SegmentKind,
    /// The client, for a verdict about a server (an interceptor's victim):
    /// a new one is a new sighting. Not logged (the event's addresses say it).
    pub peer: Option<IpAddr>,
}

/// What the ledger knows of one tool on one host.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Activity {
    pub host: IpAddr,
    pub tool: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub active_seconds: i64,
    pub flows: u64,
    pub bytes: u64,
    pub sanctioned_flows: u64,
    pub categories: BTreeSet<String>,
    pub evidence: BTreeSet<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    pub segment_kind: SegmentKind,
    /// Seen on evidence that is more than supporting (entries with only
    /// supporting evidence are kept for correlation but not reported).
    #[serde(skip)]
    pub strong: bool,
    /// Seen on strong evidence that was not sanctioned.
    #[serde(skip)]
    pub unsanctioned: bool,
    #[serde(skip)]
    pub max_active_reported: bool,
    /// The distinct values it was seen with (endpoint names, proxies, keys),
    /// in the order first seen; at most [`SIGHTINGS_PER_ENTRY`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sightings: Vec<SightingStat>,
}

/// Distinct sightings kept per host and tool (more are counted, not kept).
pub const SIGHTINGS_PER_ENTRY: usize = 64;

/// One value a tool was seen with on a host: the fact that matched (`sni`,
/// `dns_query`, `tls_reoriginated`, ...) and its value, when and how often.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SightingStat {
    pub category: String,
    pub fact: String,
    pub value: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub count: u64,
}

impl SightingStat {
    pub fn same(&self, category: &str, fact: &str, value: &str) -> bool {
        self.category == category && self.fact == fact && self.value == value
    }

    /// Adds `other` (the same value) to this one.
    pub fn merge(&mut self, other: &SightingStat) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.count += other.count;
    }
}
