//! QUIC analyzer: client and server Initial packets opened (RFC 9001 §5), the
//! CRYPTO stream put back together, and the ClientHello and ServerHello read
//! by the TLS hello parser, so every SNI signature applies to QUIC as is.
//!
//! One [`QuicSession`] per UDP flow found to speak QUIC. Versions 1, 2 and
//! drafts 23–32 are opened; Version Negotiation and Retry are recognised;
//! short-header packets and unknown versions are counted, never parsed.
//! Several connections may share a 5-tuple (one UDP socket multiplexing
//! them, as quic-go can): an Initial to a new connection ID that opens with
//! keys of its own starts a new CRYPTO stream, and each ClientHello read is
//! logged. Work is bounded: [`MAX_INITIALS`] packets opened (or tried)
//! between two ClientHellos read, CRYPTO data up to
//! [`frames::MAX_CRYPTO_BYTES`]; once both hellos are read a datagram
//! costs a look at its first bytes.

mod event;
pub mod frames;
pub mod keys;
pub mod packet;

pub use event::{facts, QuicEvent};

use smallvec::SmallVec;

use super::tls::hello::{self, ClientHello, ServerHello};
use super::{Chunk, Probe};
use crate::flow::Dir;
pub use crate::stats::QuicCounters;
use frames::{CryptoStream, FrameError, MAX_CRYPTO_BYTES};
use keys::Keys;
use packet::{extent, LongHeader, Version, MAX_CID_LEN};

/// Initial packets opened (or tried) on a flow before a ClientHello is read
/// (each one read renews the budget).
pub const MAX_INITIALS: u32 = 32;
/// ClientHellos held until they are logged.
pub const MAX_HELLOS: usize = 4;
/// Versions kept from a Version Negotiation packet.
pub const MAX_OFFERED_VERSIONS: usize = 16;
/// Smallest datagram carrying a client's first Initial (RFC 9000 §14.1):
/// a long header of a version the sensor does not know is taken for QUIC
/// only in a datagram this large.
pub const MIN_CLIENT_DATAGRAM: usize = 1200;

/// The analyzer table's probe: a long header with the fixed bit, of a known
/// version; a Version Negotiation packet; or a long header of another
/// version in a datagram the size of a client's first flight.
pub fn probe(c: &Chunk<'_>) -> Probe {
    let Some(h) = LongHeader::parse(c.bytes) else {
        return Probe::No;
    };
    if h.dcid.len() > MAX_CID_LEN || h.scid.len() > MAX_CID_LEN {
        return Probe::No;
    }
    let rest = c.bytes.len() - h.rest_at;
    let yes = match h.version {
        0 => rest >= 4 && rest.is_multiple_of(4),
        _ if h.first & 0x40 == 0 => false,
        v => Version::of(v).is_some() || c.bytes.len() >= MIN_CLIENT_DATAGRAM,
    };
    if yes {
        Probe::Yes
    } else {
        Probe::No
    }
}

/// A role in the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Client = 0,
    Server = 1,
}

/// One side's CRYPTO stream and how far it has been read.
#[derive(Debug, Default)]
struct Side {
    stream: CryptoStream,
    /// The side's hello is read (or will never be).
    done: bool,
    /// Bytes of the stream read as handshake messages.
    read_to: usize,
    /// Handshake messages read.
    messages: u32,
    /// The Destination Connection ID of the side's last Initial opened.
    last_dcid: SmallVec<[u8; MAX_CID_LEN]>,
}

/// Keys derived for one (version, role) from [`QuicSession::key_dcid`].
type CachedKeys = (u32, Role, Box<Keys>);

