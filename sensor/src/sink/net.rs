//! Network outputs: RFC 5424 syslog over TCP (RFC 6587 octet counting) or
//! UDP, and Redis (a stream by XADD with an approximate MAXLEN, or a list
//! by RPUSH).
//!
//! A network output never blocks the writer: `send` frames each line and
//! puts it in a queue bounded in bytes (what does not fit is dropped and
//! counted); a thread of its own sends the queue in order, reconnecting with
//! a growing backoff (0.1 s to 5 s) while the far end is away, a message
//! being sent again whole on a new connection (the receiver drops a
//! message cut by the old one). At the end, [`Sink::drain`] waits for the
//! queue up to a deadline; what is still queued then is counted lost.

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::{TcpStream, UdpSocket};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Batch, Sent, Sink};
use crate::config::{NetProto, RedisMode};

/// Where a network output sends.
#[derive(Debug, Clone)]
pub enum Far {
    Syslog {
        proto: NetProto,
        addr: String,
        /// Trusted CAs for `tls://` (PEM; default: the system's).
        ca_file: Option<std::path::PathBuf>,
    },
    Redis {
        url: String,
        mode: RedisMode,
        key: String,
        maxlen: u64,
    },
}

/// Default queue size.
pub const DEFAULT_QUEUE_MIB: u32 = 64;
/// Largest message UDP carries (longer ones are counted lost).
pub const MAX_DATAGRAM: usize = 65_000;

/// The syslog severity (RFC 5424 §6.2.1) of an event: alerts by their
/// severity (1 critical, 2 error, 3 warning, 4 notice), other events
/// informational. Facility local0.
pub fn pri(event_type: &str, severity: Option<u8>) -> u8 {
    let sev = match (event_type, severity) {
        ("alert", Some(1)) => 2,
        ("alert", Some(2)) => 3,
        ("alert", Some(3)) => 4,
        ("alert", _) => 5,
        _ => 6,
    };
    16 * 8 + sev
}

/// One RFC 5424 message: header, no structured data, the event's JSON as
/// the message (its newline left out).
pub fn message(
    host: &str,
    event_type: &str,
    severity: Option<u8>,
    json: &[u8],
    now: &str,
) -> Vec<u8> {
    let json = json.strip_suffix(b"\n").unwrap_or(json);
    let mut m = format!(
        "<{}>1 {now} {host} spanwatch {} {event_type} - ",
        pri(event_type, severity),
        std::process::id()
    )
    .into_bytes();
    m.extend_from_slice(json);
    m
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Vec<u8>>,
    bytes: usize,
    /// A message taken by the sender and not yet delivered.
    sending: bool,
    stop: bool,
    last_error: Option<String>,
}

struct Shared {
    q: Mutex<Queue>,
    cv: Condvar,
}

/// A network output (syslog or Redis).
pub struct NetSink {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    limit: usize,
    /// A UDP syslog output (messages bounded by the datagram size).
    udp: bool,
    /// Messages are RFC 5424 (syslog) rather than the bare JSON (Redis).
    syslog: bool,
    host: String,
}

impl NetSink {
    /// An output to `far`, queueing `queue_mib`.
    pub fn new(far: Far, queue_mib: u32) -> std::io::Result<Self> {
        let udp = matches!(
            far,
            Far::Syslog {
                proto: NetProto::Udp,
                ..
            }
        );
        let syslog = matches!(far, Far::Syslog { .. });
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue::default()),
            cv: Condvar::new(),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("spanwatch-net-out".into())
            .spawn(move || sender(&s, &far))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty() && h.is_ascii() && !h.contains(' '))
            .unwrap_or_else(|| "-".into());
        Ok(NetSink {
            shared,
            thread: Some(thread),
            limit: queue_mib.max(1) as usize * 1024 * 1024,
            udp,
            syslog,
            host,
        })
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Queue> {
    s.q.lock().unwrap_or_else(|e| e.into_inner())
}

/// The far end, connected.
enum Conn {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Udp(UdpSocket),
    Redis(Box<redis::Connection>),
}

/// The system's trusted certificates (Debian's bundle).
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A TLS session to `addr` over `tcp`, its certificate checked against
/// `ca_file` (or the system's) for the host part of `addr`.
fn tls(tcp: TcpStream, addr: &str, ca_file: Option<&std::path::Path>) -> std::io::Result<Conn> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let path = ca_file.unwrap_or(std::path::Path::new(SYSTEM_CAS));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(path)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?
    {
        let c = c.map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
        roots.add(c).map_err(std::io::Error::other)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string()).map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // the handshake now, so a bad certificate shows as a connection error
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(Conn::Tls(Box::new(s)))
}

