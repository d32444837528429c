//! Zero-copy packet decoding: link layer → VLAN tags → IPv4/IPv6 → TCP/UDP.
//!
//! [`decode`] turns a captured frame into a [`Decoded`] view whose payload borrows
//! the frame. IPv4 and transport headers are sliced by etherparse (the lax
//! slicer decodes truncated packets as far as they go); IPv6 and its
//! extension-header chain are the `ipv6` module's own bounded walk. This module maps
//! the link types a capture can carry onto it and reduces the result to the few
//! fields the flow layer needs. Errors are a `Copy` enum that the caller counts.

pub mod defrag;
mod ipv6;

use std::net::IpAddr;

use etherparse::{IpNumber, LaxNetSlice, LaxSlicedPacket, TransportSlice};

use crate::capture::LinkType;

/// Up to two VLAN ids, outer first (802.1ad S-tag, then 802.1Q C-tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Vlans {
    ids: [u16; 2],
    len: u8,
}

impl Vlans {
    pub fn new(ids: &[u16]) -> Self {
        let mut v = Vlans::default();
        for &id in ids.iter().take(2) {
            v.ids[v.len as usize] = id;
            v.len += 1;
        }
        v
    }
    pub fn as_slice(&self) -> &[u16] {
        &self.ids[..self.len as usize]
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Every field in one word (equal values, equal words).
    pub fn word(&self) -> u64 {
        u64::from(self.ids[0]) << 32 | u64::from(self.ids[1]) << 16 | u64::from(self.len)
    }
}

/// TCP header fields the flow and stream layers use.
#[derive(Debug, Clone, Copy)]
pub struct TcpHeader {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

impl TcpHeader {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// The transport layer of a decoded packet.
#[derive(Debug, Clone, Copy)]
pub enum Transport {
    Tcp(TcpHeader),
    Udp,
    /// Any other IP protocol (ICMP, SCTP, GRE …): tracked as a flow with port 0.
    Other,
}

/// A decoded packet: addresses, ports and a payload borrowed from the frame.
#[derive(Debug, Clone, Copy)]
pub struct Decoded<'a> {
    pub vlans: Vlans,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub transport: Transport,
    pub payload: &'a [u8],
    /// The whole TCP segment, header included (empty for other protocols),
    /// for checking its checksum.
    pub segment: &'a [u8],
}

/// The fragment of an IP datagram (anything but a whole datagram).
#[derive(Debug, Clone, Copy)]
pub struct Fragment<'a> {
    pub vlans: Vlans,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub id: u32,
    /// Offset of this fragment's payload in bytes.
    pub offset: u32,
    pub more: bool,
    pub payload: &'a [u8],
}

/// What a frame decoded to.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    Packet(Decoded<'a>),
    Fragment(Fragment<'a>),
}

/// Why a frame was not decoded to an IP packet. Each reason is a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A link type the sensor does not read (counted, skipped).
    UnknownLinkType,
    /// Not IP: ARP, LLDP, STP, an unknown EtherType …
    NotIp,
    /// Cut short before the transport header was complete.
    Truncated,
    /// Headers that contradict themselves (bad IHL, bad version …).
    Malformed,
}

/// Tunnels followed at most (VLAN stacks not counted).
pub const MAX_TUNNEL_DEPTH: u8 = 4;
/// VLAN tags walked at most in one Ethernet header.
const MAX_VLAN_TAGS: usize = 4;

const ET_IPV4: u16 = 0x0800;
const ET_IPV6: u16 = 0x86dd;
const ET_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];
const ET_PPPOE_SESSION: u16 = 0x8864;
const ET_MPLS: [u16; 2] = [0x8847, 0x8848];
const ET_TEB: u16 = 0x6558;
const ET_ERSPAN2: u16 = 0x88be;
const ET_ERSPAN3: u16 = 0x22eb;
const ET_PPP: u16 = 0x880b;

/// Decodes one frame of the given link type.
///
/// Ethernet, 802.1Q/802.1ad (QinQ), PPPoE and MPLS are walked here; IPv4 and
/// the transport header are etherparse's slicers, IPv6 is the `ipv6` module's. IP-in-IP (4in4, 6in4,
/// 4in6, 6in6), GRE (incl. PPTP and ERSPAN II/III), VXLAN, Geneve and GTP-U
/// are followed to the innermost packet, so a tap on a tunnelled link sees the
/// same flows as one inside it. Events keep the outer VLAN tags.
pub fn decode(linktype: LinkType, data: &[u8]) -> Result<Outcome<'_>, DecodeError> {
    if linktype == LinkType::ETHERNET {
        if let Some(d) = ethernet_ipv4_tcp(data) {
            return Ok(Outcome::Packet(d));
        }
    }
    decode_general(linktype, data)
}

