//! Framing flights into Ethernet/VLAN/IPv4/IPv6/TCP/UDP packets with valid
//! checksums (etherparse's PacketBuilder), and writing pcap and pcapng.

use std::net::IpAddr;

use etherparse::PacketBuilder;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// Bytes one side wrote in one go.
#[derive(Debug, Clone)]
pub struct Flight {
    pub side: Side,
    pub data: Vec<u8>,
}

impl Flight {
    pub fn to_server(data: Vec<u8>) -> Self {
        Flight {
            side: Side::Client,
            data,
        }
    }
    pub fn to_client(data: Vec<u8>) -> Self {
        Flight {
            side: Side::Server,
            data,
        }
    }
}

/// A captured frame: time in nanoseconds since the epoch, link type, bytes.
#[derive(Debug, Clone)]
pub struct Frame {
    pub ts_ns: u64,
    pub linktype: u32,
    pub data: Vec<u8>,
}

pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;

/// Capture time, advancing a little with every frame.
pub struct Clock(pub u64);

impl Clock {
    pub fn tick(&mut self, us: u64) -> u64 {
        self.0 += us * 1000;
        self.0
    }
}

/// Addresses of one conversation.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    pub client: (IpAddr, u16),
    pub server: (IpAddr, u16),
    pub vlan: Option<u16>,
    /// Frame as Ethernet (else raw IP).
    pub ethernet: bool,
}

const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_SERVER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

pub enum L4<'a> {
    Tcp {
        seq: u32,
        ack: Option<u32>,
        syn: bool,
        fin: bool,
        psh: bool,
    },
    Udp,
    #[allow(dead_code)]
    Raw(&'a [u8]),
}

/// Builds one frame from `side` with `payload`.
pub fn frame(ep: &Endpoints, side: Side, l4: L4<'_>, payload: &[u8], ts_ns: u64) -> Frame {
    let (src, dst, (smac, dmac)) = match side {
        Side::Client => (ep.client, ep.server, (MAC_CLIENT, MAC_SERVER)),
        Side::Server => (ep.server, ep.client, (MAC_SERVER, MAC_CLIENT)),
    };
    let ip = match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            PacketBuilder::ethernet2(smac, dmac).ipv4(s.octets(), d.octets(), 64)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            PacketBuilder::ethernet2(smac, dmac).ipv6(s.octets(), d.octets(), 64)
        }
        _ => panic!("mixed address families in one conversation"),
    };
    let mut out = Vec::with_capacity(payload.len() + 80);
    let written = match l4 {
        L4::Tcp {
            seq,
            ack,
            syn,
            fin,
            psh,
        } => {
            let mut b = ip.tcp(src.1, dst.1, seq, 64240);
            if syn {
                b = b.syn();
            }
            if let Some(a) = ack {
                b = b.ack(a);
            }
            if fin {
                b = b.fin();
            }
            if psh {
                b = b.psh();
            }
            b.write(&mut out, payload)
        }
        L4::Udp => ip.udp(src.1, dst.1).write(&mut out, payload),
        L4::Raw(_) => unreachable!("raw frames are built by hand"),
    };
    written.expect("writing to a Vec cannot fail");
    if let Some(v) = ep.vlan {
        let tci = (v & 0x0fff).to_be_bytes();
        out.splice(12..12, [0x81, 0x00, tci[0], tci[1]]);
    }
    if !ep.ethernet {
        out.drain(..14);
    }
    Frame {
        ts_ns,
        linktype: if ep.ethernet {
            LINKTYPE_ETHERNET
        } else {
            LINKTYPE_RAW
        },
        data: out,
    }
}

/// A TCP conversation: handshake, data segments of at most `mss` bytes with
/// ACKs, and a FIN exchange.
pub struct Tcp<'c> {
    pub ep: Endpoints,
    pub clock: &'c mut Clock,
    pub mss: usize,
    seq: [u32; 2],
    pub frames: Vec<Frame>,
}

impl<'c> Tcp<'c> {
    pub fn open(ep: Endpoints, clock: &'c mut Clock, mss: usize, isn: (u32, u32)) -> Self {
        let mut t = Tcp {
            ep,
            clock,
            mss,
            seq: [isn.0, isn.1],
            frames: Vec::new(),
        };
        t.segment(Side::Client, Flags::SYN, &[], 100);
        t.segment(Side::Server, Flags::SYN, &[], 800);
        t.segment(Side::Client, Flags::NONE, &[], 50);
        t
    }

    fn idx(side: Side) -> usize {
        match side {
            Side::Client => 0,
            Side::Server => 1,
        }
    }

    /// One segment from `side`, `us` microseconds after the previous one.
    /// Every segment but the client's SYN acknowledges the peer; SYN and FIN
    /// take one sequence number, data its length.
    fn segment(&mut self, side: Side, f: Flags, payload: &[u8], us: u64) {
        let i = Self::idx(side);
        let ts = self.clock.tick(us);
        let ack = (side == Side::Server || !f.syn).then_some(self.seq[1 - i]);
        let l4 = L4::Tcp {
            seq: self.seq[i],
            ack,
            syn: f.syn,
            fin: f.fin,
            psh: f.psh,
        };
        self.frames.push(frame(&self.ep, side, l4, payload, ts));
        let used = payload.len() as u32 + u32::from(f.syn) + u32::from(f.fin);
        self.seq[i] = self.seq[i].wrapping_add(used);
    }