/// What one QUIC flow's Initial packets said.
#[derive(Debug, Default)]
pub struct QuicSession {
    /// The version of the first Initial opened.
    pub version: Option<u32>,
    /// The ClientHellos read and not logged yet, in order (see
    /// [`MAX_HELLOS`]). On the heap, and freed once logged: a flow waits
    /// out its idle timeout after its handshake, and a hello is 504 bytes.
    pub hellos: Vec<ClientHello>,
    /// The server asked for a Retry after the last ClientHello: the next
    /// one repeats it and is not logged again if it is the same.
    retry_pending: bool,
    last_hello: Option<Box<ClientHello>>,
    pub server_hello: Option<ServerHello>,
    /// The client's first Destination Connection ID (the Initial keys' source).
    pub client_dcid: SmallVec<[u8; MAX_CID_LEN]>,
    /// The Source Connection ID of the server's first Initial.
    pub server_scid: SmallVec<[u8; MAX_CID_LEN]>,
    /// The server asked for a Retry.
    pub retry: bool,
    /// Versions offered by a Version Negotiation packet.
    pub offered: SmallVec<[u32; 4]>,
    /// The flow's packets did not all make sense (counted once per flow).
    pub malformed: bool,
    /// Where the keys come from now (the first DCID, or after a Retry the
    /// client's new one).
    key_dcid: SmallVec<[u8; MAX_CID_LEN]>,
    keys: SmallVec<[CachedKeys; 2]>,
    /// The direction the client's Initials travel in.
    client_dir: Option<Dir>,
    sides: [Side; 2],
    opened: u32,
    scratch: Vec<u8>,
}

impl QuicSession {
    /// Both sides have told all they will in clear.
    pub fn done(&self) -> bool {
        self.sides.iter().all(|s| s.done)
    }

    /// A ClientHello is read and not logged yet.
    pub fn unlogged(&self) -> bool {
        !self.hellos.is_empty()
    }

    /// Is it time to log the hellos read? When the server has answered (or
    /// cannot any more), or when a further attempt has begun.
    pub fn ready(&self) -> bool {
        self.unlogged() && (self.done() || self.hellos.len() > 1)
    }

    /// The hellos read have been logged. With both sides done, the cached
    /// keys and the packet buffer go too: the flow waits out its idle
    /// timeout (120 s) holding a third of what it held, and an Initial to a
    /// new connection ID, the only one still opened, derives its keys anew.
    pub fn logged(&mut self) {
        self.hellos = Vec::new();
        if self.done() {
            self.keys = SmallVec::new();
            self.scratch = Vec::new();
        }
    }

    /// Reads one UDP datagram (one or more coalesced packets).
    pub fn datagram(&mut self, dir: Dir, bytes: &[u8], c: &mut QuicCounters) {
        let mut at = 0;
        while let Some(b) = bytes.get(at..).filter(|b| !b.is_empty()) {
            if b[0] & 0x80 == 0 {
                // a short header runs to the end of the datagram; bytes
                // without the fixed bit after a packet are padding
                if b[0] & 0x40 != 0 {
                    c.short_header += 1;
                    if at == 0 {
                        self.short_header(dir);
                    }
                }
                return;
            }
            c.packets += 1;
            match self.long_packet(dir, b, c) {
                Some(len) => at += len,
                None => return,
            }
        }
    }

    /// One long-header packet at the start of `b`; returns its length when
    /// another packet may follow it in the datagram.
    fn long_packet(&mut self, dir: Dir, b: &[u8], c: &mut QuicCounters) -> Option<usize> {
        let Some(h) = LongHeader::parse(b) else {
            self.bad(c);
            return None;
        };
        if h.version == 0 {
            c.version_negotiation += 1;
            self.version_negotiation(&b[h.rest_at..]);
            return None;
        }
        let Some(v) = Version::of(h.version) else {
            c.unknown_version += 1;
            return None;
        };
        if h.dcid.len() > MAX_CID_LEN || h.scid.len() > MAX_CID_LEN || h.first & 0x40 == 0 {
            self.bad(c);
            return None;
        }
        if h.packet_type() == v.retry {
            c.retry += 1;
            self.retry = true;
            self.retry_pending = true;
            return None;
        }
        let initial = h.packet_type() == v.initial;
        let Some((pn_at, end)) = extent(b, &h, initial) else {
            self.bad(c);
            return None;
        };
        if initial {
            self.initial(dir, v, &h, &b[..end], pn_at, c);
        }
        Some(end)
    }

    fn bad(&mut self, c: &mut QuicCounters) {
        c.malformed += 1;
        self.malformed = true;
    }

    fn version_negotiation(&mut self, list: &[u8]) {
        for v in list.chunks_exact(4) {
            let v = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
            if self.offered.len() < MAX_OFFERED_VERSIONS && !self.offered.contains(&v) {
                self.offered.push(v);
            }
        }
    }