/// The common case read straight off the bytes, built where it is returned
/// (the general path hands a decoded packet through five functions and the
/// tunnel check, a copy at each: a quarter of a worker's instructions went
/// there): a whole TCP segment in IPv4 in Ethernet, VLAN tags allowed. TCP
/// carries no tunnel spanwatch follows, so this gives exactly what
/// [`decode_general`] gives (a test compares them on every frame of the
/// captures and on damaged copies); anything else is left to it.
fn ethernet_ipv4_tcp(d: &[u8]) -> Option<Decoded<'_>> {
    let eth: &[u8; 14] = d.get(..14)?.try_into().ok()?;
    let mut et = u16::from_be_bytes([eth[12], eth[13]]);
    if et == ET_IPV4 {
        // untagged, the most common of all
        return ipv4_tcp(&d[14..], Vlans::default());
    }
    let mut vlans = Vlans::default();
    let mut at = 12;
    let mut tags = 0;
    while ET_VLAN.contains(&et) {
        tags += 1;
        if tags > MAX_VLAN_TAGS {
            return None;
        }
        let tci = be16(d, at + 2)?;
        if (vlans.len as usize) < 2 {
            vlans.ids[vlans.len as usize] = tci & 0x0fff;
            vlans.len += 1;
        }
        at += 4;
        et = be16(d, at)?;
    }
    if et != ET_IPV4 {
        return None;
    }
    ipv4_tcp(d.get(at + 2..)?, vlans)
}

/// What the common case's decode (`ethernet_ipv4_tcp`) finds in a frame,
/// by offsets into it: made by the thread that reads a capture, for the one
/// worker that processes it, so that the worker, whose time bounds the run,
/// need not (the reader's core has time to spare). Not the checksum: that
/// reads every byte, and the worker sums only the segments of flows it
/// follows (most of a bulk transfer's are not).
#[derive(Debug, Clone, Copy)]
pub struct Found {
    src: [u8; 4],
    dst: [u8; 4],
    seq: u32,
    ack: u32,
    sport: u16,
    dport: u16,
    vlan_ids: [u16; 2],
    /// Where the TCP segment and its payload begin, and where both end
    /// (frames of up to 64 KiB: it goes with every packet the dispatcher
    /// hands a worker, and stays 32 bytes).
    segment: u16,
    payload: u16,
    end: std::num::NonZeroU16,
    vlan_count: u8,
    flags: u8,
}

impl Found {
    /// The common case's decode of `data` (None: not that case, or a frame
    /// over 64 KiB).
    pub fn find(data: &[u8]) -> Option<Found> {
        let d = ethernet_ipv4_tcp(data)?;
        let (IpAddr::V4(src), IpAddr::V4(dst), Transport::Tcp(tcp)) = (d.src, d.dst, d.transport)
        else {
            return None;
        };
        let at = |s: &[u8]| s.as_ptr() as usize - data.as_ptr() as usize;
        let end = at(d.segment) + d.segment.len();
        Some(Found {
            src: src.octets(),
            dst: dst.octets(),
            seq: tcp.seq,
            ack: tcp.ack,
            sport: d.sport,
            dport: d.dport,
            vlan_ids: d.vlans.ids,
            segment: u16::try_from(at(d.segment)).ok()?,
            payload: u16::try_from(at(d.payload)).ok()?,
            end: std::num::NonZeroU16::new(u16::try_from(end).ok()?)?,
            vlan_count: d.vlans.len,
            flags: tcp.flags,
        })
    }

    /// The packet it found, in the frame it was found in (None if `data`
    /// is not that frame's length).
    pub fn decoded<'a>(&self, data: &'a [u8]) -> Option<Decoded<'a>> {
        let end = usize::from(self.end.get());
        let segment = data.get(usize::from(self.segment)..end)?;
        let payload = data.get(usize::from(self.payload)..end)?;
        Some(Decoded {
            vlans: Vlans {
                ids: self.vlan_ids,
                len: self.vlan_count,
            },
            src: IpAddr::from(self.src),
            dst: IpAddr::from(self.dst),
            proto: 6,
            sport: self.sport,
            dport: self.dport,
            transport: Transport::Tcp(TcpHeader {
                seq: self.seq,
                ack: self.ack,
                flags: self.flags,
            }),
            payload,
            segment,
        })
    }
}

/// Every link type, tunnel and IP version (see [`decode`]).
fn decode_general(linktype: LinkType, data: &[u8]) -> Result<Outcome<'_>, DecodeError> {
    let mut vlans = Vlans::default();
    match linktype {
        LinkType::ETHERNET => ethernet(data, &mut vlans, 0),
        LinkType::NULL | LinkType::LOOP => {
            ip(data.get(4..).ok_or(DecodeError::Truncated)?, vlans, 0)
        }
        LinkType::RAW
        | LinkType::RAW_12
        | LinkType::RAW_OPENBSD
        | LinkType::IPV4
        | LinkType::IPV6 => ip(data, vlans, 0),
        LinkType::PPP | LinkType::PPP_HDLC => {
            let d = data.strip_prefix(&[0xff, 0x03]).unwrap_or(data);
            let proto = be16(d, 0).ok_or(DecodeError::Truncated)?;
            ppp(proto, &d[2..], vlans, 0)
        }
        LinkType::LINUX_SLL => {
            let proto = be16(data, 14).ok_or(DecodeError::Truncated)?;
            ethertype(proto, &data[16..], &mut vlans, 0)
        }
        LinkType::LINUX_SLL2 => {
            let proto = be16(data, 0).ok_or(DecodeError::Truncated)?;
            ethertype(
                proto,
                data.get(20..).ok_or(DecodeError::Truncated)?,
                &mut vlans,
                0,
            )
        }
        _ => Err(DecodeError::UnknownLinkType),
    }
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    let b = data.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn ethernet<'a>(d: &'a [u8], vlans: &mut Vlans, depth: u8) -> Result<Outcome<'a>, DecodeError> {
    let et = be16(d, 12).ok_or(DecodeError::Truncated)?;
    ethertype(et, &d[14..], vlans, depth)
}

