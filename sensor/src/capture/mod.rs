//! Packet sources: capture files read offline, and live interfaces.
//!
//! A source yields [`Packet`]s: a zero-copy view of the frame, its link type,
//! capture time and frame number. Sources are the only part of the sensor, with
//! the outputs, that does I/O.

mod file;
mod libpcap;
pub mod live;

pub(crate) use file::prefetch;
pub use file::FileReader;
pub use libpcap::LibpcapReader;

use std::ops::Range;
use std::path::PathBuf;

use bytes::Bytes;

use crate::time::Timestamp;

/// A link-layer header type (the `LINKTYPE_*` registry of tcpdump.org).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkType(pub u32);

impl LinkType {
    pub const NULL: LinkType = LinkType(0);
    pub const ETHERNET: LinkType = LinkType(1);
    /// PPP (RFC 1661): the protocol field, after an optional address and
    /// control field (`ff 03`, as `PPP_HDLC` always has it).
    pub const PPP: LinkType = LinkType(9);
    pub const PPP_HDLC: LinkType = LinkType(50);
    /// OpenBSD's DLT_RAW value as found in some files.
    pub const RAW_OPENBSD: LinkType = LinkType(14);
    pub const LOOP: LinkType = LinkType(108);
    pub const RAW: LinkType = LinkType(101);
    /// DLT_RAW as BSD/OS and some older libpcaps write it.
    pub const RAW_12: LinkType = LinkType(12);
    pub const LINUX_SLL: LinkType = LinkType(113);
    pub const IPV4: LinkType = LinkType(228);
    pub const IPV6: LinkType = LinkType(229);
    pub const LINUX_SLL2: LinkType = LinkType(276);
}

/// One captured frame. `D` says where its bytes are: [`Bytes`] as readers
/// hand them out, `&[u8]` as the engine reads them, or a place in a buffer
/// that many packets share (a `Range` of [`Frames::data`], a span of a
/// pipeline batch), so that a batch of packets costs one reference count,
/// not one per packet.
#[derive(Debug, Clone)]
pub struct Packet<D = Bytes> {
    pub ts: Timestamp,
    pub linktype: LinkType,
    /// Captured bytes (may be shorter than `orig_len` when cut by the snap length).
    pub data: D,
    pub orig_len: u32,
    /// 1-based frame number within its capture file (as Wireshark counts).
    pub frame: u64,
}

impl<D> Packet<D> {
    /// The same frame with its bytes elsewhere.
    pub fn with_data<E>(&self, data: E) -> Packet<E> {
        Packet {
            ts: self.ts,
            linktype: self.linktype,
            data,
            orig_len: self.orig_len,
            frame: self.frame,
        }
    }
}

impl<D: AsRef<[u8]>> Packet<D> {
    /// The frame borrowing its bytes.
    pub fn view(&self) -> Packet<&[u8]> {
        self.with_data(self.data.as_ref())
    }
}

/// Packets whose bytes are ranges of one buffer (a live capture batch).
#[derive(Debug, Default)]
pub struct Frames {
    pub data: Bytes,
    pub packets: Vec<Packet<Range<usize>>>,
}

/// Why a capture could not be read (further).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a pcap or pcapng capture (magic {magic:02x?})")]
    NotACapture { path: PathBuf, magic: Vec<u8> },
    #[error("{path}: damaged after frame {frame}: {what}")]
    Damaged {
        path: PathBuf,
        frame: u64,
        what: String,
    },
    #[error("{path}: {msg}")]
    Libpcap { path: PathBuf, msg: String },
    /// The reading stopped for a reason of the sensor's, not the file's.
    #[error("{path}: reading stopped: {what}")]
    Stopped { path: PathBuf, what: String },
}
