//! The writer's release of one sequence number's items: gathered from the
//! workers' chunks, then written (or handled) in flow order.

use super::outbox::{chunk, Src};
use super::{Key, Sink, Writer, EVENT_TYPES};
use crate::pipeline::output::Item;

/// An item ready to handle.
pub(super) enum Ready {
    /// `buf[start..end]` of chunk `serial` from worker `w`.
    Line {
        w: usize,
        serial: u64,
        start: usize,
        end: usize,
        event_type: u8,
    },
    /// An event whose head the writer makes (see [`Item::Tail`]), its
    /// protocol object `buf[start..end]` of chunk `serial` from worker `w`.
    Tail {
        w: usize,
        serial: u64,
        start: usize,
        end: usize,
        event_type: u8,
        /// Its index in the chunk's `heads`.
        head: usize,
    },
    /// A `flow` event to make from `lines[line]` of chunk `serial` from
    /// worker `w` (not made on receipt: a reload was waiting).
    Flow {
        w: usize,
        serial: u64,
        line: usize,
    },
    Item(Item),
}

impl<W: Sink> Writer<W> {
    /// Writes (or handles) one released item.
    pub(super) fn ready(&mut self, flow: u64, r: Ready) {
        match r {
            Ready::Line {
                w,
                serial,
                start,
                end,
                event_type,
            } => {
                let src = Src::Chunk { w, serial };
                let t = EVENT_TYPES[usize::from(event_type).min(EVENT_TYPES.len() - 1)];
                self.outbox.push(src, start, end, t, None)
            }
            Ready::Tail {
                w,
                serial,
                start,
                end,
                event_type,
                head,
            } => {
                let t = EVENT_TYPES[usize::from(event_type).min(EVENT_TYPES.len() - 1)];
                let sensor = self.site.sensor_name();
                let c = chunk(&self.queues, &self.spent, (w, serial));
                let body = c.and_then(|c| c.buf.get(start..end)).unwrap_or_default();
                let made = match c.and_then(|c| c.heads.get(head)) {
                    Some(head) if !body.is_empty() => {
                        (self.outbox).own_line(t, None, |l| head.write_line(t, sensor, body, l))
                    }
                    _ => false,
                };
                self.made(made);
            }
            Ready::Flow { w, serial, line } => {
                let sensor = self.site.sensor_name();
                let c = chunk(&self.queues, &self.spent, (w, serial));
                let made = match c.and_then(|c| c.lines.get(line)) {
                    Some(line) => (self.outbox).own_line("flow", None, |l| line.write(sensor, l)),
                    None => false,
                };
                self.made(made);
            }
            Ready::Item(it) => self.handle(flow, it),
        }
    }

    /// Moves every item with sequence number `seq` up to `horizon` into
    /// `group` (for the sequence number the horizon cuts, the end of
    /// input's, each worker's items come in flow order).
    pub(super) fn gather(&mut self, seq: u64, horizon: Key) {
        for (w, q) in self.queues.iter_mut().enumerate() {
            while let Some(c) = q.front_mut() {
                match c.items.front() {
                    Some(it) if it.key().seq == seq && it.key() <= horizon => {}
                    Some(_) => break,
                    None => {
                        if let Some(c) = q.pop_front() {
                            self.spent.push((w, c));
                        }
                        continue;
                    }
                }
                let Some(it) = c.items.pop_front() else { break };
                let flow = it.key().flow;
                let r = match it {
                    Item::Line {
                        start,
                        end,
                        event_type,
                        ..
                    } => Ready::Line {
                        w,
                        serial: c.serial,
                        start,
                        end,
                        event_type,
                    },
                    Item::Tail {
                        start,
                        end,
                        event_type,
                        head,
                        ..
                    } => Ready::Tail {
                        w,
                        serial: c.serial,
                        start,
                        end,
                        event_type,
                        head,
                    },
                    Item::Flow { line, .. } => Ready::Flow {
                        w,
                        serial: c.serial,
                        line,
                    },
                    other => Ready::Item(other),
                };
                self.order.push((flow, w, self.group.len()));
                self.group.push(Some(r));
                if c.items.is_empty() {
                    if let Some(c) = q.pop_front() {
                        self.spent.push((w, c));
                    }
                }
            }
        }
    }
}