fn ethertype<'a>(
    mut et: u16,
    mut d: &'a [u8],
    vlans: &mut Vlans,
    depth: u8,
) -> Result<Outcome<'a>, DecodeError> {
    let mut tags = 0;
    let record = vlans.is_empty();
    while ET_VLAN.contains(&et) {
        tags += 1;
        if tags > MAX_VLAN_TAGS {
            return Err(DecodeError::Malformed);
        }
        let tci = be16(d, 0).ok_or(DecodeError::Truncated)?;
        if record && (vlans.len as usize) < 2 {
            vlans.ids[vlans.len as usize] = tci & 0x0fff;
            vlans.len += 1;
        }
        et = be16(d, 2).ok_or(DecodeError::Truncated)?;
        d = &d[4..];
    }
    match et {
        ET_IPV4 | ET_IPV6 => ip(d, *vlans, depth),
        ET_PPPOE_SESSION => {
            // RFC 2516: ver/type, code, session id, length; then the PPP protocol.
            let proto = be16(d, 6).ok_or(DecodeError::Truncated)?;
            ppp(proto, &d[8..], *vlans, depth)
        }
        e if ET_MPLS.contains(&e) => {
            // Pop labels to the bottom of the stack, then guess the payload.
            let mut rest = d;
            for _ in 0..8 {
                let entry = rest.get(..4).ok_or(DecodeError::Truncated)?;
                rest = &rest[4..];
                if entry[2] & 1 == 1 {
                    return match rest.first().map(|b| b >> 4) {
                        Some(4) | Some(6) => ip(rest, *vlans, depth),
                        _ => Err(DecodeError::NotIp),
                    };
                }
            }
            Err(DecodeError::Malformed)
        }
        _ => Err(DecodeError::NotIp),
    }
}

fn ppp(proto: u16, d: &[u8], vlans: Vlans, depth: u8) -> Result<Outcome<'_>, DecodeError> {
    match proto {
        0x0021 | 0x0057 => ip(d, vlans, depth),
        _ => Err(DecodeError::NotIp),
    }
}

fn ip(data: &[u8], vlans: Vlans, depth: u8) -> Result<Outcome<'_>, DecodeError> {
    let outer = match data.first().map(|b| b >> 4) {
        Some(4) => ipv4(data, vlans)?,
        Some(6) => ipv6::decode(data, vlans)?,
        Some(_) => return Err(DecodeError::NotIp),
        None => return Err(DecodeError::Truncated),
    };
    if depth >= MAX_TUNNEL_DEPTH {
        return Ok(outer);
    }
    // An inner packet that does not decode leaves the outer one as it was.
    Ok(tunnel(&outer, vlans, depth + 1)
        .and_then(|r| r.ok())
        .unwrap_or(outer))
}

/// The packet inside a tunnel, if `outer` is one.
fn tunnel<'a>(
    outer: &Outcome<'a>,
    mut vlans: Vlans,
    depth: u8,
) -> Option<Result<Outcome<'a>, DecodeError>> {
    let Outcome::Packet(p) = outer else {
        return None;
    };
    let d = p.payload;
    match (p.proto, p.transport) {
        (4 | 41, _) => Some(ip(d, vlans, depth)),
        (47, _) => gre(d, vlans, depth),
        (17, Transport::Udp) if p.dport == 4789 => Some(ethernet(d.get(8..)?, &mut vlans, depth)),
        (17, Transport::Udp) if p.dport == 6081 => {
            let opt_len = (d.first()? & 0x3f) as usize * 4;
            let proto = be16(d, 2)?;
            let rest = d.get(8 + opt_len..)?;
            if proto == ET_TEB {
                Some(ethernet(rest, &mut vlans, depth))
            } else {
                Some(ethertype(proto, rest, &mut vlans, depth))
            }
        }
        (17, Transport::Udp) if p.dport == 2152 || p.sport == 2152 => {
            // GTP-U (3GPP TS 29.281): a G-PDU (type 255) carries an IP packet.
            let flags = *d.first()?;
            if flags >> 5 != 1 || *d.get(1)? != 255 {
                return None;
            }
            let mut len = 8;
            if flags & 0x07 != 0 {
                len += 4;
                // extension headers give their length in 4-byte units
                let mut next = *d.get(11)?;
                let mut n = 0;
                while next != 0 {
                    n += 1;
                    let units = *d.get(len)? as usize;
                    if units == 0 || n > 8 {
                        return None;
                    }
                    len += units * 4;
                    next = *d.get(len - 1)?;
                }
            }
            Some(ip(d.get(len..)?, vlans, depth))
        }
        _ => None,
    }
}

