//! The writer's part of the leg correlation: a ClientHello goes to the
//! tracker; two legs found are logged as a `tls_legs` event, and a
//! re-originated pair goes through the signatures (fact `tls_reoriginated`)
//! and the policy (`[allow] interceptors` sanctions it).

use super::{FlowState, Sink, Writer};
use crate::analyzer::facts::{Fact, Facts};
use crate::detect::Ends;
use crate::event::Sanctioned;
use crate::pipeline::output::FlowHead;
use crate::verdict::legs::{Kind, LegEvent, LegsEvent};

impl<W: Sink> Writer<W> {
    /// `frame`: the packet of a ServerHello event (0 for a ClientHello).
    pub(super) fn legs(&mut self, ev: LegEvent<FlowHead>, frame: u64) {
        let Some(legs) = self.legs.event(ev) else {
            return;
        };
        let ev = LegsEvent::of(&legs);
        let mut body = b",\"tls_legs\":".to_vec();
        if serde_json::to_writer(&mut body, &ev).is_err() {
            return;
        }
        let at = if legs.mode == "reverse" {
            legs.first.sh_at.unwrap_or(legs.second.at)
        } else {
            legs.second.at
        };
        let proxy = legs.proxy();
        let allowed = (legs.kind == Kind::Reoriginated)
            .then(|| self.verdicts.policy().interceptor(proxy, &legs.first.name))
            .flatten()
            .map(String::from);
        // the event is about the flow whose packet completed the pair: the
        // proxy's leg, or for `reverse` the client's (at its ServerHello)
        let mut flow_head = legs.second.tag.clone();
        if legs.mode == "reverse" {
            flow_head = legs.first.tag.clone();
            flow_head.ts = at;
            flow_head.frame = frame;
        }
        let sensor = self.site.sensor_name();
        let head = flow_head.head("tls_legs", sensor);
        let alert_head = flow_head.head("alert", sensor);
        if self.types.wants("tls_legs") {
            let sanctioned = allowed.as_deref().map(|by| Sanctioned {
                allowed_by: by,
                signature_ids: Vec::new(),
                tools: Vec::new(),
            });
            self.compose(
                ("tls_legs", None),
                &head,
                sanctioned.as_ref().map(|s| ("sanctioned", s)),
                &body,
            );
        }
        if legs.kind == Kind::Relay {
            return;
        }
        if allowed.is_some() {
            self.counters.sanctioned += 1;
            return;
        }
        let described = legs.describe();
        let mut facts = Facts::default();
        facts.push(Fact::Sni, &legs.second.name);
        facts.push(Fact::Ja4, &legs.second.ja4);
        facts.push(Fact::TlsReoriginated, &described);
        facts.set(Fact::TlsReoriginated, 1);
        // the verdict is about the proxy; its clients are the other end
        let ends = Ends {
            client: legs.first.client,
            server: proxy,
            client_seg: legs.first.client_seg.as_ref(),
            server_seg: legs.second.client_seg.as_ref(),
        };
        // one hello per proxy flow: its verdict needs no flow state (and the
        // flow may have none to end)
        let state = FlowState {
            alerted: &[],
            ledger_keys: &[],
        };
        let d = self.verdicts.decide(&facts, &ends, state, at);
        self.alerts(&d, &alert_head, &body, at);
    }
}