    /// A server sending short-header (1-RTT) packets after the client's
    /// hello has sent its own: its Initial is not in the capture. (Nothing
    /// ends the client's side but its hello: a forged short header must not
    /// stop the reading of a hello that spans several Initials.)
    fn short_header(&mut self, dir: Dir) {
        if self.role(dir) == Some(Role::Server) && self.sides[Role::Client as usize].done {
            self.finish(Role::Server);
        }
    }

    fn role(&self, dir: Dir) -> Option<Role> {
        let client = self.client_dir?;
        Some(if dir == client {
            Role::Client
        } else {
            Role::Server
        })
    }

    /// The side has said all it will in clear. Its stream is dropped, but
    /// the client's only once the server's hello is no HelloRetryRequest
    /// (after one, the second ClientHello follows on the same stream).
    fn finish(&mut self, role: Role) {
        self.sides[role as usize].done = true;
        let hrr = self.server_hello.as_ref().is_none_or(|s| s.retry_request);
        for s in &mut self.sides {
            if s.done && !(hrr && role == Role::Client) {
                s.stream.release();
            }
        }
    }

    /// One Initial packet: opened with the keys of its role, its frames read.
    fn initial(
        &mut self,
        dir: Dir,
        v: &'static Version,
        h: &LongHeader<'_>,
        packet: &[u8],
        pn_at: usize,
        c: &mut QuicCounters,
    ) {
        let role = self.role(dir);
        if let Some(r) = role {
            let s = &self.sides[r as usize];
            // a side that said its hello: only an Initial to a new connection
            // ID (a Retry's, or a new attempt's) may say something new
            if s.done && (r == Role::Server || s.last_dcid[..] == *h.dcid) {
                return;
            }
        }
        if self.opened >= MAX_INITIALS {
            if self.opened == MAX_INITIALS {
                c.initial_limit += 1;
                self.opened += 1;
            }
            return;
        }
        self.opened += 1;
        // the server's keys; for the client, the keys so far. Then keys from
        // the packet's own DCID: a client's Initial after a Retry, a new
        // connection on the same 5-tuple (whichever end starts it), or the
        // first Initial of the capture.
        let opened = match role {
            Some(r) => self.open(v, r, None, packet, pn_at).map(|p| (r, p)),
            None => None,
        };
        let opened = opened.or_else(|| {
            self.open(v, Role::Client, Some(h.dcid), packet, pn_at)
                .map(|p| (Role::Client, p))
        });
        let Some((role, payload)) = opened else {
            c.decrypt_failed += 1;
            return;
        };
        c.initials_opened += 1;
        if role == Role::Client {
            self.client_dir = Some(dir);
        } else if self.server_scid.is_empty() {
            self.server_scid = h.scid.iter().copied().collect();
        }
        self.version.get_or_insert(v.number);
        let scratch = std::mem::take(&mut self.scratch);
        let s = &mut self.sides[role as usize];
        s.last_dcid = h.dcid.iter().copied().collect();
        let before = s.stream.conflicts;
        let r = frames::read(&scratch[payload], &mut s.stream);
        c.crypto_conflicts += s.stream.conflicts - before;
        self.scratch = scratch;
        match r {
            Ok(_) => {}
            Err(FrameError::Malformed) => self.bad(c),
            Err(FrameError::OutOfBounds) => {
                c.crypto_out_of_bounds += 1;
                self.malformed = true;
                self.finish(role);
                return;
            }
        }
        self.messages(role, c);
    }

