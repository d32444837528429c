//! Offline reader through libpcap, kept for comparison with the native reader
//! (`spanwatch read --reader libpcap`) and as the code path live capture shares.
//!
//! libpcap copies each record into its buffer, so each packet is copied once more
//! into an owned [`Bytes`]; and it rejects pcapng files that mix link types.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{CaptureError, LinkType, Packet};
use crate::time::Timestamp;

pub struct LibpcapReader {
    path: PathBuf,
    cap: pcap::Capture<pcap::Offline>,
    linktype: LinkType,
    frame: u64,
    done: bool,
}

impl LibpcapReader {
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let cap =
            pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano).map_err(|e| {
                CaptureError::Libpcap {
                    path: path.to_owned(),
                    msg: e.to_string(),
                }
            })?;
        let linktype = LinkType(cap.get_datalink().0 as u32);
        Ok(LibpcapReader {
            path: path.to_owned(),
            cap,
            linktype,
            frame: 0,
            done: false,
        })
    }

    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<Packet, CaptureError>> {
        if self.done {
            return None;
        }
        match self.cap.next_packet() {
            Ok(p) => {
                self.frame += 1;
                let ts = Timestamp::from_parts(
                    p.header.ts.tv_sec,
                    p.header.ts.tv_usec.max(0) as u64,
                    1_000_000_000,
                );
                Some(Ok(Packet {
                    ts,
                    linktype: self.linktype,
                    data: Bytes::copy_from_slice(p.data),
                    orig_len: p.header.len,
                    frame: self.frame,
                }))
            }
            Err(pcap::Error::NoMorePackets) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(CaptureError::Damaged {
                    path: self.path.clone(),
                    frame: self.frame,
                    what: e.to_string(),
                }))
            }
        }
    }
}
