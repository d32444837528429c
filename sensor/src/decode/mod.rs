//! Zero-copy packet decoding: link layer → VLAN tags → IPv4/IPv6 → TCP/UDP.
//!
//! [`decode`] turns a captured frame into a [`Decoded`] view whose payload borrows
//! the frame. Header slicing is etherparse's lax slicer (it decodes truncated
//! packets as far as they go and walks IPv6 extension headers); this module maps
//! the link types a capture can carry onto it and reduces the result to the few
//! fields the flow layer needs. Errors are a `Copy` enum that the caller counts.

pub mod defrag;

use std::net::IpAddr;

use etherparse::{
    EtherType, IpNumber, Ipv6ExtensionSlice, LaxNetSlice, LaxSlicedPacket, TransportSlice,
};

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

/// Decodes one frame of the given link type.
pub fn decode(linktype: LinkType, data: &[u8]) -> Result<Outcome<'_>, DecodeError> {
    let sliced = match linktype {
        LinkType::ETHERNET => {
            LaxSlicedPacket::from_ethernet(data).map_err(|_| DecodeError::Truncated)?
        }
        LinkType::NULL | LinkType::LOOP => from_ip(data.get(4..).ok_or(DecodeError::Truncated)?)?,
        LinkType::RAW | LinkType::RAW_12 | LinkType::RAW_OPENBSD | LinkType::IPV4 | LinkType::IPV6 => {
            from_ip(data)?
        }
        LinkType::LINUX_SLL => {
            let proto = be16(data, 14).ok_or(DecodeError::Truncated)?;
            LaxSlicedPacket::from_ether_type(EtherType(proto), &data[16..])
        }
        LinkType::LINUX_SLL2 => {
            let proto = be16(data, 0).ok_or(DecodeError::Truncated)?;
            let rest = data.get(20..).ok_or(DecodeError::Truncated)?;
            LaxSlicedPacket::from_ether_type(EtherType(proto), rest)
        }
        _ => return Err(DecodeError::UnknownLinkType),
    };
    reduce(&sliced)
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    let b = data.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn from_ip(data: &[u8]) -> Result<LaxSlicedPacket<'_>, DecodeError> {
    match data.first().map(|b| b >> 4) {
        Some(4) | Some(6) => {}
        Some(_) => return Err(DecodeError::NotIp),
        None => return Err(DecodeError::Truncated),
    }
    LaxSlicedPacket::from_ip(data).map_err(|e| match e {
        etherparse::err::ip::LaxHeaderSliceError::Len(_) => DecodeError::Truncated,
        etherparse::err::ip::LaxHeaderSliceError::Content(_) => DecodeError::Malformed,
    })
}

fn reduce<'a>(p: &LaxSlicedPacket<'a>) -> Result<Outcome<'a>, DecodeError> {
    let vlan_ids = p.vlan_ids();
    let mut vlans = Vlans::default();
    for id in vlan_ids.iter().take(2) {
        vlans.ids[vlans.len as usize] = id.value();
        vlans.len += 1;
    }
    let (src, dst, payload, frag) = match &p.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let frag = h.is_fragmenting_payload().then(|| {
                (
                    h.identification() as u32,
                    h.fragments_offset().byte_offset() as u32,
                    h.more_fragments(),
                )
            });
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.payload(),
                frag,
            )
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            let mut frag = None;
            if v6.is_payload_fragmented() {
                for ext in v6.extensions().clone() {
                    if let Ipv6ExtensionSlice::Fragment(f) = ext {
                        frag = Some((
                            f.identification(),
                            f.fragment_offset().byte_offset() as u32,
                            f.more_fragments(),
                        ));
                    }
                }
            }
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.payload(),
                frag,
            )
        }
        Some(LaxNetSlice::Arp(_)) => return Err(DecodeError::NotIp),
        None => {
            return Err(match &p.stop_err {
                Some((etherparse::err::packet::SliceError::Len(_), _)) => DecodeError::Truncated,
                Some(_) => DecodeError::Malformed,
                None => DecodeError::NotIp,
            })
        }
    };
    let proto = payload.ip_number.0;
    if let Some((id, offset, more)) = frag {
        return Ok(Outcome::Fragment(Fragment {
            vlans,
            src,
            dst,
            proto,
            id,
            offset,
            more,
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
    };
    match &p.transport {
        Some(t) => Ok(Outcome::Packet(with_transport(base, t))),
        None if proto == IpNumber::TCP.0 || proto == IpNumber::UDP.0 => {
            Err(DecodeError::Truncated)
        }
        None => Ok(Outcome::Packet(base)),
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

/// Decodes the transport header of a datagram rebuilt from fragments.
pub fn decode_reassembled<'a>(f: &Fragment<'_>, datagram: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
    let base = Decoded {
        vlans: f.vlans,
        src: f.src,
        dst: f.dst,
        proto: f.proto,
        sport: 0,
        dport: 0,
        transport: Transport::Other,
        payload: datagram,
    };
    if f.proto == IpNumber::TCP.0 {
        let tcp = etherparse::TcpSlice::from_slice(datagram).map_err(|_| DecodeError::Truncated)?;
        Ok(with_transport(base, &TransportSlice::Tcp(tcp)))
    } else if f.proto == IpNumber::UDP.0 {
        let udp = etherparse::UdpSlice::from_slice_lax(datagram).map_err(|_| DecodeError::Truncated)?;
        Ok(with_transport(base, &TransportSlice::Udp(udp)))
    } else {
        Ok(base)
    }
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
        let Transport::Tcp(t) = d.transport else { panic!("tcp") };
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
}
