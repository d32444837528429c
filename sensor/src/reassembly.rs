//! In-order delivery of one TCP direction, for handshakes only.
//!
//! A [`Stream`] hands contiguous bytes to an analyzer callback that returns how
//! many it consumed; the rest waits for the next segment. A handshake message
//! inside one segment is parsed straight from the packet. The first
//! [`WINDOW`] bytes are kept anyway (to compare later copies with), so what
//! the analyzer leaves of them waits there, read in place; only what is left
//! beyond the window is copied again. Out-of-order segments are held, bounded
//! in count and bytes; retransmissions and overlaps keep the first copy (the
//! bytes a receiver would have acted on first, as Suricata's default policy
//! does).

/// Bytes one direction may hold for the analyzer (a long certificate chain fits).
pub const MAX_BUFFERED: usize = 128 * 1024;
/// Out-of-order segments held per direction.
pub const MAX_OOO_SEGMENTS: usize = 64;
/// Out-of-order bytes held per direction.
pub const MAX_OOO_BYTES: usize = 128 * 1024;
/// An emptied buffer keeps its room up to this much (beyond, it is freed).
const SPARE_BUFFER: usize = 16 * 1024;
/// A segment further ahead than this is not a reordering but a gap.
pub const MAX_AHEAD: u32 = 1 << 20;

/// Why a direction can no longer be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamError {
    /// Data is missing and cannot arrive within the limits (lost segment, or
    /// more reordering than the limits hold).
    Gap,
    /// The analyzer wants more than [`MAX_BUFFERED`] bytes.
    Overflow,
}

#[derive(Debug, Default)]
pub struct Stream {
    next: Option<u32>,
    /// Bytes the analyzer left, when they did not all fit in the window.
    buf: Vec<u8>,
    /// Where in `window` the bytes the analyzer left start, while they all
    /// lie there (then `buf` is empty).
    pending: Option<usize>,
    ooo: Vec<(u32, Vec<u8>)>,
    ooo_bytes: usize,
    /// Segments that were wholly retransmitted data (counted, dropped).
    pub retransmitted: u64,
    /// Bytes handed to the analyzer so far.
    delivered: u64,
    /// The first bytes delivered (up to [`WINDOW`]): what a later copy of
    /// the same bytes is compared with.
    window: Vec<u8>,
    /// Copies of delivered bytes that differed from the first copy.
    pub conflicts: u64,
    /// The window as the differing copies made it, once there was one.
    alt: Vec<u8>,
    /// `alt` changed since it was last taken.
    alt_new: bool,
    /// Times `alt` was taken (bounded: each is read again).
    alt_reads: u8,
}

/// Versions of a direction's first bytes handed out for reading again.
const MAX_ALT_READS: u8 = 8;

/// Delivered bytes kept per direction to compare later copies with (the
/// handshake: a ClientHello, a server's first flight).
pub const WINDOW: usize = 8 * 1024;
/// The window's first room: twice the first segment, and at least this.
const FIRST_ROOM: usize = 1024;

impl Stream {
    /// Notes the initial sequence number from a SYN (or SYN-ACK).
    ///
    /// Until data has flowed, a later SYN replaces an earlier one: a host that
    /// answers twice with different sequence numbers is believed the second time.
    pub fn syn(&mut self, seq: u32) {
        if self.next.is_none() || self.delivered == 0 {
            self.next = Some(seq.wrapping_add(1));
            self.ooo.clear();
            self.ooo_bytes = 0;
        }
    }

    /// Bytes handed to the analyzer so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Bytes held (in-order waiting plus out-of-order).
    pub fn held(&self) -> usize {
        let waiting = self.pending.map_or(0, |at| self.window.len() - at);
        self.buf.len() + waiting + self.ooo_bytes
    }

    /// Heap bytes the stream holds: its buffers' capacities, the
    /// out-of-order segments and the kept first bytes (what the engine's
    /// reassembly memory cap counts).
    pub fn memory(&self) -> usize {
        self.buf.capacity()
            + self.ooo_bytes
            + self.ooo.capacity() * std::mem::size_of::<(u32, Vec<u8>)>()
            + self.window.capacity()
            + self.alt.capacity()
    }

    /// Frees every buffer (the flow no longer needs its stream).
    pub fn release(&mut self) {
        self.buf = Vec::new();
        self.pending = None;
        self.ooo = Vec::new();
        self.ooo_bytes = 0;
        self.window = Vec::new();
        self.alt = Vec::new();
    }

    /// The stream's first bytes as the copies that differed from what was
    /// delivered made them, if that changed since last asked (a few times
    /// at most: each version is read again).
    pub fn take_alt(&mut self) -> Option<Vec<u8>> {
        if !self.alt_new || self.alt_reads >= MAX_ALT_READS {
            return None;
        }
        self.alt_new = false;
        self.alt_reads += 1;
        Some(self.alt.clone())
    }

