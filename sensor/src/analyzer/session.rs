//! One flow's analyzers behind one interface: the protocol table, probing by
//! content, and feeding each direction's bytes to the protocol it speaks.
//!
//! A protocol is one folder (parser, per-flow state, its event and facts) and
//! one entry in [`TCP`] or [`UDP`]: a probe that says from a chunk whether the
//! protocol starts there, and the mode a direction switches to.

use super::cert::CertCache;
use super::dns::{self, DnsMessage};
use super::http::{self, HttpSession};
use super::quic::{self, QuicSession};
use super::tls::{self, TlsSession};
use crate::flow::Dir;
use crate::stats::Counters;

/// Data chunks per direction looked at for a protocol before giving up.
pub const MAX_PROBES: u8 = 8;
/// DNS-over-TCP messages logged per flow.
pub const MAX_TCP_DNS_MESSAGES: u32 = 64;

/// The protocols the analyzers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tls,
    Http,
    Dns,
    Quic,
}

/// What a probe made of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The protocol starts here.
    Yes,
    /// Not this protocol.
    No,
    /// Too short to tell: wait for more bytes.
    NeedMore,
}

/// A chunk of one direction, with what a probe may look at besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    pub dir: Dir,
    pub bytes: &'a [u8],
    pub sport: u16,
    pub dport: u16,
}

/// One protocol of the table.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub kind: Kind,
    /// The flow's `app_proto` once the protocol is seen.
    pub name: &'static str,
    pub probe: fn(&Chunk<'_>) -> Probe,
    /// Protocols a direction already speaks that this one takes over from
    /// when its probe says yes (TLS after an HTTP CONNECT or upgrade).
    pub takes_over: &'static [Kind],
}

/// Stream protocols, in the order a chunk is probed.
pub const TCP: [Entry; 3] = [
    Entry {
        kind: Kind::Tls,
        name: "tls",
        probe: tls::probe,
        takes_over: &[Kind::Http],
    },
    Entry {
        kind: Kind::Http,
        name: "http",
        probe: http::probe,
        takes_over: &[],
    },
    Entry {
        kind: Kind::Dns,
        name: "dns",
        probe: dns::probe_stream,
        takes_over: &[],
    },
];

/// Datagram protocols, in the order a datagram is probed.
pub const UDP: [Entry; 2] = [
    Entry {
        kind: Kind::Dns,
        name: "dns",
        probe: dns::probe_datagram,
        takes_over: &[],
    },
    Entry {
        kind: Kind::Quic,
        name: "quic",
        probe: quic::probe,
        takes_over: &[],
    },
];

/// What a direction's bytes are being read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Not known yet: each new chunk is probed.
    #[default]
    Probe,
    On(Kind),
    /// Nothing more to read.
    Off,
}

/// Everything analysis of one chunk may touch besides the flow's own state.
pub struct Ctx<'a> {
    pub certs: &'a mut CertCache,
    pub counters: &'a mut Counters,
    /// DNS messages read, for the caller to log.
    pub dns_out: &'a mut Vec<DnsMessage>,
}

/// A flow's analyzer state.
#[derive(Debug, Default)]
pub struct Analyzers {
    pub modes: [Mode; 2],
    probes: [u8; 2],
    pub tls: Option<Box<TlsSession>>,
    pub http: Option<Box<HttpSession>>,
    pub quic: Option<Box<QuicSession>>,
    dns_msgs: u32,
    /// The TLS event has been logged.
    pub tls_logged: bool,
    /// The first ClientHello was looked at for the leg correlation, and
    /// went there (it had a name); its ServerHello went there too.
    pub hello_sent: bool,
    pub legs_open: bool,
    pub sh_sent: bool,
    /// The target of the flow's HTTP CONNECT (the name TLS inside it is for).
    pub connect: Option<String>,
    pub app_proto: Option<&'static str>,
    /// A datagram of the flow was a DNS message: the flow carries
    /// request/response exchanges (see `Flow::exchanges`).
    pub exchanges: bool,
}

impl Analyzers {
    /// Both directions are done.
    pub fn off(&self) -> bool {
        self.modes.iter().all(|m| *m == Mode::Off)
    }

    /// A gap or an overflow in `dir`: nothing more is read there.
    pub fn stop(&mut self, dir: Dir) {
        self.modes[dir as usize] = Mode::Off;
        if let Some(t) = self.tls.as_mut() {
            t.stop(dir);
        }
    }

    /// One side talked past its probes and the other has said nothing: no
    /// handshake will follow, stop reading both.
    pub fn give_up_if_silent(&mut self, dir: Dir, other_delivered: u64) {
        let d = dir as usize;
        if self.modes[d] == Mode::Off && other_delivered == 0 && self.probes[d] >= MAX_PROBES {
            self.modes[1 - d] = Mode::Off;
        }
    }