    /// Opens `packet` into the scratch buffer with the keys of `role`: from
    /// `new_dcid` (which then becomes the keys' source, starting both
    /// streams over), or from the current source.
    fn open(
        &mut self,
        v: &'static Version,
        role: Role,
        new_dcid: Option<&[u8]>,
        packet: &[u8],
        pn_at: usize,
    ) -> Option<std::ops::Range<usize>> {
        let keys = match new_dcid {
            Some(d) if d == &self.key_dcid[..] => return None, // tried already
            Some(d) => Keys::derive(v, d, role == Role::Client)?,
            None => {
                if self.key_dcid.is_empty() {
                    return None;
                }
                let i = self.cached_keys(v, role)?;
                self.scratch.clear();
                self.scratch.extend_from_slice(packet);
                return self.keys[i].2.open(&mut self.scratch, pn_at);
            }
        };
        self.scratch.clear();
        self.scratch.extend_from_slice(packet);
        let payload = keys.open(&mut self.scratch, pn_at)?;
        let d = new_dcid.unwrap_or_default();
        if self.client_dcid.is_empty() {
            self.client_dcid = d.iter().copied().collect();
        }
        if !self.key_dcid.is_empty() {
            // new keys: a new CRYPTO stream on each side
            self.sides = Default::default();
        }
        self.key_dcid = d.iter().copied().collect();
        self.keys.clear();
        self.keys.push((v.number, role, Box::new(keys)));
        Some(payload)
    }

    /// The index of the keys of (version, role) from `key_dcid`, derived
    /// when first needed.
    fn cached_keys(&mut self, v: &'static Version, role: Role) -> Option<usize> {
        if let Some(i) = self
            .keys
            .iter()
            .position(|(n, r, _)| *n == v.number && *r == role)
        {
            return Some(i);
        }
        let k = Keys::derive(v, &self.key_dcid, role == Role::Client)?;
        if self.keys.len() >= 4 {
            self.keys.remove(0);
        }
        self.keys.push((v.number, role, Box::new(k)));
        Some(self.keys.len() - 1)
    }

    /// A ClientHello read: held to be logged (unless it repeats the last one
    /// after a Retry); the bound on Initials opened starts over.
    fn hello(&mut self, ch: ClientHello) {
        self.opened = 0;
        let repeat = std::mem::take(&mut self.retry_pending)
            && (self.last_hello.as_deref() == Some(&ch) || self.hellos.contains(&ch));
        if !repeat && self.hellos.len() < MAX_HELLOS {
            self.last_hello = Some(Box::new(ch.clone()));
            self.hellos.push(ch);
        } else if !repeat {
            self.last_hello = Some(Box::new(ch));
        }
    }

    /// Reads the handshake messages the side's stream holds from where it
    /// stopped: the client's ClientHello(s), the server's ServerHello.
    fn messages(&mut self, role: Role, c: &mut QuicCounters) {
        loop {
            let s = &self.sides[role as usize];
            if s.done {
                return;
            }
            let rest = s.stream.contiguous().get(s.read_to..).unwrap_or(&[]);
            let Some(hdr) = rest.get(..4) else { return };
            let len = u32::from_be_bytes([0, hdr[1], hdr[2], hdr[3]]) as usize;
            if s.read_to + 4 + len > MAX_CRYPTO_BYTES {
                c.crypto_out_of_bounds += 1;
                self.malformed = true;
                self.finish(role);
                return;
            }
            let Some(body) = rest.get(4..4 + len) else {
                return;
            };
            let ty = hdr[0];
            // the other version of the same bytes, when a copy differed
            let alt = s
                .stream
                .contiguous_alt()
                .and_then(|a| a.get(s.read_to + 4..s.read_to + 4 + len))
                .filter(|a| *a != body)
                .and_then(|a| hello::parse_client_hello(a).ok());
            let result = match (role, ty) {
                (Role::Client, 1) => hello::parse_client_hello(body).map(|ch| {
                    c.client_hellos += 1;
                    self.hello(ch);
                    if let Some(other) = alt {
                        self.hello(other);
                    }
                }),
                (Role::Server, 2) => hello::parse_server_hello(body).map(|sh| {
                    c.server_hellos += 1;
                    self.server_hello = Some(sh);
                }),
                _ => Err(hello::Malformed),
            };
            let s = &mut self.sides[role as usize];
            s.read_to += 4 + len;
            s.messages += 1;
            if result.is_err() {
                self.bad(c);
                self.finish(role);
                return;
            }
            let hrr = self.server_hello.as_ref().is_some_and(|s| s.retry_request);
            match role {
                // after a HelloRetryRequest the client's second hello follows
                // on the same stream, and the server's real ServerHello
                Role::Client if hrr && self.sides[0].messages < 2 => {}
                Role::Server if hrr => self.sides[Role::Client as usize].done = false,
                r => self.finish(r),
            }
        }
    }
}

#[cfg(test)]
mod tests;
