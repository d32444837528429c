//! The writer's outbox: the lines released in order, not yet written, as
//! runs of the workers' buffers and of the lines the writer made itself.

use std::collections::VecDeque;

use crate::pipeline::output::{FlowHead, FlowLine, Item};

/// A worker's output being released.
pub(super) struct Chunk {
    /// Numbers chunks, so a line can name the buffer it is in.
    pub(super) serial: u64,
    pub(super) buf: Vec<u8>,
    pub(super) items: VecDeque<Item>,
    /// What its [`Item::Tail`]s and [`Item::Flow`]s name by index.
    pub(super) heads: Vec<FlowHead>,
    pub(super) lines: Vec<FlowLine>,
}

/// Worker `w`'s chunk `serial`, if it is still held (in its queue, or
/// `spent`).
pub(super) fn chunk<'a>(
    queues: &'a [VecDeque<Chunk>],
    spent: &'a [(usize, Chunk)],
    (w, serial): (usize, u64),
) -> Option<&'a Chunk> {
    (queues.get(w).and_then(VecDeque::front))
        .filter(|c| c.serial == serial)
        .or_else(|| spent.iter().map(|(_, c)| c).find(|c| c.serial == serial))
}

/// Bytes `start..end` of worker `w`'s chunk `serial`, which is still held (in
/// its queue, or `spent`); none if it is not.
pub(super) fn chunk_bytes<'a>(
    queues: &'a [VecDeque<Chunk>],
    spent: &'a [(usize, Chunk)],
    from: (usize, u64),
    (start, end): (usize, usize),
) -> &'a [u8] {
    let buf = chunk(queues, spent, from).map(|c| &c.buf);
    buf.and_then(|b| b.get(start..end)).unwrap_or_default()
}

/// Queued output at least this large is written out at once.
pub(super) const WRITE_AT: usize = 256 * 1024;

/// Where a segment's bytes are.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Src {
    /// A worker's chunk, still held (in its queue or `spent`).
    Chunk { w: usize, serial: u64 },
    /// `Outbox::own`: a line the writer made itself.
    Own,
}

/// Whole lines next to each other in one buffer.
#[derive(Clone, Copy)]
pub(super) struct Seg {
    pub(super) src: Src,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) lines: u64,
}

/// One line of the outbox, for sinks that choose lines by type.
#[derive(Clone, Copy)]
pub(super) struct LineRec {
    pub(super) src: Src,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) event_type: &'static str,
    pub(super) severity: Option<u8>,
}

/// Output in order, not yet written: runs of lines left where the workers
/// wrote them, and the lines the writer composed. Handed to the sink as runs,
/// so a worker's line is copied once, by the kernel.
#[derive(Default)]
pub(super) struct Outbox {
    pub(super) segs: Vec<Seg>,
    /// Every line with its type, kept only when a sink chooses by type.
    pub(super) lines: Vec<LineRec>,
    pub(super) typed: bool,
    pub(super) own: Vec<u8>,
    pub(super) bytes: usize,
}

impl Outbox {
    pub(super) fn push(
        &mut self,
        src: Src,
        start: usize,
        end: usize,
        t: &'static str,
        sev: Option<u8>,
    ) {
        if self.typed {
            self.lines.push(LineRec {
                src,
                start,
                end,
                event_type: t,
                severity: sev,
            });
        }
        self.bytes += end - start;
        match self.segs.last_mut() {
            Some(s) if s.src == src && s.end == start => {
                s.end = end;
                s.lines += 1;
            }
            _ => self.segs.push(Seg {
                src,
                start,
                end,
                lines: 1,
            }),
        }
    }

    /// Queues the line `f` appends to `own`; `f` returning false drops it.
    pub(super) fn own_line(
        &mut self,
        t: &'static str,
        sev: Option<u8>,
        f: impl FnOnce(&mut Vec<u8>) -> bool,
    ) -> bool {
        let start = self.own.len();
        if !f(&mut self.own) {
            self.own.truncate(start);
            return false;
        }
        let end = self.own.len();
        self.push(Src::Own, start, end, t, sev);
        true
    }

    pub(super) fn clear(&mut self) {
        self.segs.clear();
        self.lines.clear();
        self.own.clear();
        self.bytes = 0;
    }
}