    /// A copy of bytes already delivered, starting `back` bytes before the
    /// next expected one: if it differs from the first copy (within the
    /// window), count it and keep the alternative.
    fn compare(&mut self, back: usize, data: &[u8]) {
        let Some(start) = (self.delivered as usize).checked_sub(back) else {
            return;
        };
        let Some(first) = self.window.get(start..) else {
            return;
        };
        let n = first.len().min(data.len());
        if first[..n] == data[..n] {
            return;
        }
        self.conflicts += 1;
        if self.alt.len() < self.window.len() {
            let from = self.alt.len();
            self.alt.extend_from_slice(&self.window[from..]);
        }
        self.alt[start..start + n].copy_from_slice(&data[..n]);
        self.alt_new = true;
    }

    /// Adds a segment and feeds whatever became contiguous to `analyze`.
    pub fn push(
        &mut self,
        seq: u32,
        data: &[u8],
        analyze: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Result<(), StreamError> {
        if data.is_empty() {
            return Ok(());
        }
        let next = *self.next.get_or_insert(seq);
        let rel = seq.wrapping_sub(next) as i32;
        if rel < 0 {
            let skip = rel.unsigned_abs() as usize;
            self.compare(skip, &data[..skip.min(data.len())]);
            if skip >= data.len() {
                self.retransmitted += 1;
                return Ok(());
            }
            self.deliver(&data[skip..], analyze)?;
        } else if rel > 0 {
            self.hold(seq, data)?;
            return Ok(());
        } else {
            self.deliver(data, analyze)?;
        }
        self.drain_ooo(analyze)
    }

    fn deliver(
        &mut self,
        data: &[u8],
        analyze: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Result<(), StreamError> {
        let next = self.next.unwrap_or(0);
        self.next = Some(next.wrapping_add(data.len() as u32));
        self.delivered += data.len() as u64;
        let mut kept = 0;
        if self.window.len() < WINDOW {
            kept = data.len().min(WINDOW - self.window.len());
            self.make_room(kept);
            self.window.extend_from_slice(&data[..kept]);
        }
        let whole = kept == data.len();
        match self.pending {
            // what was left, and now this segment, lie at the window's end
            Some(at) if whole => {
                let left = &self.window[at..];
                let used = analyze(left).min(left.len());
                self.pending = (used < left.len()).then_some(at + used);
                Ok(())
            }
            // leaving the window: what is left moves to the buffer
            Some(at) => {
                if self.window.len() - at + (data.len() - kept) > MAX_BUFFERED {
                    return Err(StreamError::Overflow);
                }
                self.pending = None;
                self.buf.extend_from_slice(&self.window[at..]);
                self.buffered(&data[kept..], analyze)
            }
            None if self.buf.is_empty() => {
                let used = analyze(data).min(data.len());
                let rest = &data[used..];
                if whole {
                    if !rest.is_empty() {
                        self.pending = Some(self.window.len() - rest.len());
                    }
                } else {
                    if rest.len() > MAX_BUFFERED {
                        return Err(StreamError::Overflow);
                    }
                    self.buf.extend_from_slice(rest);
                }
                Ok(())
            }
            None => self.buffered(data, analyze),
        }
    }

    /// Room in the window for `more` bytes: at first twice the first
    /// segment (at least [`FIRST_ROOM`]), then doubling; never beyond
    /// [`WINDOW`] (a vector left to grow would double past it).
    fn make_room(&mut self, more: usize) {
        let need = self.window.len() + more;
        let cap = self.window.capacity();
        if need <= cap {
            return;
        }
        let room = match cap {
            0 => (2 * more).clamp(FIRST_ROOM, WINDOW),
            _ => (2 * cap).min(WINDOW),
        };
        self.window
            .reserve_exact(room.max(need) - self.window.len());
    }

    /// Adds `data` to what waits in the buffer and offers it all again.
    fn buffered(
        &mut self,
        data: &[u8],
        analyze: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Result<(), StreamError> {
        if self.buf.len() + data.len() > MAX_BUFFERED {
            return Err(StreamError::Overflow);
        }
        self.buf.extend_from_slice(data);
        let used = analyze(&self.buf).min(self.buf.len());
        self.buf.drain(..used);
        if self.buf.is_empty() && self.buf.capacity() > SPARE_BUFFER {
            // a big message read: its room goes rather than wait with
            // the flow (a stream never holds more than it needs now)
            self.buf = Vec::new();
        }
        Ok(())
    }

    fn hold(&mut self, seq: u32, data: &[u8]) -> Result<(), StreamError> {
        let next = self.next.unwrap_or(seq);
        if seq.wrapping_sub(next) > MAX_AHEAD {
            return Err(StreamError::Gap);
        }
        if let Some((_, d)) = self
            .ooo
            .iter()
            .find(|(s, d)| *s == seq && d.len() >= data.len())
        {
            if d[..data.len()] != *data {
                self.conflicts += 1;
            }
            self.retransmitted += 1;
            return Ok(());
        }
        if self.ooo.len() >= MAX_OOO_SEGMENTS || self.ooo_bytes + data.len() > MAX_OOO_BYTES {
            return Err(StreamError::Gap);
        }
        self.ooo_bytes += data.len();
        self.ooo.push((seq, data.to_vec()));
        Ok(())
    }

    fn drain_ooo(&mut self, analyze: &mut dyn FnMut(&[u8]) -> usize) -> Result<(), StreamError> {
        loop {
            let Some(next) = self.next else { return Ok(()) };
            // Segments now wholly behind `next` are duplicates.
            let before = self.ooo.len();
            let mut freed = 0;
            self.ooo.retain(|(s, d)| {
                let rel = s.wrapping_sub(next) as i32;
                let keep = rel >= 0 || (rel.unsigned_abs() as usize) < d.len();
                if !keep {
                    freed += d.len();
                }
                keep
            });
            self.ooo_bytes -= freed;
            self.retransmitted += (before - self.ooo.len()) as u64;
            // The first held segment that starts at or before `next`.
            let Some(i) = self
                .ooo
                .iter()
                .position(|(s, _)| (s.wrapping_sub(next) as i32) <= 0)
            else {
                return Ok(());
            };
            let (s, d) = self.ooo.swap_remove(i);
            self.ooo_bytes -= d.len();
            let skip = next.wrapping_sub(s) as usize;
            self.deliver(&d[skip..], analyze)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds segments and returns everything the analyzer saw, consuming all.
    fn run(segs: &[(u32, &[u8])]) -> (Vec<u8>, Result<(), StreamError>) {
        let mut s = Stream::default();
        s.syn(99);
        let mut seen = Vec::new();
        let mut res = Ok(());
        for (seq, d) in segs {
            res = res.and(s.push(*seq, d, &mut |b: &[u8]| {
                seen.extend_from_slice(b);
                b.len()
            }));
        }
        (seen, res)
    }

    #[test]
    fn in_order_segments_pass_through() {
        assert_eq!(run(&[(100, b"abc"), (103, b"def")]).0, b"abcdef");
    }

    #[test]
    fn reordered_segments_are_put_back_in_order() {
        assert_eq!(
            run(&[(103, b"def"), (106, b"g"), (100, b"abc")]).0,
            b"abcdefg"
        );
    }

    #[test]
    fn retransmission_and_overlap_keep_first_copy() {
        let (seen, _) = run(&[(100, b"abc"), (100, b"XYZ"), (101, b"XYdef")]);
        assert_eq!(seen, b"abcdef");
    }

    #[test]
    fn sequence_wraparound() {
        let mut s = Stream::default();
        s.syn(u32::MAX - 1);
        let mut seen = Vec::new();
        s.push(u32::MAX, b"ab", &mut |b: &[u8]| {
            seen.extend_from_slice(b);
            b.len()
        })
        .expect("ok");
        s.push(1, b"cd", &mut |b: &[u8]| {
            seen.extend_from_slice(b);
            b.len()
        })
        .expect("ok");
        assert_eq!(seen, b"abcd");
    }

    #[test]
    fn unconsumed_bytes_wait_for_more() {
        let mut s = Stream::default();
        let mut calls = Vec::new();
        // the analyzer consumes only whole 4-byte messages
        let mut an = |b: &[u8]| {
            calls.push(b.to_vec());
            b.len() / 4 * 4
        };
        s.push(0, b"abcde", &mut an).expect("ok");
        s.push(5, b"fgh", &mut an).expect("ok");
        assert_eq!(calls, vec![b"abcde".to_vec(), b"efgh".to_vec()]);
        assert_eq!(s.held(), 0);
    }

    #[test]
    fn too_much_reordering_is_a_gap_not_unbounded_memory() {
        let mut s = Stream::default();
        s.syn(0);
        let mut r = Ok(());
        for i in 0..(MAX_OOO_SEGMENTS as u32 + 5) {
            r = r.and(s.push(100 + i * 10, &[0u8; 10], &mut |b: &[u8]| b.len()));
        }
        assert_eq!(r, Err(StreamError::Gap));
        assert!(s.held() <= MAX_OOO_BYTES);
        // a one-byte-segment flood is bounded the same way
        let mut s = Stream::default();
        s.syn(0);
        let r = s.push(10 + MAX_AHEAD, b"x", &mut |b: &[u8]| b.len());
        assert_eq!(r, Err(StreamError::Gap));
    }

    #[test]
    fn analyzer_that_never_consumes_overflows() {
        let mut s = Stream::default();
        let mut r = Ok(());
        let chunk = vec![0u8; 1460];
        for i in 0..200u32 {
            r = r.and(s.push(i * 1460, &chunk, &mut |_b: &[u8]| 0));
        }
        assert_eq!(r, Err(StreamError::Overflow));
        assert!(s.held() <= MAX_BUFFERED);
    }

    #[test]
    fn a_differing_copy_is_counted_and_its_version_kept() {
        fn feed(s: &mut Stream, seen: &mut Vec<u8>, seq: u32, d: &[u8]) {
            s.push(seq, d, &mut |b: &[u8]| {
                seen.extend_from_slice(b);
                b.len()
            })
            .expect("ok");
        }
        let (mut s, mut seen) = (Stream::default(), Vec::new());
        s.syn(99);
        feed(&mut s, &mut seen, 100, b"hello decoy");
        // the same bytes again: a plain retransmission
        feed(&mut s, &mut seen, 100, b"hello decoy");
        assert_eq!((s.conflicts, s.retransmitted), (0, 1));
        assert!(s.take_alt().is_none());
        // other bytes at the same place, and one more byte after them
        feed(&mut s, &mut seen, 106, b"world!");
        assert_eq!(s.conflicts, 1);
        assert_eq!(s.take_alt().as_deref(), Some(&b"hello world"[..]));
        assert_eq!(seen, b"hello decoy!", "the first copy is what was read");
        // a later differing copy adds to the other version
        feed(&mut s, &mut seen, 100, b"HELLO");
        assert_eq!(s.conflicts, 2);
        assert_eq!(s.take_alt().as_deref(), Some(&b"HELLO world!"[..]));
        assert!(s.take_alt().is_none(), "nothing new");
    }

    /// What the analyzer is offered does not depend on where the bytes it
    /// left wait (in the window, in the buffer, or moving from one to the
    /// other as the stream leaves the window): the same calls, with the same
    /// bytes, as a stream that copies everything left into its buffer;
    /// and the same again when pairs of segments arrive swapped (held out
    /// of order, then delivered behind the one that fills the gap).
    #[test]
    fn bytes_left_are_offered_again_wherever_they_wait() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        for case in 0..300 {
            let total = 1 + next(3 * WINDOW);
            let bytes: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
            // messages of random lengths; the analyzer takes whole ones only
            let mut ends = Vec::new();
            let mut at = 0;
            while at < total {
                at = (at + 1 + next(4000)).min(total);
                ends.push(at);
            }
            let take = |b: &[u8], from: usize| {
                let end = ends.iter().rev().find(|&&e| e <= from + b.len()).copied();
                end.map_or(0, |e| e.saturating_sub(from))
            };
            // the segments in order, and the reference: everything left is
            // copied and offered again, after each segment
            let (mut segs, mut seq) = (Vec::new(), 0);
            let (mut want, mut left, mut done) = (Vec::new(), Vec::<u8>::new(), 0usize);
            let mut held = Vec::new();
            while seq < total {
                let len = (1 + next(1500)).min(total - seq);
                segs.push(seq..seq + len);
                left.extend_from_slice(&bytes[seq..seq + len]);
                want.push(left.clone());
                let used = take(&left, done);
                done += used;
                left.drain(..used);
                held.push(left.len());
                seq += len;
            }
            // odd cases: some pairs of segments arrive swapped
            let mut arrival: Vec<usize> = (0..segs.len()).collect();
            if case % 2 == 1 {
                let mut k = 0;
                while k + 1 < arrival.len() {
                    if next(3) == 0 {
                        arrival.swap(k, k + 1);
                        k += 1;
                    }
                    k += 1;
                }
            }
            let (mut s, mut calls, mut taken) = (Stream::default(), Vec::new(), 0usize);
            s.syn(0);
            for k in arrival {
                let r = &segs[k];
                s.push(1 + r.start as u32, &bytes[r.clone()], &mut |b: &[u8]| {
                    calls.push(b.to_vec());
                    let used = take(b, taken);
                    taken += used;
                    used
                })
                .expect("within the limits");
                if case % 2 == 0 {
                    assert_eq!(s.held(), held[k]);
                }
            }
            // (compared whole; reported by where they part, not printed)
            let parted = calls.iter().zip(&want).position(|(a, b)| a != b);
            assert!(
                calls == want,
                "case {case}: call {parted:?} differs ({} calls, {} wanted)",
                calls.len(),
                want.len()
            );
            assert_eq!(s.held(), left.len());
            assert!(s.window.capacity() <= WINDOW, "{}", s.window.capacity());
        }
    }
}
