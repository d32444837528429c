//! EVE-compatible events.
//!
//! Events are typed structs that borrow from flow state; workers serialise
//! them into reused buffers (no `Value` trees), the header and the `flow`
//! object by hand ([`Event::write_json`]), the rest with `serde_json`; see
//! `output` and `writer`.
//! Field names follow Suricata's EVE where EVE has one.

mod json;

use std::net::IpAddr;

use serde::Serialize;

use crate::analyzer::dns::DnsMessage;
pub use crate::analyzer::http::HttpEvent;
pub use crate::analyzer::tls::{ClientHandshake, HelloSummary, TlsEvent};
use crate::config::{SegmentKind, SegmentRef};
use crate::detect::{Activity, AlertOut};
use crate::flow::{EndReason, Flow};
use crate::time::Timestamp;

/// IP protocol as EVE names it.
#[derive(Debug, Clone, Copy)]
pub struct Proto(pub u8);

impl Proto {
    /// EVE's name for the protocol; others are written as their number.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            6 => "TCP",
            17 => "UDP",
            1 => "ICMP",
            58 => "IPv6-ICMP",
            132 => "SCTP",
            47 => "GRE",
            _ => return None,
        })
    }
}

impl Serialize for Proto {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(n) => s.serialize_str(n),
            None => s.collect_str(&self.0),
        }
    }
}

/// One event: the common EVE header and one protocol object.
///
/// The flow fields are absent only on events about a host rather than a flow
/// (`host_activity`, `stats`). `Default` is an event with no optional field.
#[derive(Debug, Default, Serialize)]
pub struct Event<'a> {
    pub timestamp: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcap_file: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcap_frame: Option<u64>,
    pub event_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    #[serde(skip_serializing_if = "<[u16]>::is_empty")]
    pub vlan: &'a [u16],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_proto: Option<&'static str>,
    /// Something about the flow's packets a sensor must not take at face
    /// value (Suricata's names: `stream.reassembly_overlap_different_data`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_segment: Option<SegmentRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_segment: Option<SegmentRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertBody<'a>>,
    /// Set on protocol events that matched signatures but are allow-listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sanctioned: Option<Sanctioned<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_activity: Option<HostActivity<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<&'a crate::stats::StatsEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsEvent<'a>>,
    /// A `certificate` event: one certificate, as `tls.chain` entries are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quic: Option<crate::analyzer::quic::QuicEvent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<&'a DnsMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpEvent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowEvent>,
}

/// EVE's `flow` object, logged when a flow ends.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FlowEvent {
    pub pkts_toserver: u64,
    pub pkts_toclient: u64,
    pub bytes_toserver: u64,
    pub bytes_toclient: u64,
    pub start: Timestamp,
    pub end: Timestamp,
    pub age: i64,
    pub state: &'static str,
    pub reason: &'static str,
    pub alerted: bool,
}

impl FlowEvent {
    /// A flow's counters as it ends. `alerted` is the verdict stage's to set
    /// (for flows that had pending events).
    pub fn of<T>(flow: &Flow<T>, reason: EndReason) -> Self {
        FlowEvent {
            pkts_toserver: flow.pkts[0],
            pkts_toclient: flow.pkts[1],
            bytes_toserver: flow.bytes[0],
            bytes_toclient: flow.bytes[1],
            start: flow.start,
            end: flow.last,
            age: flow.last.since(flow.start).0 / 1_000_000_000,
            state: flow.state(),
            reason: reason.as_str(),
            alerted: false,
        }
    }
}

/// EVE's `alert` object, with spanwatch's tool, confidence, host and segment.
#[derive(Debug, Serialize)]
pub struct AlertBody<'a> {
    /// A passive sensor blocks nothing.
    pub action: &'static str,
    pub gid: u32,
    pub signature_id: u32,
    pub rev: u32,
    pub signature: &'a str,
    pub category: &'a str,
    pub tool: &'a str,
    pub severity: u8,
    pub confidence: crate::detect::rules::Confidence,
    /// The IP address the verdict is about.
    pub host: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<&'a str>,
    pub segment_kind: SegmentKind,
    pub evidence: &'a [crate::detect::Evidence],
    #[serde(skip_serializing_if = "<[u32]>::is_empty")]
    pub also_matched: &'a [u32],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub references: &'a [String],
}

/// What an allow-listed event would have alerted on.
#[derive(Debug, Serialize)]
pub struct Sanctioned<'a> {
    pub allowed_by: &'a str,
    pub signature_ids: Vec<u32>,
    pub tools: Vec<&'a str>,
}

/// A `host_activity` event: the ledger's entry for one tool on one host.
#[derive(Debug)]
pub struct HostActivity<'a> {
    /// `first_seen`, `max_active`, `end_of_run` or `periodic`.
    pub reason: &'static str,
    pub activity: &'a Activity,
}

/// `reason`, then the entry's members: what `#[serde(flatten)]` wrote, as
/// a struct (flatten goes through serde's map path, several times slower;
/// the end of a run logs every entry at once, after the last packet).
impl Serialize for HostActivity<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let Activity {
            host,
            tool,
            first_seen,
            last_seen,
            active_seconds,
            flows,
            bytes,
            sanctioned_flows,
            categories,
            evidence,
            segment,
            segment_kind,
            sightings,
            strong: _,
            unsanctioned: _,
            max_active_reported: _,
        } = self.activity;
        let mut st = s.serialize_struct("HostActivity", 14)?;
        st.serialize_field("reason", self.reason)?;
        st.serialize_field("host", host)?;
        st.serialize_field("tool", tool)?;
        st.serialize_field("first_seen", first_seen)?;
        st.serialize_field("last_seen", last_seen)?;
        st.serialize_field("active_seconds", active_seconds)?;
        st.serialize_field("flows", flows)?;
        st.serialize_field("bytes", bytes)?;
        st.serialize_field("sanctioned_flows", sanctioned_flows)?;
        st.serialize_field("categories", categories)?;
        st.serialize_field("evidence", evidence)?;
        if let Some(v) = segment {
            st.serialize_field("segment", v)?;
        }
        st.serialize_field("segment_kind", segment_kind)?;
        if !sightings.is_empty() {
            st.serialize_field("sightings", sightings)?;
        }
        st.end()
    }
}