/// The packet inside GRE (RFC 2784/2890), enhanced GRE (PPTP) or ERSPAN.
fn gre(d: &[u8], mut vlans: Vlans, depth: u8) -> Option<Result<Outcome<'_>, DecodeError>> {
    let flags = be16(d, 0)?;
    let proto = be16(d, 2)?;
    let version = flags & 7;
    let mut len = 4;
    if version == 1 {
        // Enhanced GRE (PPTP, RFC 2637): key always present, seq and ack optional.
        len +=
            4 + if flags & 0x1000 != 0 { 4 } else { 0 } + if flags & 0x0080 != 0 { 4 } else { 0 };
        let mut rest = d.get(len..)?;
        if rest.starts_with(&[0xff, 0x03]) {
            rest = &rest[2..];
        }
        let (pp, body) = if rest.first()? & 1 == 1 {
            (rest[0] as u16, &rest[1..])
        } else {
            (be16(rest, 0)?, &rest[2..])
        };
        return (proto == ET_PPP).then(|| ppp(pp, body, vlans, depth));
    }
    len += [0x8000u16, 0x2000, 0x1000]
        .iter()
        .filter(|f| flags & **f != 0)
        .count()
        * 4;
    let rest = d.get(len..)?;
    match proto {
        ET_TEB => Some(ethernet(rest, &mut vlans, depth)),
        ET_ERSPAN2 => Some(ethernet(rest.get(8..)?, &mut vlans, depth)),
        ET_ERSPAN3 => {
            // 12-byte header, plus 8 bytes of platform data when O is set.
            let extra = if rest.get(11)? & 1 != 0 { 8 } else { 0 };
            Some(ethernet(rest.get(12 + extra..)?, &mut vlans, depth))
        }
        et => Some(ethertype(et, rest, &mut vlans, depth)),
    }
}

/// IPv4: whole TCP segments read directly ([`ipv4_tcp`]), the rest through
/// etherparse's lax slicer ([`ipv4_lax`]). Audited for the pattern of the
/// IPv6 bug (following a next-header into bytes the lax parser did not
/// parse): IPv4 has no extension chain, only one optional Authentication
/// Header that `LaxIpv4Slice` parses with its checked slicer, and the payload
/// it hands back is the slice it checked. The transport headers are read with
/// the checked `TcpSlice::from_slice` and `UdpSlice::from_slice_lax` (also
/// after reassembly, see [`transport_of`]); reassembly is etherparse's
/// `IpDefragBuf`, which refuses inconsistent fragments. IPv6 is the `ipv6`
/// module's own code.
fn ipv4(data: &[u8], vlans: Vlans) -> Result<Outcome<'_>, DecodeError> {
    match ipv4_tcp(data, vlans) {
        Some(d) => Ok(Outcome::Packet(d)),
        None => ipv4_lax(data, vlans),
    }
}

/// The common case read straight off the bytes: a whole (unfragmented) TCP
/// segment in IPv4 whose headers are complete. Gives exactly what
/// [`ipv4_lax`] gives for it (a test compares them on every packet of the
/// captures and on damaged copies); anything else is left to it.
fn ipv4_tcp(data: &[u8], vlans: Vlans) -> Option<Decoded<'_>> {
    // the fixed headers as arrays: their fields read without a bounds check each
    let ip: &[u8; 20] = data.get(..20)?.try_into().ok()?;
    let hl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || hl < 20 || hl > data.len() || ip[9] != 6 {
        return None;
    }
    // more fragments, or an offset: a fragment
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    // the total length where it fits, else the captured bytes (lax)
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let seg = if total < hl || total > data.len() {
        &data[hl..]
    } else {
        &data[hl..total]
    };
    let tcp: &[u8; 20] = seg.get(..20)?.try_into().ok()?;
    let thl = usize::from(tcp[12] >> 4) * 4;
    if thl < 20 || thl > seg.len() {
        return None;
    }
    let word = |at: usize| u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
    let addr = |at: usize| IpAddr::from([ip[at], ip[at + 1], ip[at + 2], ip[at + 3]]);
    Some(Decoded {
        vlans,
        src: addr(12),
        dst: addr(16),
        proto: 6,
        sport: u16::from_be_bytes([tcp[0], tcp[1]]),
        dport: u16::from_be_bytes([tcp[2], tcp[3]]),
        transport: Transport::Tcp(TcpHeader {
            seq: word(4),
            ack: word(8),
            flags: tcp[13],
        }),
        payload: &seg[thl..],
        segment: seg,
    })
}

/// IPv4 through etherparse's lax slicer.
fn ipv4_lax(data: &[u8], vlans: Vlans) -> Result<Outcome<'_>, DecodeError> {
    let p = LaxSlicedPacket::from_ip(data).map_err(|e| match e {
        etherparse::err::ip::LaxHeaderSliceError::Len(_) => DecodeError::Truncated,
        etherparse::err::ip::LaxHeaderSliceError::Content(_) => DecodeError::Malformed,
    })?;
    let v4 = match &p.net {
        Some(LaxNetSlice::Ipv4(v4)) => v4,
        Some(_) => return Err(DecodeError::Malformed),
        None => {
            return Err(match &p.stop_err {
                Some((etherparse::err::packet::SliceError::Len(_), _)) => DecodeError::Truncated,
                Some(_) => DecodeError::Malformed,
                None => DecodeError::NotIp,
            })
        }
    };
    let h = v4.header();
    let src = IpAddr::V4(h.source_addr());
    let dst = IpAddr::V4(h.destination_addr());
    let payload = v4.payload();
    let proto = payload.ip_number.0;
    if h.is_fragmenting_payload() {
        return Ok(Outcome::Fragment(Fragment {
            vlans,
            src,
            dst,
            proto,
            id: h.identification() as u32,
            offset: h.fragments_offset().byte_offset() as u32,
            more: h.more_fragments(),
            payload: payload.payload,
        }));
    }
    let base = Decoded {
        vlans,
        src,
        dst,
        proto,
        sport: 0,
        dport: 0,
        transport: Transport::Other,
        payload: payload.payload,
        segment: &[],
    };
    match &p.transport {
        Some(t) => Ok(Outcome::Packet(with_transport(base, t))),
        None if proto == IpNumber::TCP.0 || proto == IpNumber::UDP.0 => Err(DecodeError::Truncated),
        None => Ok(Outcome::Packet(base)),
    }
}

