//! Live capture from network interfaces (libpcap): promiscuous, snaplen
//! 65535, a large kernel buffer, immediate mode, an optional BPF filter.
//!
//! Each interface has a capture thread that batches packets into a bounded
//! queue. A full queue drops the batch and counts it (capture never stalls on a
//! slow consumer); kernel drops come from libpcap's statistics.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::BytesMut;
use crossbeam_channel::Sender;

use super::{CaptureError, Frames, LinkType, Packet};
use crate::time::Timestamp;

/// Packets per batch sent to the engine.
pub const BATCH: usize = 64;
/// Bytes of packet data one batch buffer holds (more than any snap length).
const BATCH_BYTES: usize = 128 * 1024;

/// Counters of one interface, updated by its capture thread.
#[derive(Debug, Default)]
pub struct IfaceStats {
    pub name: String,
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Dropped by the kernel (no room in the capture buffer).
    pub kernel_dropped: AtomicU64,
    /// Dropped by the interface or its driver.
    pub if_dropped: AtomicU64,
    /// Dropped because the engine's queue was full.
    pub queue_dropped: AtomicU64,
}

/// An opened interface, ready to capture (opened before privileges are dropped).
pub struct Opened {
    name: String,
    cap: pcap::Capture<pcap::Active>,
    linktype: LinkType,
}

pub struct LiveOptions<'a> {
    pub bpf: Option<&'a str>,
    pub buffer_size: i32,
}

/// Opens every interface; the first failure names the interface.
/// A capture refused for want of privilege says what would grant it.
fn with_hint(msg: String) -> String {
    let low = msg.to_ascii_lowercase();
    if low.contains("permission") || low.contains("not permitted") {
        format!(
            "{msg} (capturing needs root, or the capabilities: \
             setcap cap_net_raw,cap_net_admin=eip on the spanwatch binary)"
        )
    } else {
        msg
    }
}

pub fn open(interfaces: &[String], o: &LiveOptions<'_>) -> Result<Vec<Opened>, CaptureError> {
    interfaces
        .iter()
        .map(|name| {
            let err = |e: pcap::Error| CaptureError::Libpcap {
                path: name.into(),
                msg: with_hint(e.to_string()),
            };
            let mut cap = pcap::Capture::from_device(name.as_str())
                .map_err(err)?
                .promisc(true)
                .snaplen(65_535)
                .buffer_size(o.buffer_size)
                .immediate_mode(true)
                .timeout(100)
                .open()
                .map_err(err)?
                // Non-blocking: a blocked read could not see `stop`
                // (libpcap's timeout does not apply in immediate mode).
                .setnonblock()
                .map_err(err)?;
            if let Some(f) = o.bpf {
                cap.filter(f, true).map_err(err)?;
            }
            let linktype = LinkType(cap.get_datalink().0 as u32);
            Ok(Opened {
                name: name.clone(),
                cap,
                linktype,
            })
        })
        .collect()
}

/// Starts one capture thread per interface. Threads stop within a few
/// milliseconds of `stop` being set, after sending what they hold.
pub fn start(
    opened: Vec<Opened>,
    tx: Sender<Frames>,
    stop: Arc<AtomicBool>,
) -> (Vec<JoinHandle<()>>, Vec<Arc<IfaceStats>>) {
    let mut handles = Vec::new();
    let mut stats = Vec::new();
    for o in opened {
        let st = Arc::new(IfaceStats {
            name: o.name.clone(),
            ..Default::default()
        });
        stats.push(Arc::clone(&st));
        let (tx, stop) = (tx.clone(), Arc::clone(&stop));
        let h = std::thread::Builder::new()
            .name(format!("capture-{}", o.name))
            .spawn(move || run(o, tx, stop, st))
            .expect("spawning a capture thread");
        handles.push(h);
    }
    (handles, stats)
}

/// Packets captured but not yet handed over: their bytes are copied into one
/// buffer per batch, which the batch's packets are ranges of (no allocation
/// or reference count per packet).
struct Handover {
    tx: Sender<Frames>,
    st: Arc<IfaceStats>,
    linktype: LinkType,
    buf: BytesMut,
    packets: Vec<Packet<Range<usize>>>,
}

impl Handover {
    fn push(&mut self, ts: Timestamp, orig_len: u32, frame: u64, data: &[u8]) {
        if self.buf.len() + data.len() > self.buf.capacity() {
            self.send();
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(data);
        self.packets.push(Packet {
            ts,
            linktype: self.linktype,
            data: start..self.buf.len(),
            orig_len,
            frame,
        });
        if self.packets.len() >= BATCH {
            self.send();
        }
    }

    /// Hands the batch to the dispatcher; a full queue drops it (counted).
    fn send(&mut self) {
        if self.packets.is_empty() {
            return;
        }
        let fresh = BytesMut::with_capacity(BATCH_BYTES);
        let batch = Frames {
            data: std::mem::replace(&mut self.buf, fresh).freeze(),
            packets: std::mem::replace(&mut self.packets, Vec::with_capacity(BATCH)),
        };
        let n = batch.packets.len() as u64;
        if self.tx.try_send(batch).is_err() {
            self.st.queue_dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}

fn run(mut o: Opened, tx: Sender<Frames>, stop: Arc<AtomicBool>, st: Arc<IfaceStats>) {
    let mut out = Handover {
        tx,
        st: Arc::clone(&st),
        linktype: o.linktype,
        buf: BytesMut::with_capacity(BATCH_BYTES),
        packets: Vec::with_capacity(BATCH),
    };
    let mut frame = 0u64;
    let mut idle = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match o.cap.next_packet() {
            Ok(p) => {
                frame += 1;
                st.packets.fetch_add(1, Ordering::Relaxed);
                st.bytes.fetch_add(p.data.len() as u64, Ordering::Relaxed);
                let ts = Timestamp::from_parts(
                    p.header.ts.tv_sec,
                    p.header.ts.tv_usec.max(0) as u64,
                    1_000_000,
                );
                out.push(ts, p.header.len, frame, p.data);
            }
            Err(pcap::Error::TimeoutExpired) => {
                // Nothing waiting: hand over what we hold, then sleep briefly.
                out.send();
                idle += 1;
                if idle.is_multiple_of(100) {
                    if let Ok(s) = o.cap.stats() {
                        st.kernel_dropped.store(s.dropped as u64, Ordering::Relaxed);
                        st.if_dropped.store(s.if_dropped as u64, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => {
                tracing::warn!(interface = %o.name, error = %e, "capture stopped");
                break;
            }
        }
    }
    out.send();
    if let Ok(s) = o.cap.stats() {
        st.kernel_dropped.store(s.dropped as u64, Ordering::Relaxed);
        st.if_dropped.store(s.if_dropped as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refused_capture_says_what_grants_it() {
        let m =
            super::with_hint("eth1: You don't have permission to capture on that device".into());
        assert!(m.contains("setcap cap_net_raw,cap_net_admin=eip"), "{m}");
        let m = super::with_hint("eth9: No such device exists".into());
        assert!(!m.contains("setcap"), "{m}");
    }
}
