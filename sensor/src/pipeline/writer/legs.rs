//! The writer's part of the leg correlation: a ClientHello goes to the
//! tracker; two legs found are logged as a `tls_legs` event, and a
//! re-originated pair goes through the signatures (fact `tls_reoriginated`)
//! and the policy (`[allow] interceptors` sanctions it).

use super::{FlowState, Sink, Writer};
use crate::analyzer::facts::{Fact, Facts};
use crate::detect::Ends;
use crate::event::Sanctioned;
use crate::pipeline::output::PendingHello;
use crate::verdict::legs::{Kind, LegsEvent};

impl<W: Sink> Writer<W> {
    pub(super) fn legs(&mut self, p: PendingHello) {
        let Some(legs) = self.verdicts.legs.event(p.ev) else {
            return;
        };
        let ev = LegsEvent::of(&legs);
        let mut body = b",\"tls_legs\":".to_vec();
        if serde_json::to_writer(&mut body, &ev).is_err() {
            return;
        }
        let at = legs.second.at;
        let proxy = legs.proxy();
        let allowed = (legs.kind == Kind::Reoriginated)
            .then(|| self.verdicts.policy().interceptor(proxy, &legs.first.name))
            .flatten()
            .map(String::from);
        if self.types.wants("tls_legs") {
            let sanctioned = allowed.as_deref().map(|by| Sanctioned {
                allowed_by: by,
                signature_ids: Vec::new(),
                tools: Vec::new(),
            });
            self.compose(
                ("tls_legs", None),
                &p.head,
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
        let alert_head = alert_head(&p.head);
        self.alerts(&d, &alert_head, &body, at);
    }
}

/// The event's head as an alert's: its `event_type` replaced (the first
/// occurrence of the key is the field: inside strings quotes are escaped).
fn alert_head(head: &[u8]) -> Vec<u8> {
    const FROM: &[u8] = b"\"event_type\":\"tls_legs\"";
    const TO: &[u8] = b"\"event_type\":\"alert\"";
    match head.windows(FROM.len()).position(|w| w == FROM) {
        Some(i) => [&head[..i], TO, &head[i + FROM.len()..]].concat(),
        None => head.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_alert_head_names_the_alert() {
        let h = br#"{"timestamp":"t","pcap_file":"a\"event_type\":\"tls_legs\"","event_type":"tls_legs","src_ip":"x""#;
        let a = super::alert_head(h);
        assert_eq!(
            String::from_utf8_lossy(&a),
            r#"{"timestamp":"t","pcap_file":"a\"event_type\":\"tls_legs\"","event_type":"alert","src_ip":"x""#
        );
    }
}
