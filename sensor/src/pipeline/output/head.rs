//! A flow's EVE header fields, owned, for the events the writer makes.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Segment;
use crate::event::{Event, FlowEvent};
use crate::flow::community_id::CommunityId;
use crate::time::Timestamp;

/// A flow's EVE header fields, owned (cheap to make: the writer serialises
/// them only for an event it writes).
#[derive(Debug, Clone)]
pub struct FlowHead {
    pub flow_id: u64,
    pub ts: Timestamp,
    pub frame: u64,
    pub pcap_file: Option<Arc<str>>,
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    pub proto: u8,
    pub vlans: crate::decode::Vlans,
    pub app_proto: Option<&'static str>,
    pub anomaly: Option<&'static str>,
    pub src_seg: Option<Segment>,
    pub dest_seg: Option<Segment>,
}

impl FlowHead {
    /// The JSON of an event of this type up to (not including) its
    /// protocol object, without the closing brace.
    pub fn head(&self, event_type: &'static str, sensor: Option<&str>) -> Vec<u8> {
        let mut h = Vec::with_capacity(384);
        if !self.write_head(event_type, sensor, &mut h) {
            h = b"{".to_vec();
        }
        h
    }

    /// Appends [`FlowHead::head`] to `out`; false if it could not be written
    /// (`out` is then as it was).
    pub fn write_head(
        &self,
        event_type: &'static str,
        sensor: Option<&str>,
        out: &mut Vec<u8>,
    ) -> bool {
        let cid = self.community_id();
        let start = out.len();
        if self
            .event(event_type, sensor, cid.as_str())
            .write_json(out)
            .is_err()
        {
            out.truncate(start);
            return false;
        }
        out.pop(); // the closing brace
        true
    }

    /// Appends the line of an event of this type whose members after the
    /// head are `tail` ([`Item::Tail`](super::Item::Tail)), newline
    /// included; false if it could not be written (`out` is then as it
    /// was).
    pub fn write_line(
        &self,
        event_type: &'static str,
        sensor: Option<&str>,
        tail: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        if !self.write_head(event_type, sensor, out) {
            return false;
        }
        out.extend_from_slice(tail);
        out.extend_from_slice(b"}\n");
        true
    }

    /// The flow's Community ID (v1, seed 0), made here: a worker that
    /// leaves heads to the writer makes none.
    pub fn community_id(&self) -> CommunityId {
        let (s, d) = (self.src, self.dst);
        crate::flow::community_id::community_id(0, s.0, s.1, d.0, d.1, self.proto)
    }

    /// The event of this type, without its protocol object.
    pub fn event<'a>(
        &'a self,
        event_type: &'static str,
        sensor: Option<&'a str>,
        community_id: &'a str,
    ) -> Event<'a> {
        let (s, d) = (self.src, self.dst);
        Event {
            timestamp: self.ts,
            flow_id: Some(self.flow_id),
            sensor,
            pcap_file: self.pcap_file.as_deref(),
            pcap_frame: self
                .pcap_file
                .as_ref()
                .and(Some(self.frame).filter(|f| *f > 0)),
            event_type,
            src_ip: Some(s.0),
            src_port: Some(s.1),
            dest_ip: Some(d.0),
            dest_port: Some(d.1),
            proto: Some(crate::event::Proto(self.proto)),
            vlan: self.vlans.as_slice(),
            community_id: Some(community_id),
            app_proto: self.app_proto,
            anomaly: self.anomaly,
            src_segment: self.src_seg.as_ref().map(Segment::as_ref),
            dest_segment: self.dest_seg.as_ref().map(Segment::as_ref),
            ..Default::default()
        }
    }
}

/// A `flow` event for the writer to serialise. The worker's time is what
/// bounds a run with one worker, and a flow's event needs nothing of the
/// worker's state once the flow has ended: the writer, whose core has time
/// to spare, writes it, in the same place among the lines.
#[derive(Debug)]
pub struct FlowLine {
    pub head: FlowHead,
    pub flow: FlowEvent,
}

impl FlowLine {
    /// Its JSON line, newline included; false if it could not be written.
    pub fn write(&self, sensor: Option<&str>, line: &mut Vec<u8>) -> bool {
        let cid = self.head.community_id();
        let mut e = self.head.event("flow", sensor, cid.as_str());
        e.flow = Some(self.flow);
        let ok = e.write_json(line).is_ok();
        line.push(b'\n');
        ok
    }
}
