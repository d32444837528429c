//! The frames of an Initial packet (RFC 9000 §19) and the CRYPTO stream they
//! carry, put back together by offset.

use smallvec::SmallVec;

use super::packet::varint;

/// Highest CRYPTO offset followed in one direction: a ClientHello with
/// post-quantum key shares takes a few kilobytes; beyond this it is absurd.
pub const MAX_CRYPTO_BYTES: usize = 64 * 1024;
/// Disjoint pieces held before the stream is given up as hopeless.
pub const MAX_CRYPTO_PIECES: usize = 64;

/// Why a stream or a packet's frames could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A frame cut short, or a type an Initial packet cannot carry.
    Malformed,
    /// CRYPTO data beyond [`MAX_CRYPTO_BYTES`], or too many pieces.
    OutOfBounds,
}

/// One direction's CRYPTO stream: bytes by offset, the first copy of a byte
/// kept (as a receiver keeps it), with the ranges held.
#[derive(Debug, Default)]
pub struct CryptoStream {
    buf: Vec<u8>,
    /// Sorted, disjoint, non-adjacent ranges held.
    held: SmallVec<[(usize, usize); 4]>,
    /// Bytes that arrived again with different content.
    pub conflicts: u64,
    /// The stream as the later copies had it, once one differed: the sensor
    /// cannot know which copy the receiver kept (a decoy sent first and
    /// meant to die on the way), so both versions are read.
    alt: Option<Vec<u8>>,
}

impl CryptoStream {
    /// Adds the data of one CRYPTO frame at `offset`.
    pub fn add(&mut self, offset: u64, data: &[u8]) -> Result<(), FrameError> {
        let start = usize::try_from(offset).map_err(|_| FrameError::OutOfBounds)?;
        let end = start
            .checked_add(data.len())
            .filter(|e| *e <= MAX_CRYPTO_BYTES)
            .ok_or(FrameError::OutOfBounds)?;
        if start == end {
            return Ok(());
        }
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        // copy the parts not held yet; compare the parts held
        let mut at = start;
        let mut differs = false;
        for &(s, e) in self.held.iter() {
            if e <= at || s >= end {
                continue;
            }
            if s > at {
                self.buf[at..s].copy_from_slice(&data[at - start..s - start]);
            }
            let (os, oe) = (s.max(at), e.min(end));
            if self.buf[os..oe] != data[os - start..oe - start] {
                self.conflicts += 1;
                differs = true;
            }
            at = oe;
        }
        if at < end {
            self.buf[at..end].copy_from_slice(&data[at - start..]);
        }
        if differs && self.alt.is_none() {
            self.alt = Some(self.buf.clone());
        }
        if let Some(alt) = self.alt.as_mut() {
            // the later copy wins here
            alt.resize(self.buf.len(), 0);
            alt[start..end].copy_from_slice(data);
        }
        self.insert(start, end)
    }

    fn insert(&mut self, start: usize, end: usize) -> Result<(), FrameError> {
        let (mut s, mut e) = (start, end);
        self.held.retain(|&mut (hs, he)| {
            if he < s || hs > e {
                true
            } else {
                s = s.min(hs);
                e = e.max(he);
                false
            }
        });
        let at = self.held.partition_point(|&(hs, _)| hs < s);
        self.held.insert(at, (s, e));
        if self.held.len() > MAX_CRYPTO_PIECES {
            return Err(FrameError::OutOfBounds);
        }
        Ok(())
    }

    /// The bytes held without a hole from offset 0.
    pub fn contiguous(&self) -> &[u8] {
        match self.held.first() {
            Some(&(0, e)) => &self.buf[..e],
            _ => &[],
        }
    }

    /// The held prefix as the later copies had it, when a copy differed.
    pub fn contiguous_alt(&self) -> Option<&[u8]> {
        let n = self.contiguous().len();
        self.alt.as_deref().map(|a| &a[..n.min(a.len())])
    }

    /// Drops what is held (the stream is read, or given up).
    pub fn release(&mut self) {
        *self = CryptoStream {
            conflicts: self.conflicts,
            ..Default::default()
        };
    }
}

/// What a packet's frames said besides CRYPTO data.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameSummary {
    pub crypto_frames: u32,
    /// A CONNECTION_CLOSE frame.
    pub close: bool,
}

/// Walks the frames of an Initial packet's payload, giving each CRYPTO
/// frame's data to `stream`. PADDING, PING and ACK are skipped.
pub fn read(payload: &[u8], stream: &mut CryptoStream) -> Result<FrameSummary, FrameError> {
    let mut sum = FrameSummary::default();
    let mut at = 0;
    let next = |at: &mut usize| -> Result<u64, FrameError> {
        let (v, n) = varint(payload.get(*at..).unwrap_or(&[])).ok_or(FrameError::Malformed)?;
        *at += n;
        Ok(v)
    };
    while at < payload.len() {
        let ty = next(&mut at)?;
        match ty {
            0x00 => {
                // PADDING, and the PADDING frames after it: a run of zero
                // bytes, a frame each (a client pads its Initial to 1,200
                // bytes), skipped at once
                at += payload.get(at..).map_or(0, zero_run);
            }
            0x01 => {} // PING
            0x02 | 0x03 => {
                // ACK: largest, delay, range count, first range, ranges, ECN
                next(&mut at)?;
                next(&mut at)?;
                let ranges = next(&mut at)?;
                next(&mut at)?;
                if ranges > payload.len() as u64 {
                    return Err(FrameError::Malformed);
                }
                for _ in 0..ranges * 2 {
                    next(&mut at)?;
                }
                if ty == 0x03 {
                    for _ in 0..3 {
                        next(&mut at)?;
                    }
                }
            }
            0x06 => {
                let offset = next(&mut at)?;
                let len = usize::try_from(next(&mut at)?).map_err(|_| FrameError::Malformed)?;
                let data = at
                    .checked_add(len)
                    .and_then(|e| payload.get(at..e))
                    .ok_or(FrameError::Malformed)?;
                at += len;
                sum.crypto_frames += 1;
                stream.add(offset, data)?;
            }
            0x1c | 0x1d => {
                next(&mut at)?;
                if ty == 0x1c {
                    next(&mut at)?;
                }
                let len = usize::try_from(next(&mut at)?).map_err(|_| FrameError::Malformed)?;
                at = at
                    .checked_add(len)
                    .filter(|e| *e <= payload.len())
                    .ok_or(FrameError::Malformed)?;
                sum.close = true;
            }
            _ => return Err(FrameError::Malformed),
        }
    }
    Ok(sum)
}