    /// A segment from `side` at its current sequence number that does not
    /// advance it: what the next `send` will carry, but other bytes (a decoy).
    pub fn decoy(&mut self, side: Side, data: &[u8]) -> Frame {
        let i = Self::idx(side);
        let seq = self.seq[i];
        self.segment(side, Flags::PSH, data, 20);
        self.seq[i] = seq;
        self.frames.pop().expect("the segment just made")
    }

    /// Adds a frame made elsewhere (a decoy, altered).
    pub fn push_frame(&mut self, f: Frame) {
        self.frames.push(f);
    }

    /// Sends bytes from `side` in MSS-sized segments, then the peer ACKs.
    pub fn send(&mut self, side: Side, data: &[u8]) {
        for chunk in data.chunks(self.mss.max(1)) {
            self.segment(side, Flags::PSH, chunk, 20);
        }
        let peer = if side == Side::Client {
            Side::Server
        } else {
            Side::Client
        };
        self.segment(peer, Flags::NONE, &[], 350);
    }

    pub fn flights(&mut self, flights: &[Flight]) {
        for f in flights {
            self.send(f.side, &f.data);
        }
    }

    /// FIN from the client, FIN from the server, last ACK.
    pub fn close(mut self) -> Vec<Frame> {
        self.segment(Side::Client, Flags::FIN, &[], 200);
        self.segment(Side::Server, Flags::FIN, &[], 200);
        self.segment(Side::Client, Flags::NONE, &[], 50);
        self.frames
    }
}

#[derive(Clone, Copy)]
struct Flags {
    syn: bool,
    fin: bool,
    psh: bool,
}

impl Flags {
    const NONE: Flags = Flags {
        syn: false,
        fin: false,
        psh: false,
    };
    const SYN: Flags = Flags {
        syn: true,
        ..Flags::NONE
    };
    const FIN: Flags = Flags {
        fin: true,
        ..Flags::NONE
    };
    const PSH: Flags = Flags {
        psh: true,
        ..Flags::NONE
    };
}

/// Streams frames into a little-endian pcap, microsecond or nanosecond.
pub struct PcapWriter<W: std::io::Write> {
    out: W,
    nanos: bool,
    linktype: u32,
    pub frames: u64,
    pub bytes: u64,
}

impl<W: std::io::Write> PcapWriter<W> {
    pub fn new(out: W, linktype: u32) -> std::io::Result<Self> {
        Self::with_resolution(out, linktype, false)
    }

    pub fn with_resolution(mut out: W, linktype: u32, nanos: bool) -> std::io::Result<Self> {
        let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&magic.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&linktype.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter {
            out,
            nanos,
            linktype,
            frames: 0,
            bytes: 0,
        })
    }

    pub fn write(&mut self, f: &Frame) -> std::io::Result<()> {
        assert_eq!(f.linktype, self.linktype, "a pcap file has one link type");
        let frac = f.ts_ns % 1_000_000_000;
        let frac = if self.nanos { frac } else { frac / 1000 };
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&((f.ts_ns / 1_000_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&(frac as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(f.data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(f.data.len() as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(&f.data)?;
        self.frames += 1;
        self.bytes += f.data.len() as u64;
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Writes a little-endian pcap with microsecond (or nanosecond) timestamps.
pub fn write_pcap(path: &std::path::Path, frames: &[Frame], nanos: bool) -> std::io::Result<()> {
    let linktype = frames
        .first()
        .map(|f| f.linktype)
        .unwrap_or(LINKTYPE_ETHERNET);
    let mut w = PcapWriter::with_resolution(
        std::io::BufWriter::new(std::fs::File::create(path)?),
        linktype,
        nanos,
    )?;
    for f in frames {
        w.write(f)?;
    }
    w.finish()
}

fn block(out: &mut Vec<u8>, ty: u32, body: &[u8]) {
    let pad = (4 - body.len() % 4) % 4;
    let len = (12 + body.len() + pad) as u32;
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    out.extend(std::iter::repeat_n(0u8, pad));
    out.extend_from_slice(&len.to_le_bytes());
}

/// Writes a pcapng with one interface per link type seen (nanosecond
/// resolution, `if_tsresol` = 9), packets in the order given.
pub fn write_pcapng(path: &std::path::Path, frames: &[Frame]) -> std::io::Result<()> {
    let mut out = Vec::new();
    // Section header: byte-order magic, version 1.0, unknown section length.
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    block(&mut out, 0x0a0d_0d0a, &shb);
    let mut ifaces: Vec<u32> = Vec::new();
    for f in frames {
        if !ifaces.contains(&f.linktype) {
            ifaces.push(f.linktype);
            let mut idb = Vec::new();
            idb.extend_from_slice(&(f.linktype as u16).to_le_bytes());
            idb.extend_from_slice(&0u16.to_le_bytes());
            idb.extend_from_slice(&65535u32.to_le_bytes());
            // option if_tsresol (9) = 9: nanoseconds; then opt_endofopt
            idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
            block(&mut out, 1, &idb);
        }
    }
    for f in frames {
        let if_id = ifaces.iter().position(|l| *l == f.linktype).unwrap_or(0) as u32;
        let mut epb = Vec::new();
        epb.extend_from_slice(&if_id.to_le_bytes());
        epb.extend_from_slice(&((f.ts_ns >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(f.ts_ns as u32).to_le_bytes());
        epb.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(f.data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&f.data);
        block(&mut out, 6, &epb);
    }
    std::fs::write(path, out)
}