fn connect(far: &Far) -> std::io::Result<Conn> {
    let (proto, addr, ca) = match far {
        Far::Syslog {
            proto,
            addr,
            ca_file,
        } => (*proto, addr.as_str(), ca_file.as_deref()),
        Far::Redis { url, .. } => {
            let c = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                .map_err(std::io::Error::other)?;
            let _ = c.set_write_timeout(Some(Duration::from_secs(5)));
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            return Ok(Conn::Redis(Box::new(c)));
        }
    };
    use std::net::ToSocketAddrs;
    let to = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr}: no address")))?;
    Ok(match proto {
        NetProto::Tcp | NetProto::Tls => {
            let t = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            t.set_write_timeout(Some(Duration::from_secs(5)))?;
            t.set_read_timeout(Some(Duration::from_secs(5)))?;
            t.set_nodelay(true)?;
            if proto == NetProto::Tls {
                return tls(t, addr, ca);
            }
            Conn::Tcp(t)
        }
        NetProto::Udp => {
            let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let u = UdpSocket::bind(bind)?;
            u.connect(to)?;
            Conn::Udp(u)
        }
    })
}

fn deliver(c: &mut Conn, far: &Far, m: &[u8]) -> std::io::Result<()> {
    match c {
        Conn::Redis(r) => {
            let Far::Redis {
                mode, key, maxlen, ..
            } = far
            else {
                return Err(std::io::Error::other("not a redis output"));
            };
            let json = m.strip_suffix(b"\n").unwrap_or(m);
            let cmd = match mode {
                RedisMode::Stream => {
                    let mut c = redis::cmd("XADD");
                    c.arg(key)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(*maxlen)
                        .arg("*")
                        .arg("event")
                        .arg(json);
                    c
                }
                RedisMode::List => {
                    let mut c = redis::cmd("RPUSH");
                    c.arg(key).arg(json);
                    c
                }
            };
            cmd.query::<redis::Value>(r.as_mut())
                .map(|_| ())
                .map_err(std::io::Error::other)
        }
        // RFC 6587 §3.4.1 (and RFC 5425 §4.3 over TLS): the length, a
        // space, the message
        Conn::Tcp(t) => t.write_all(&octet_counted(m)),
        Conn::Tls(t) => {
            t.write_all(&octet_counted(m))?;
            std::io::Write::flush(t)
        }
        Conn::Udp(u) => u.send(m).map(|_| ()),
    }
}

fn octet_counted(m: &[u8]) -> Vec<u8> {
    let mut framed = format!("{} ", m.len()).into_bytes();
    framed.extend_from_slice(m);
    framed
}