    /// The protocol of a datagram (by the [`UDP`] table); reads it if known.
    /// Every datagram is probed, without the TCP bound: datagrams stand alone,
    /// so junk sent first on a 5-tuple must not hide a later QUIC Initial.
    /// A flow found to speak QUIC stays with the QUIC analyzer.
    pub fn datagram(&mut self, c: &Chunk<'_>, ctx: &mut Ctx<'_>) {
        if let Some(q) = self.quic.as_mut() {
            q.datagram(c.dir, c.bytes, &mut ctx.counters.quic);
            return;
        }
        let Some(e) = UDP.iter().find(|e| (e.probe)(c) == Probe::Yes) else {
            return;
        };
        match e.kind {
            Kind::Quic => {
                self.app_proto = Some(e.name);
                let q = self.quic.insert(Box::default());
                q.datagram(c.dir, c.bytes, &mut ctx.counters.quic);
            }
            Kind::Dns => {
                ctx.counters.dns_packets += 1;
                match dns::parse(c.bytes) {
                    Ok(m) => {
                        self.app_proto = Some(e.name);
                        self.exchanges = true;
                        ctx.dns_out.push(m);
                    }
                    Err(_) => ctx.counters.dns_malformed += 1,
                }
            }
            Kind::Tls | Kind::Http => {}
        }
    }

    /// Reads one contiguous chunk of a stream direction; returns the bytes
    /// consumed (0: call again with more).
    pub fn feed(&mut self, c: &Chunk<'_>, ctx: &mut Ctx<'_>) -> usize {
        let d = c.dir as usize;
        let current = match self.modes[d] {
            Mode::On(k) => Some(k),
            Mode::Probe => None,
            Mode::Off => return c.bytes.len(),
        };
        if let Some(k) = self.probe(c, current) {
            self.modes[d] = Mode::On(k);
        }
        match self.modes[d] {
            Mode::On(k) => self.read(k, c, ctx),
            Mode::Probe if self.awaits_more(c) => 0,
            Mode::Probe => {
                self.probes[d] += 1;
                if self.probes[d] >= MAX_PROBES {
                    self.modes[d] = Mode::Off;
                }
                c.bytes.len()
            }
            Mode::Off => c.bytes.len(),
        }
    }

    /// The protocol this chunk switches its direction to, if any: the first
    /// of the table whose probe says yes, from probing or from a protocol it
    /// takes over from.
    fn probe(&mut self, c: &Chunk<'_>, current: Option<Kind>) -> Option<Kind> {
        let e = TCP.iter().find(|e| {
            let may = match current {
                None => true,
                Some(k) => e.takes_over.contains(&k),
            };
            may && (e.probe)(c) == Probe::Yes
        })?;
        // TLS names the flow whatever it was called before (a CONNECT
        // tunnel is a TLS flow); other protocols name it if nothing did.
        if e.takes_over.is_empty() {
            self.app_proto.get_or_insert(e.name);
        } else {
            self.app_proto = Some(e.name);
        }
        Some(e.kind)
    }

    /// Does some protocol need more bytes to tell?
    fn awaits_more(&self, c: &Chunk<'_>) -> bool {
        TCP.iter().any(|e| (e.probe)(c) == Probe::NeedMore)
    }

    fn read(&mut self, k: Kind, c: &Chunk<'_>, ctx: &mut Ctx<'_>) -> usize {
        match k {
            Kind::Tls => {
                let t = self.tls.get_or_insert_with(Default::default);
                let was_malformed = t.malformed;
                let seen = t.client_hellos;
                let used = t.feed(c.dir, c.bytes, ctx.certs);
                if t.client_hellos > seen {
                    ctx.counters.tls_client_hellos += 1;
                }
                if t.malformed && !was_malformed {
                    ctx.counters.tls_malformed += 1;
                }
                if t.dir_done(c.dir) {
                    self.modes[c.dir as usize] = Mode::Off;
                }
                used
            }
            Kind::Http => {
                let h = self.http.get_or_insert_with(Default::default);
                match c.dir {
                    Dir::ToServer => h.feed_request(c.bytes),
                    Dir::ToClient => h.feed_response(c.bytes),
                }
            }
            Kind::Dns => self.read_dns(c, ctx),
            Kind::Quic => c.bytes.len(),
        }
    }

    /// DNS over a stream (RFC 1035 §4.2.2): two-byte length, then the message.
    fn read_dns(&mut self, c: &Chunk<'_>, ctx: &mut Ctx<'_>) -> usize {
        let bytes = c.bytes;
        let mut used = 0;
        while let Some(len) = bytes
            .get(used..used + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        {
            let Some(msg) = bytes.get(used + 2..used + 2 + len) else {
                break;
            };
            used += 2 + len;
            ctx.counters.dns_packets += 1;
            match dns::parse(msg) {
                Ok(m) if self.dns_msgs < MAX_TCP_DNS_MESSAGES => {
                    self.dns_msgs += 1;
                    ctx.dns_out.push(m);
                }
                Ok(_) => {}
                Err(_) => {
                    ctx.counters.dns_malformed += 1;
                    self.modes[c.dir as usize] = Mode::Off;
                    return bytes.len();
                }
            }
        }
        used
    }
}