/// Reads the TCP or UDP header at the start of `d.payload` (any other
/// protocol is left as it is). The slicers are etherparse's strict TCP and
/// lax UDP ones, exactly those its lax packet slicer uses.
fn transport_of(d: Decoded<'_>) -> Result<Decoded<'_>, DecodeError> {
    if d.proto == IpNumber::TCP.0 {
        let tcp =
            etherparse::TcpSlice::from_slice(d.payload).map_err(|_| DecodeError::Truncated)?;
        Ok(with_transport(d, &TransportSlice::Tcp(tcp)))
    } else if d.proto == IpNumber::UDP.0 {
        let udp =
            etherparse::UdpSlice::from_slice_lax(d.payload).map_err(|_| DecodeError::Truncated)?;
        Ok(with_transport(d, &TransportSlice::Udp(udp)))
    } else {
        Ok(d)
    }
}

fn with_transport<'a>(mut d: Decoded<'a>, t: &TransportSlice<'a>) -> Decoded<'a> {
    match t {
        TransportSlice::Tcp(tcp) => {
            d.sport = tcp.source_port();
            d.dport = tcp.destination_port();
            let flags = tcp.slice().get(13).copied().unwrap_or(0);
            d.transport = Transport::Tcp(TcpHeader {
                seq: tcp.sequence_number(),
                ack: tcp.acknowledgment_number(),
                flags,
            });
            d.payload = tcp.payload();
            d.segment = tcp.slice();
        }
        TransportSlice::Udp(udp) => {
            d.sport = udp.source_port();
            d.dport = udp.destination_port();
            d.transport = Transport::Udp;
            d.payload = udp.payload();
        }
        _ => {}
    }
    d
}

/// Is a TCP segment's checksum right (RFC 9293 §3.1: the one's complement
/// sum over the pseudo-header and the segment)? Only meaningful when the
/// capture holds the whole segment.
pub fn tcp_checksum_ok(src: IpAddr, dst: IpAddr, segment: &[u8]) -> bool {
    let mut sum: u64 = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ones_sum(&s.octets()) + ones_sum(&d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => ones_sum(&s.octets()) + ones_sum(&d.octets()),
        _ => return true,
    };
    sum += segment.len() as u64 + 6 + ones_sum(segment);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

/// The sum of `b` as big-endian 16-bit words (a last odd byte padded),
/// folded to 16 bits. Summed in the machine's order, four bytes at a time
/// (a loop the compiler vectorises), and swapped once at the end: the one's
/// complement sum does not depend on byte order (RFC 1071 §2 B).
fn ones_sum(b: &[u8]) -> u64 {
    let mut sum = 0u64;
    let mut words = b.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    sum += u64::from(u32::from_le_bytes(tail));
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u64::from((sum as u16).swap_bytes())
}

/// Decodes the transport header of a datagram rebuilt from fragments.
///
/// An IPv6 datagram's fragmentable part may begin with extension headers
/// (Destination Options, Routing, AH: RFC 8200 §4.5); they are walked as the
/// kernel walks them, from the first fragment's next header.
pub fn decode_reassembled<'a>(
    f: &Fragment<'_>,
    datagram: &'a [u8],
) -> Result<Decoded<'a>, DecodeError> {
    let (proto, payload) = if f.src.is_ipv6() {
        let chain = ipv6::walk(f.proto, datagram, false);
        if chain.fragment.is_some() {
            // A fragment inside a reassembled datagram: nothing a host accepts.
            return Err(DecodeError::Malformed);
        }
        (chain.proto, chain.rest)
    } else {
        (f.proto, datagram)
    };
    let base = Decoded {
        vlans: f.vlans,
        src: f.src,
        dst: f.dst,
        proto,
        sport: 0,
        dport: 0,
        transport: Transport::Other,
        payload,
        segment: &[],
    };
    transport_of(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .single_vlan(etherparse::VlanId::try_new(100).expect("vlan"))
            .ipv4([10, 1, 0, 5], [198, 51, 100, 7], 64)
            .tcp(40000, 443, 1000, 65535)
            .syn();
        let mut v = Vec::new();
        b.write(&mut v, payload).expect("write");
        v
    }

    #[test]
    fn ethernet_vlan_ipv4_tcp() {
        let f = tcp_frame(b"hello");
        let Outcome::Packet(d) = decode(LinkType::ETHERNET, &f).expect("decodes") else {
            panic!("not a packet")
        };
        assert_eq!(d.vlans.as_slice(), &[100]);
        assert_eq!(d.src.to_string(), "10.1.0.5");
        assert_eq!((d.sport, d.dport, d.proto), (40000, 443, 6));
        let Transport::Tcp(t) = d.transport else {
            panic!("tcp")
        };
        assert!(t.has(TcpHeader::SYN) && !t.has(TcpHeader::ACK));
        assert_eq!(t.seq, 1000);
        assert_eq!(d.payload, b"hello");
    }

    #[test]
    fn truncated_frames_are_counted_not_panics() {
        let f = tcp_frame(b"hello");
        for cut in 0..f.len() {
            let _ = decode(LinkType::ETHERNET, &f[..cut]);
        }
        // cut inside the TCP header: truncated
        assert_eq!(
            decode(LinkType::ETHERNET, &f[..14 + 4 + 20 + 10]).err(),
            Some(DecodeError::Truncated)
        );
        // cut inside the payload: decodes with what is there
        let Ok(Outcome::Packet(d)) = decode(LinkType::ETHERNET, &f[..f.len() - 2]) else {
            panic!("partial payload decodes")
        };
        assert_eq!(d.payload, b"hel");
    }

    #[test]
    fn ppp_link_types_with_and_without_address_and_control() {
        let f = tcp_frame(b"x");
        let ip = &f[18..];
        for (lt, head) in [
            (LinkType::PPP, &[0x00, 0x21][..]),
            (LinkType::PPP, &[0xff, 0x03, 0x00, 0x21][..]),
            (LinkType::PPP_HDLC, &[0xff, 0x03, 0x00, 0x21][..]),
        ] {
            let frame = [head, ip].concat();
            let Ok(Outcome::Packet(d)) = decode(lt, &frame) else {
                panic!("{lt:?} {head:?}")
            };
            assert_eq!(d.payload, b"x");
            for cut in 0..frame.len() {
                let _ = decode(lt, &frame[..cut]);
            }
        }
        assert_eq!(
            decode(LinkType::PPP, &[0xc0, 0x21, 1, 2]).err(),
            Some(DecodeError::NotIp),
            "LCP"
        );
    }

    #[test]
    fn null_sll_sll2_and_raw_link_types() {
        let f = tcp_frame(b"x");
        let ip = &f[18..];
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(ip);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(ip);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(ip);
        for (lt, data) in [
            (LinkType::NULL, &null[..]),
            (LinkType::LINUX_SLL, &sll[..]),
            (LinkType::LINUX_SLL2, &sll2[..]),
            (LinkType::RAW, ip),
        ] {
            let Ok(Outcome::Packet(d)) = decode(lt, data) else {
                panic!("{lt:?} did not decode")
            };
            assert_eq!(d.payload, b"x", "{lt:?}");
        }
        assert_eq!(
            decode(LinkType(147), &f).err(),
            Some(DecodeError::UnknownLinkType)
        );
    }

    /// The five inputs of the fuzz target `packet` (first byte: link type)
    /// that made etherparse 0.21.0's IPv6 extension iterator read past the
    /// frame (a debug build panics in `get_unchecked`; release segfaults).
    pub(crate) const OOB_IPV6_INPUTS: [&str; 5] = [
        "0002000000000202018100006486dd60ffff8e8e8e2c8e8e8e8e8e8e8e8e8eb72e00008e8e8e6d000a00080006180000171d00002b00030050dbfaf0b70000",
        "0002000000000200018100006486dd60c000020a002c00000106064020010db8000100000000ff7d9a123c48a6a6a6a6a6a6a6467d9a123c48a6a6a6a6a6a6",
        "0002020200000080018100006486dd60ffff8e8e8e2c8e8e8e8e8e8effff00000000008e63ffffffffffff0000008e63ffffffffff0000008e63ffffffffffff0000",
        "00646e735f616e7377657200018100006486dd60c000020a002cc8000000000181ffff0550000daa670550000daa670000018100ffffffffff055000670550000daa67",
        "00020000000001020000000002080066c000020a002c6b00004000401100000a00350000007f00000009409e02450000000202000200000000010800450000",
    ];

    pub(crate) fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn cut_ipv6_chains_after_a_fragment_header_stay_in_bounds() {
        for hex in OOB_IPV6_INPUTS {
            let input = unhex(hex);
            // every prefix too: each cut is another way to end the chain early
            for cut in 1..=input.len() {
                let frame = &input[1..cut];
                let _ = decode(LinkType::ETHERNET, frame);
                crate::fuzzing::packet(&input[..cut]);
            }
        }
    }

    /// An IPv6 packet: fixed header (next header `next`) and `rest`.
    fn ipv6(next: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(rest.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(rest);
        p
    }

    #[test]
    fn extension_headers_after_a_fragment_header_are_walked_after_reassembly() {
        // Fragmentable part: Destination Options, then UDP 5353 -> 53 "hi".
        let mut part = vec![17, 0, 1, 4, 0, 0, 0, 0];
        part.extend_from_slice(&[0x14, 0xe9, 0, 53, 0, 10, 0, 0]);
        part.extend_from_slice(b"hi");
        let (a, b) = part.split_at(8);
        let mut d = defrag::Defragmenter::default();
        let mut whole = None;
        // second fragment first, with a Next Header that must be ignored
        for (offset, more, next, data) in [(8u16, false, 6u8, b), (0, true, 60, a)] {
            let mut fh = vec![next, 0];
            fh.extend_from_slice(&(offset | more as u16).to_be_bytes());
            fh.extend_from_slice(&[0, 0, 0, 42]);
            fh.extend_from_slice(data);
            let pkt = ipv6(44, &fh);
            let Ok(Outcome::Fragment(f)) = decode(LinkType::RAW, &pkt) else {
                panic!("a fragment")
            };
            assert_eq!((f.offset, f.more, f.payload), (offset as u32, more, data));
            if let Some(g) = d.add(crate::time::Timestamp(0), &f) {
                let f = Fragment {
                    proto: g.proto,
                    ..f
                };
                whole = Some(
                    decode_reassembled(&f, &g.data).map(|p| (p.proto, p.dport, p.payload.to_vec())),
                );
            }
        }
        assert_eq!(whole, Some(Ok((17, 53, b"hi".to_vec()))));
    }

    #[test]
    fn ipv6_with_extension_headers_reaches_tcp() {
        let tcp = [
            0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ];
        let mut chain = vec![60, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop
        chain.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // destination options
        chain.extend_from_slice(&tcp);
        chain.extend_from_slice(b"data");
        let whole = ipv6(0, &chain);
        let Ok(Outcome::Packet(p)) = decode(LinkType::RAW, &whole) else {
            panic!("a packet")
        };
        assert_eq!(
            (p.proto, p.sport, p.dport, p.payload),
            (6, 40000, 443, &b"data"[..])
        );
        // cut inside the second header: a packet of that header's protocol
        let cut = ipv6(0, &chain[..12]);
        let Ok(Outcome::Packet(p)) = decode(LinkType::RAW, &cut) else {
            panic!("a packet")
        };
        assert_eq!((p.proto, p.payload.len()), (60, 4));
    }

    #[test]
    fn tcp_checksums_are_checked() {
        let f = tcp_frame(b"hello");
        let Ok(Outcome::Packet(d)) = decode(LinkType::ETHERNET, &f) else {
            panic!("a packet")
        };
        assert!(tcp_checksum_ok(d.src, d.dst, d.segment));
        let mut bad = f.clone();
        let n = bad.len();
        bad[n - 1] ^= 0x20;
        let Ok(Outcome::Packet(d)) = decode(LinkType::ETHERNET, &bad) else {
            panic!("a packet")
        };
        assert!(!tcp_checksum_ok(d.src, d.dst, d.segment));
    }

    /// The machine-order sum equals the textbook one (big-endian words, a
    /// last odd byte padded) at every length and alignment, and a segment of
    /// every length etherparse checksums passes, one flipped bit fails.
    #[test]
    fn ones_sum_agrees_with_the_textbook_sum() {
        let textbook = |b: &[u8]| {
            let mut sum = 0u64;
            for c in b.chunks(2) {
                sum += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
            while sum >> 16 != 0 {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            sum
        };
        let bytes: Vec<u8> = (0..600u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..4 {
            for len in 0..300 {
                let b = &bytes[start..start + len];
                assert_eq!(ones_sum(b), textbook(b), "{start} {len}");
            }
        }
        assert_eq!(ones_sum(&[0xff; 64]), 0xffff);
        for len in 0..70 {
            let f = tcp_frame(&bytes[..len]);
            let Ok(Outcome::Packet(d)) = decode(LinkType::ETHERNET, &f) else {
                panic!("a packet")
            };
            assert!(tcp_checksum_ok(d.src, d.dst, d.segment), "{len}");
            let mut bad = f.clone();
            let at = bad.len() - 1 - len / 2;
            bad[at] ^= 0x01;
            let Ok(Outcome::Packet(d)) = decode(LinkType::ETHERNET, &bad) else {
                panic!("a packet")
            };
            assert!(!tcp_checksum_ok(d.src, d.dst, d.segment), "{len}");
        }
    }

    /// Where a frame's IPv4 header starts, for the link types the test
    /// captures use (Ethernet with up to two tags, Linux cooked, raw, BSD
    /// loopback).
    fn ipv4_start(linktype: LinkType, d: &[u8]) -> Option<usize> {
        let (mut et, mut at) = match linktype {
            LinkType::ETHERNET => (be16(d, 12)?, 14),
            LinkType::LINUX_SLL => (be16(d, 14)?, 16),
            LinkType::RAW | LinkType::IPV4 => return Some(0),
            LinkType::NULL | LinkType::LOOP => return Some(4),
            _ => return None,
        };
        for _ in 0..2 {
            if ET_VLAN.contains(&et) {
                et = be16(d, at + 2)?;
                at += 4;
            }
        }
        (et == ET_IPV4).then_some(at)
    }

    /// Whatever the direct TCP reading takes, the lax slicer decodes to the
    /// same fields and the same bytes.
    fn agree(ip: &[u8]) -> bool {
        let Some(fast) = ipv4_tcp(ip, Vlans::default()) else {
            return false;
        };
        let Ok(Outcome::Packet(lax)) = ipv4_lax(ip, Vlans::default()) else {
            panic!("the lax slicer refuses what the fast path took: {ip:02x?}")
        };
        assert_eq!(format!("{fast:?}"), format!("{lax:?}"), "{ip:02x?}");
        assert_eq!(fast.payload.as_ptr(), lax.payload.as_ptr());
        assert_eq!(fast.segment.as_ptr(), lax.segment.as_ptr());
        true
    }

    /// Damaged copies of a packet: cut short anywhere in its headers, every
    /// header length, total length and fragment field that matters.
    fn damaged(ip: &[u8]) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = (0..ip.len().min(80)).map(|n| ip[..n].to_vec()).collect();
        let set = |at: usize, v: &[u8]| {
            let mut c = ip.to_vec();
            if c.len() >= at + v.len() {
                c[at..at + v.len()].copy_from_slice(v);
            }
            c
        };
        for b0 in [0x44, 0x45, 0x46, 0x4f, 0x55] {
            out.push(set(0, &[b0]));
        }
        let hl = usize::from(ip[0] & 15) * 4;
        for total in [
            0,
            hl - 1,
            hl,
            hl + 19,
            hl + 20,
            ip.len() - 1,
            ip.len(),
            ip.len() + 1,
            0xffff,
        ] {
            out.push(set(2, &(total as u16).to_be_bytes()));
        }
        for frag in [0x2000u16, 0x0001, 0x4000, 0x1fff, 0x8000] {
            out.push(set(6, &frag.to_be_bytes()));
        }
        for off in [0x00, 0x40, 0x50, 0x60, 0xf0] {
            out.push(set(hl + 12, &[off]));
        }
        out
    }

    /// Damaged copies of an Ethernet frame: cut short anywhere in its first
    /// 60 bytes, its EtherType or a VLAN tag's changed, tags added.
    fn damaged_frames(f: &[u8]) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = (0..f.len().min(60)).map(|n| f[..n].to_vec()).collect();
        for at in [12, 16, 20] {
            for v in [
                [0x08, 0x00],
                [0x86, 0xdd],
                [0x81, 0x00],
                [0x88, 0xa8],
                [0x08, 0x06],
            ] {
                let mut c = f.to_vec();
                if c.len() >= at + 2 {
                    c[at..at + 2].copy_from_slice(&v);
                    out.push(c);
                }
            }
        }
        for n in 1..=6 {
            let mut c = f[..12.min(f.len())].to_vec();
            for i in 0..n {
                c.extend_from_slice(&[0x81, 0x00, 0x00, i as u8]);
            }
            c.extend_from_slice(f.get(12..).unwrap_or_default());
            out.push(c);
        }
        out
    }

    /// What a dispatcher finds for a worker goes with every packet it hands
    /// over: it stays 32 bytes, "none" included; a frame over 64 KiB is the
    /// worker's to decode.
    #[test]
    fn found_is_small_and_leaves_huge_frames_to_the_worker() {
        assert_eq!(std::mem::size_of::<Option<Found>>(), 32);
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = 6;
        f[14 + 20 + 12] = 0x50;
        let found = Found::find(&f).expect("a TCP segment");
        assert_eq!(found.decoded(&f).map(|d| d.segment.len()), Some(20));
        assert!(found.decoded(&f[..40]).is_none(), "not that frame");
        f.resize(70_000, 0);
        assert!(ethernet_ipv4_tcp(&f).is_some());
        assert!(Found::find(&f).is_none());
    }

    /// [`decode`] (with its Ethernet, IPv4, TCP reading) gives exactly what
    /// the general path gives, on every frame of the project's captures and
    /// the shared corpus (when it is there) and on damaged copies.
    #[test]
    fn the_direct_ethernet_reading_agrees_with_the_general_path() {
        let same = |f: &[u8]| {
            let (a, b) = (
                decode(LinkType::ETHERNET, f),
                decode_general(LinkType::ETHERNET, f),
            );
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{f:02x?}");
            if let (Ok(Outcome::Packet(a)), Ok(Outcome::Packet(b))) = (a, b) {
                assert_eq!(a.payload.as_ptr(), b.payload.as_ptr());
            }
            // what a dispatcher finds for a worker is the same packet again
            let found = Found::find(f).and_then(|x| x.decoded(f));
            assert_eq!(found.is_some(), ethernet_ipv4_tcp(f).is_some(), "{f:02x?}");
            if let (Some(x), Ok(Outcome::Packet(b))) = (found, b) {
                assert_eq!(format!("{x:?}"), format!("{b:?}"), "{f:02x?}");
                assert_eq!(x.payload.as_ptr(), b.payload.as_ptr());
                assert_eq!(x.segment.as_ptr(), b.segment.as_ptr());
            }
            ethernet_ipv4_tcp(f).is_some()
        };
        let (mut taken, mut mutated) = (0usize, 0usize);
        for path in capture_files() {
            let Ok(mut r) = crate::capture::FileReader::open(&path) else {
                continue;
            };
            while let Some(Ok(p)) = r.next() {
                if p.linktype != LinkType::ETHERNET {
                    continue;
                }
                taken += usize::from(same(&p.data));
                if mutated < 2000 {
                    mutated += 1;
                    damaged_frames(&p.data).iter().for_each(|c| {
                        same(c);
                    });
                }
            }
        }
        assert!(taken > 1000, "the direct reading was hardly used ({taken})");
    }

    /// The project's captures, and the shared corpus's when it is there.
    fn capture_files() -> Vec<std::path::PathBuf> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut dirs = vec![root.join("pcaps"), root.join("pcaps/lab")];
        let corpus = root.join("../shared/corpus/pcaps");
        if corpus.is_dir() {
            dirs.push(corpus);
        } else {
            eprintln!("SKIP (part): no shared corpus at {}", corpus.display());
        }
        let mut files = Vec::new();
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                    files.push(p);
                }
            }
        }
        files
    }

    /// The fast path and the lax slicer agree on every IPv4 packet of the
    /// project's captures and of the shared corpus (when it is there), and on
    /// damaged copies of the first thousands of them.
    #[test]
    fn direct_tcp_reading_agrees_with_the_lax_slicer() {
        let (mut taken, mut mutated) = (0usize, 0usize);
        for path in &capture_files() {
            let Ok(mut r) = crate::capture::FileReader::open(path) else {
                continue;
            };
            while let Some(Ok(p)) = r.next() {
                let Some(at) = ipv4_start(p.linktype, &p.data) else {
                    continue;
                };
                let ip = &p.data[at.min(p.data.len())..];
                if !agree(ip) {
                    continue;
                }
                taken += 1;
                if mutated < 3000 {
                    mutated += 1;
                    damaged(ip).iter().for_each(|c| {
                        agree(c);
                    });
                }
            }
        }
        assert!(taken > 1000, "the fast path was hardly used ({taken})");
    }
}