/// The sending thread: the queue in order, over a connection made (and
/// made again) as needed.
fn sender(s: &Shared, far: &Far) {
    let addr = match far {
        Far::Syslog { addr, .. } => addr.clone(),
        Far::Redis { url, .. } => url.clone(),
    };
    let mut conn: Option<Conn> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let m = {
            let mut q = lock(s);
            while q.items.is_empty() && !q.stop {
                q = s.cv.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.stop {
                return; // drained: what is left is counted by `drain`
            }
            let Some(m) = q.items.front().cloned() else {
                continue;
            };
            q.sending = true;
            m
        };
        let result = match conn.as_mut() {
            Some(c) => deliver(c, far, &m),
            None => connect(far).and_then(|mut c| {
                let r = deliver(&mut c, far, &m);
                conn = Some(c);
                r
            }),
        };
        let mut q = lock(s);
        q.sending = false;
        match result {
            Ok(()) => {
                if let Some(m) = q.items.pop_front() {
                    q.bytes -= m.len();
                }
                backoff = Duration::from_millis(100);
                s.cv.notify_all();
            }
            Err(e) => {
                q.last_error = Some(format!("{addr}: {e}"));
                conn = None;
                // wait out the backoff, unless `drain` stops us first
                drop(
                    s.cv.wait_timeout_while(q, backoff, |q| !q.stop)
                        .map_or_else(|e| e.into_inner().0, |r| r.0),
                );
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

impl Sink for NetSink {
    fn send(&mut self, b: &Batch<'_>) -> Sent {
        let now = crate::time::Timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64),
        );
        let mut buf = [0u8; 31];
        // RFC 5424 §6.2.3 wants the offset as `Z` or `+hh:mm`
        let stamp = now.rfc3339(&mut buf);
        let now = format!("{}Z", stamp.strip_suffix("+0000").unwrap_or(stamp));
        let mut sent = Sent::default();
        let mut q = lock(&self.shared);
        for l in b.lines {
            let m = if self.syslog {
                message(&self.host, l.event_type, l.severity, l.json, &now)
            } else {
                l.json.to_vec()
            };
            let too_big = self.udp && m.len() > MAX_DATAGRAM;
            if too_big || q.bytes + m.len() > self.limit {
                sent.lost += 1;
                continue;
            }
            q.bytes += m.len();
            q.items.push_back(m);
            sent.written += 1;
        }
        if sent.lost > 0 {
            sent.error = Some(match q.last_error.clone() {
                Some(e) => format!("network output queue full ({e})"),
                None => "network output queue full, or a message too long for UDP".into(),
            });
        }
        self.shared.cv.notify_all();
        sent
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(()) // the sender sends as it can; `drain` waits at the end
    }

    fn chooses_lines(&self) -> bool {
        true
    }

    fn drain(&mut self, deadline: Duration) -> u64 {
        let until = Instant::now() + deadline;
        let mut q = lock(&self.shared);
        while (!q.items.is_empty() || q.sending) && Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            q = self
                .shared
                .cv
                .wait_timeout(q, left.min(Duration::from_millis(50)))
                .map_or_else(|e| e.into_inner().0, |r| r.0);
        }
        q.stop = true;
        self.shared.cv.notify_all();
        drop(q);
        // a message in flight finishes (or fails) within the connect and
        // write timeouts; only then is what is left counted, once
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut q = lock(&self.shared);
        let left = q.items.len() as u64;
        q.items.clear();
        q.bytes = 0;
        left
    }
}

impl Drop for NetSink {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.drain(Duration::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424_message_with_the_event_as_its_text() {
        let m = message(
            "span-1",
            "alert",
            Some(1),
            b"{\"a\":1}\n",
            "2026-11-01T10:00:00.000000Z",
        );
        let m = String::from_utf8(m).expect("utf-8");
        let pid = std::process::id();
        assert_eq!(
            m,
            format!(
                "<130>1 2026-11-01T10:00:00.000000Z span-1 spanwatch {pid} alert - {{\"a\":1}}"
            )
        );
        assert_eq!(pri("alert", Some(4)), 133);
        assert_eq!(pri("host_activity", None), 134);
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_drain_counts_the_rest() {
        // a port nobody listens on: everything stays queued
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let far = Far::Syslog {
            proto: NetProto::Tcp,
            addr: format!("127.0.0.1:{port}"),
            ca_file: None,
        };
        let mut s = NetSink::new(far, 1).expect("sink");
        let json = vec![b'x'; 300 * 1024];
        let lines: Vec<super::super::Line<'_>> = (0..5)
            .map(|_| super::super::Line {
                event_type: "alert",
                severity: Some(1),
                json: &json,
            })
            .collect();
        let sent = s.send(&Batch {
            lines: &lines,
            runs: &[],
        });
        // 1 MiB holds three of the five
        assert_eq!((sent.written, sent.lost), (3, 2));
        assert!(sent.error.is_some());
        assert_eq!(s.drain(Duration::from_millis(200)), 3);
    }

    #[test]
    fn every_message_is_either_delivered_or_counted_lost_never_both() {
        use std::io::BufRead;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        // a slow reader: the drain deadline falls while messages are in flight
        let reader = std::thread::spawn(move || {
            let (c, _) = l.accept().expect("accept");
            let mut n = 0u64;
            let mut r = std::io::BufReader::with_capacity(512, c);
            let mut line = Vec::new();
            while r.read_until(b'}', &mut line).is_ok_and(|k| k > 0) {
                n += 1;
                line.clear();
                std::thread::sleep(Duration::from_micros(200));
            }
            n
        });
        let far = Far::Syslog {
            proto: NetProto::Tcp,
            addr: addr.to_string(),
            ca_file: None,
        };
        let mut s = NetSink::new(far, 64).expect("sink");
        let json = [b"{\"x\":\"".as_slice(), &[b'y'; 2000], b"\"}"].concat();
        let lines: Vec<super::super::Line<'_>> = (0..3000)
            .map(|_| super::super::Line {
                event_type: "alert",
                severity: Some(1),
                json: &json,
            })
            .collect();
        let sent = s.send(&Batch {
            lines: &lines,
            runs: &[],
        });
        assert_eq!((sent.written, sent.lost), (3000, 0));
        let lost = s.drain(Duration::from_millis(300));
        drop(s); // closes the connection: the reader sees the end
        let got = reader.join().expect("reader");
        assert!(lost > 0, "the deadline should leave some queued");
        assert_eq!(got + lost, 3000, "{got} delivered, {lost} counted lost");
    }
}