/// How many zero bytes `b` starts with: sixteen at a time (an array
/// compare, a vector compare in the machine code), then one by one.
fn zero_run(b: &[u8]) -> usize {
    let blocks = b
        .chunks_exact(16)
        .take_while(|c| <&[u8; 16]>::try_from(*c).is_ok_and(|c| *c == [0; 16]))
        .count();
    let n = blocks * 16;
    n + b[n..].iter().take_while(|&&x| x == 0).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs of PADDING of every length to 40 before, between and after
    /// other frames read as the frames without them; a run cut by a foreign
    /// byte is still malformed; a padding type written in two bytes (a
    /// varint 0, `0x40 0x00`) starts a run too.
    #[test]
    fn padding_runs_of_any_length_are_skipped() {
        let msg: Vec<u8> = (0..60u8).collect();
        for n in 0..40 {
            let pad = vec![0u8; n];
            let mut p = pad.clone();
            p.extend(crypto(0, &msg[..30]));
            p.extend(&pad);
            p.push(0x01);
            p.extend(&pad);
            p.extend(crypto(30, &msg[30..]));
            p.extend(&pad);
            let mut s = CryptoStream::default();
            let sum = read(&p, &mut s).expect("frames");
            assert_eq!(sum.crypto_frames, 2, "{n}");
            assert_eq!(s.contiguous(), &msg[..], "{n}");
            let mut bad = pad.clone();
            bad.push(0x08);
            bad.extend(&pad);
            let mut s = CryptoStream::default();
            assert_eq!(read(&bad, &mut s), Err(FrameError::Malformed), "{n}");
            let mut long = vec![0x40, 0x00];
            long.extend(&pad);
            long.extend(crypto(0, &msg[..5]));
            let mut s = CryptoStream::default();
            assert_eq!(read(&long, &mut s).map(|f| f.crypto_frames), Ok(1), "{n}");
            assert_eq!(zero_run(&pad), n);
            assert_eq!(zero_run(&bad), n);
        }
    }

    fn crypto(offset: u16, data: &[u8]) -> Vec<u8> {
        let mut v = vec![0x06, 0x40 | (offset >> 8) as u8, offset as u8];
        v.extend_from_slice(&[0x40 | (data.len() >> 8) as u8, data.len() as u8]);
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn out_of_order_pieces_in_one_payload_and_across_payloads() {
        let msg: Vec<u8> = (0..200u8).collect();
        let mut first = vec![0x01, 0x00, 0x00];
        first.extend(crypto(150, &msg[150..]));
        first.extend([0x02, 0x05, 0x00, 0x00, 0x00]); // ACK
        first.extend(crypto(0, &msg[..50]));
        let mut s = CryptoStream::default();
        let sum = read(&first, &mut s).expect("frames");
        assert_eq!(sum.crypto_frames, 2);
        assert_eq!(s.contiguous(), &msg[..50]);
        let second = crypto(40, &msg[40..160]);
        read(&second, &mut s).expect("frames");
        assert_eq!(s.contiguous(), &msg[..]);
        assert_eq!(s.conflicts, 0);
    }

    #[test]
    fn first_copy_wins_and_a_differing_copy_is_counted() {
        let mut s = CryptoStream::default();
        s.add(0, b"hello").expect("add");
        s.add(2, b"XXo world").expect("add");
        assert_eq!(s.contiguous(), b"hello world");
        assert_eq!(s.conflicts, 1);
    }

    #[test]
    fn absurd_offsets_and_too_many_pieces_are_out_of_bounds() {
        let mut s = CryptoStream::default();
        assert_eq!(s.add(1 << 40, b"x"), Err(FrameError::OutOfBounds));
        assert_eq!(
            s.add(MAX_CRYPTO_BYTES as u64 - 1, b"xy"),
            Err(FrameError::OutOfBounds)
        );
        let mut s = CryptoStream::default();
        let r: Result<Vec<()>, _> = (0..=MAX_CRYPTO_PIECES as u64)
            .map(|i| s.add(i * 4, b"x"))
            .collect();
        assert_eq!(r, Err(FrameError::OutOfBounds));
    }

    #[test]
    fn cut_frames_and_foreign_types_are_malformed() {
        let f = crypto(0, b"abcdef");
        for cut in 1..f.len() {
            let mut s = CryptoStream::default();
            assert_eq!(read(&f[..cut], &mut s), Err(FrameError::Malformed), "{cut}");
        }
        let mut s = CryptoStream::default();
        assert_eq!(read(&[0x08, 0, 0], &mut s), Err(FrameError::Malformed));
        // CONNECTION_CLOSE with a reason
        let sum = read(&[0x1c, 0x01, 0x06, 0x02, b'n', b'o'], &mut s).expect("close");
        assert!(sum.close);
    }
}