/// What an event says about where it comes from, besides the flow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    pub sensor: Option<&'a str>,
    /// The capture file (offline runs), and the frame the event is about.
    pub pcap_file: Option<&'a str>,
    pub frame: Option<u64>,
    pub app_proto: Option<&'static str>,
    pub anomaly: Option<&'static str>,
    pub src_segment: Option<SegmentRef<'a>>,
    pub dest_segment: Option<SegmentRef<'a>>,
}

impl<'a> Event<'a> {
    /// The EVE header of an event about a flow: addresses and ports as client
    /// and server, protocol, VLANs, community id, segments.
    pub fn for_flow<T>(
        flow: &'a Flow<T>,
        event_type: &'static str,
        ts: Timestamp,
        cx: Context<'a>,
    ) -> Self {
        let (c, s) = (flow.client(), flow.server());
        Event {
            timestamp: ts,
            flow_id: Some(flow.id),
            sensor: cx.sensor,
            pcap_file: cx.pcap_file,
            pcap_frame: cx.pcap_file.and(cx.frame.filter(|f| *f > 0)),
            event_type,
            src_ip: Some(c.0),
            src_port: Some(c.1),
            dest_ip: Some(s.0),
            dest_port: Some(s.1),
            proto: Some(Proto(flow.key.proto)),
            vlan: flow.key.vlans.as_slice(),
            community_id: Some(flow.community_id()),
            app_proto: cx.app_proto,
            anomaly: cx.anomaly,
            src_segment: cx.src_segment,
            dest_segment: cx.dest_segment,
            ..Default::default()
        }
    }

    /// A `stats` event (no flow fields).
    pub fn stats(st: &'a crate::stats::StatsEvent, at: Timestamp, sensor: Option<&'a str>) -> Self {
        Event {
            timestamp: at,
            sensor,
            event_type: "stats",
            stats: Some(st),
            ..Default::default()
        }
    }

    /// A `host_activity` event: one ledger entry and why it is logged now.
    pub fn host_activity(
        a: &'a Activity,
        reason: &'static str,
        at: Timestamp,
        sensor: Option<&'a str>,
    ) -> Self {
        Event {
            timestamp: at,
            sensor,
            event_type: "host_activity",
            host_activity: Some(HostActivity {
                reason,
                activity: a,
            }),
            ..Default::default()
        }
    }
}

impl<'a> AlertBody<'a> {
    pub fn of(a: &'a AlertOut) -> Self {
        AlertBody {
            action: "allowed",
            gid: 1,
            signature_id: a.id,
            rev: a.rev,
            signature: &a.name,
            category: &a.category,
            tool: &a.tool,
            severity: a.severity,
            confidence: a.confidence,
            host: a.host,
            segment: a.segment.as_deref(),
            segment_kind: a.segment_kind,
            evidence: &a.evidence,
            also_matched: &a.also_matched,
            references: &a.references,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SegmentKind;
    use crate::detect::SightingStat;

    /// What `#[serde(flatten)]` made of an entry, for comparison.
    #[derive(Serialize)]
    struct Flattened<'a> {
        reason: &'static str,
        #[serde(flatten)]
        activity: &'a Activity,
    }

    /// `host_activity` reads as it did through `#[serde(flatten)]`, with
    /// and without a segment and sightings; and the writer's way of writing
    /// such an event (`Event::write_json`) is serde's.
    #[test]
    fn host_activity_as_flattened() {
        let at = Timestamp(1_700_000_000_000_001_000);
        let mut a = Activity {
            host: "10.0.0.7".parse().expect("ip"),
            tool: "ngrok \"agent\"".into(),
            first_seen: at,
            last_seen: Timestamp(1_700_000_060_000_000_000),
            active_seconds: 60,
            flows: 3,
            bytes: u64::MAX,
            sanctioned_flows: 1,
            categories: ["tunnel-endpoint".to_string(), "b".into()].into(),
            evidence: ["sni".to_string()].into(),
            segment: None,
            segment_kind: SegmentKind::Production,
            strong: true,
            unsanctioned: true,
            max_active_reported: false,
            sightings: Vec::new(),
        };
        for step in 0..3 {
            if step == 1 {
                a.segment = Some("prod-core".into());
            }
            if step == 2 {
                a.sightings.push(SightingStat {
                    category: "tunnel-endpoint".into(),
                    fact: "sni".into(),
                    value: "x.ngrok-free.app".into(),
                    first_seen: at,
                    last_seen: at,
                    count: 2,
                });
            }
            let old = Flattened {
                reason: "end_of_run",
                activity: &a,
            };
            let new = HostActivity {
                reason: "end_of_run",
                activity: &a,
            };
            let (old, new) = (serde_json::to_string(&old), serde_json::to_string(&new));
            assert_eq!(new.expect("serialises"), old.expect("serialises"));
            let e = Event::host_activity(&a, "periodic", at, Some("sensor-1"));
            let mut hand = Vec::new();
            e.write_json(&mut hand).expect("writes");
            let serde = serde_json::to_vec(&e).expect("serialises");
            assert_eq!(
                String::from_utf8_lossy(&hand),
                String::from_utf8_lossy(&serde)
            );
        }
    }
}
