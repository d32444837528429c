//! HTTP/1.x message heads on any TCP port (httparse), bounded.
//!
//! The sensor reads request lines (including `CONNECT host:port`), `Host` and
//! `User-Agent`; status lines, `Server` and the HTML `<title>` when it is in the
//! first response segment. Bodies are skipped, not parsed.

mod event;
pub use event::HttpEvent;

use std::collections::VecDeque;

use super::Progress;

/// Longest head read; a longer one is given up on.
pub const MAX_HEAD: usize = 16 * 1024;
/// Headers parsed per head.
pub const MAX_HEADERS: usize = 64;
/// Transactions logged per flow; past them only those a signature may match
/// are (every head is still read and matched).
pub const MAX_TRANSACTIONS: usize = 16;
/// Longest string logged from a head.
pub const MAX_FIELD: usize = 1024;

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"CONNECT ",
    b"PATCH ",
    b"TRACE ",
];

/// The analyzer table's probe: a request head to the server, a response
/// head to the client.
pub fn probe(c: &crate::analyzer::Chunk<'_>) -> crate::analyzer::Probe {
    let is_http = match c.dir {
        crate::flow::Dir::ToServer => looks_like_request(c.bytes),
        crate::flow::Dir::ToClient => looks_like_response(c.bytes),
    };
    if is_http {
        crate::analyzer::Probe::Yes
    } else {
        crate::analyzer::Probe::No
    }
}

pub fn looks_like_request(d: &[u8]) -> bool {
    METHODS
        .iter()
        .any(|m| d.len() >= m.len() && d[..m.len()].eq_ignore_ascii_case(m))
}

pub fn looks_like_response(d: &[u8]) -> bool {
    d.starts_with(b"HTTP/1.")
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Request {
    pub http_method: String,
    pub url: String,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_user_agent: Option<String>,
}

impl Request {
    /// Heap bytes the request's fields hold.
    fn heap(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        self.http_method.capacity()
            + self.url.capacity()
            + self.protocol.capacity()
            + opt(&self.hostname)
            + opt(&self.http_user_agent)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Response {
    pub status: u16,
    /// The reason phrase (`Connection established`).
    #[serde(skip)]
    pub reason: String,
    /// Headers in the head (mitmproxy's CONNECT reply has none).
    #[serde(skip)]
    pub header_count: usize,
    /// Logged only without a request (EVE's `http.protocol` is the request's).
    #[serde(skip)]
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_cookie: Option<String>,
}

fn field(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(MAX_FIELD)]).into_owned()
}

fn head_progress<T>(
    d: &[u8],
    r: Result<httparse::Status<usize>, httparse::Error>,
    make: impl FnOnce() -> T,
) -> Progress<T> {
    match r {
        Ok(httparse::Status::Complete(n)) => Progress::Done(make(), n),
        Ok(httparse::Status::Partial) if d.len() < MAX_HEAD => Progress::NeedMore,
        _ => Progress::Invalid,
    }
}

/// Parses a request head.
pub fn parse_request(d: &[u8]) -> Progress<Request> {
    parse_request_framed(d).map(|(r, _)| r)
}

/// The authority of an absolute-form target (`http://host:port/path`,
/// RFC 9112 §3.2.2), without user information.
fn absolute_authority(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!host.is_empty()).then_some(host)
}

/// Parses a request head and says how its body is framed.
fn parse_request_framed(d: &[u8]) -> Progress<(Request, Body)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let r = req.parse(d);
    head_progress(d, r, || {
        let get = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| field(h.value))
        };
        let url = req.path.map(|p| field(p.as_bytes())).unwrap_or_default();
        let method = req.method.unwrap_or_default().to_string();
        // CONNECT's target is the authority itself.
        // EVE's hostname is the host alone; the port is in the URL or dest_port.
        // An absolute-form target's authority wins over Host (RFC 9112 §3.2.2).
        let hostname = absolute_authority(&url)
            .map(authority_host)
            .or_else(|| get("host").map(|h| authority_host(&h)))
            .or_else(|| (method == "CONNECT").then(|| authority_host(&url)));
        let body = Body::of(req.headers, true, 0);
        let r = Request {
            http_method: method,
            protocol: format!("HTTP/1.{}", req.version.unwrap_or(1)),
            hostname,
            http_user_agent: get("user-agent"),
            url,
        };
        (r, body)
    })
}

/// Host part of `host:port` or `[v6]:port`.
pub fn authority_host(a: &str) -> String {
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match a.rsplit_once(':') {
        // a bare IPv6 address has more than one colon and no brackets
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
        _ => a.to_string(),
    }
}

/// Parses a response head; `title` is looked for in what follows it in `d`.
pub fn parse_response(d: &[u8]) -> Progress<Response> {
    parse_response_framed(d).map(|(r, _)| r)
}

/// Parses a response head and says how its body is framed.
fn parse_response_framed(d: &[u8]) -> Progress<(Response, Body)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let r = resp.parse(d);
    let body_at = match r {
        Ok(httparse::Status::Complete(n)) => n,
        _ => 0,
    };
    head_progress(d, r, || {
        let get = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| field(h.value))
        };
        let status = resp.code.unwrap_or(0);
        let body = Body::of(resp.headers, false, status);
        let r = Response {
            status,
            reason: field(resp.reason.unwrap_or_default().as_bytes()),
            header_count: resp.headers.len(),
            protocol: format!("HTTP/1.{}", resp.version.unwrap_or(1)),
            server: get("server"),
            http_content_type: get("content-type"),
            set_cookie: get("set-cookie"),
            title: title(&d[body_at..]),
        };
        (r, body)
    })
}

/// The text of the first `<title>` element in `body`, if it is all there.
pub fn title(body: &[u8]) -> Option<String> {
    let lower: Vec<u8> = body
        .iter()
        .take(MAX_HEAD)
        .map(|b| b.to_ascii_lowercase())
        .collect();
    let open = find(&lower, b"<title")?;
    let start = open + find(&lower[open..], b">")? + 1;
    let len = find(&lower[start..], b"</title")?;
    let t = field(&body[start..start + len]);
    Some(t.trim().to_string())
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// How a message's body is framed (RFC 9112 §6.3), and how much of it is
/// still to be skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    #[default]
    None,
    Length(u64),
    Chunked(Chunk),
    /// To the end of the connection: no head follows.
    UntilClose,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
}

/// A chunk-size or trailer line longer than this ends the parsing of heads.
const MAX_LINE: usize = 1024;

impl Body {
    /// The framing a head's headers give (`Transfer-Encoding: chunked` over
    /// `Content-Length`).
    fn of(headers: &[httparse::Header<'_>], request: bool, status: u16) -> Body {
        let get = |n: &str| headers.iter().find(|h| h.name.eq_ignore_ascii_case(n));
        if !request && (status < 200 || status == 204 || status == 304) {
            return Body::None;
        }
        if get("transfer-encoding").is_some_and(|h| {
            String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
        }) {
            return Body::Chunked(Chunk::Size);
        }
        match get("content-length").map(|h| String::from_utf8_lossy(h.value).trim().parse()) {
            Some(Ok(n)) => Body::Length(n),
            Some(Err(_)) => Body::UntilClose,
            None if request => Body::None,
            None => Body::UntilClose,
        }
    }

    /// Skips body bytes at the start of `d`; returns how many, and whether
    /// the body needs more bytes than `d` has.
    fn skip(&mut self, d: &[u8]) -> (usize, bool) {
        let mut used = 0;
        loop {
            let rest = &d[used..];
            match *self {
                Body::None => return (used, false),
                Body::UntilClose => return (d.len(), true),
                Body::Length(n) => {
                    let take = (n.min(rest.len() as u64)) as usize;
                    *self = if take as u64 == n {
                        Body::None
                    } else {
                        Body::Length(n - take as u64)
                    };
                    return (used + take, *self != Body::None);
                }
                Body::Chunked(Chunk::Data(n)) => {
                    let take = (n.min(rest.len() as u64)) as usize;
                    used += take;
                    if (take as u64) < n {
                        *self = Body::Chunked(Chunk::Data(n - take as u64));
                        return (used, true);
                    }
                    *self = Body::Chunked(Chunk::DataEnd);
                }
                Body::Chunked(state) => {
                    let Some(end) = rest.iter().take(MAX_LINE).position(|b| *b == b'\n') else {
                        if rest.len() >= MAX_LINE {
                            *self = Body::UntilClose;
                        }
                        return (used, true);
                    };
                    let line = String::from_utf8_lossy(&rest[..end]);
                    let line = line.trim();
                    used += end + 1;
                    *self = match state {
                        Chunk::Size => {
                            let size = line.split(';').next().unwrap_or("").trim();
                            match u64::from_str_radix(size, 16) {
                                Ok(0) => Body::Chunked(Chunk::Trailer),
                                Ok(n) => Body::Chunked(Chunk::Data(n)),
                                Err(_) => Body::UntilClose,
                            }
                        }
                        Chunk::DataEnd if line.is_empty() => Body::Chunked(Chunk::Size),
                        Chunk::DataEnd => Body::UntilClose,
                        Chunk::Trailer if line.is_empty() => Body::None,
                        Chunk::Trailer | Chunk::Data(_) => Body::Chunked(Chunk::Trailer),
                    };
                }
            }
        }
    }
}

/// Requests waiting for their response at most (older ones are logged alone).
pub const MAX_PENDING: usize = 64;
/// Head bytes read per direction of a flow; past them heads are not read.
pub const MAX_HEAD_BYTES: u64 = 1 << 20;

/// One direction's reading: the body being skipped, head bytes read so far.
#[derive(Debug, Default)]
struct Reader {
    body: Body,
    head_bytes: u64,
}

impl Reader {
    /// Reads every head in `d` (skipping bodies as their framing says) with
    /// `parse`; returns the bytes consumed (fewer than `d`: a head or a
    /// chunk line is cut, call again with more).
    fn feed<T>(
        &mut self,
        d: &[u8],
        looks: fn(&[u8]) -> bool,
        parse: fn(&[u8]) -> Progress<(T, Body)>,
        mut each: impl FnMut(T) -> bool,
    ) -> Result<usize, ()> {
        let mut used = 0;
        loop {
            let (skipped, more) = self.body.skip(&d[used..]);
            used += skipped;
            if more || used == d.len() {
                return Ok(used);
            }
            // empty lines before a request line are ignored (RFC 9112 §2.2)
            let blank = d[used..]
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            used += blank;
            let rest = &d[used..];
            if rest.is_empty() {
                return Ok(used);
            }
            if self.head_bytes >= MAX_HEAD_BYTES {
                return Ok(d.len());
            }
            if !looks(rest) {
                // a method or status line cut short: wait for it
                return Ok(if rest.len() < 8 { used } else { d.len() });
            }
            match parse(rest) {
                Progress::Done((m, body), n) => {
                    // `each` says whether the message has the body its head frames
                    self.body = if each(m) { body } else { Body::None };
                    self.head_bytes += n as u64;
                    used += n;
                }
                Progress::NeedMore => return Ok(used),
                Progress::Invalid => return Err(()),
            }
        }
    }
}

/// Per-flow HTTP state: requests waiting for their response, finished pairs.
#[derive(Debug, Default)]
pub struct HttpSession {
    pending: VecDeque<Request>,
    /// Heap bytes of the fields of `pending`'s requests.
    pending_heap: usize,
    /// Finished transactions, for the engine to log.
    pub done: Vec<(Option<Request>, Option<Response>)>,
    /// Transactions logged so far (past [`MAX_TRANSACTIONS`] only those that
    /// may alert are).
    pub logged: usize,
    pub malformed: bool,
    requests: Reader,
    responses: Reader,
}

impl HttpSession {
    /// Feeds client bytes; returns how many were consumed. Every request
    /// head is read, however many come on one connection or in one segment.
    pub fn feed_request(&mut self, d: &[u8]) -> usize {
        let (pending, heap, done) = (&mut self.pending, &mut self.pending_heap, &mut self.done);
        let r = self
            .requests
            .feed(d, looks_like_request, parse_request_framed, |r| {
                if pending.len() >= MAX_PENDING {
                    if let Some(old) = pending.pop_front() {
                        *heap -= old.heap();
                        done.push((Some(old), None));
                    }
                }
                *heap += r.heap();
                pending.push_back(r);
                true
            });
        self.settle(d, r)
    }

    /// Feeds server bytes; returns how many were consumed.
    pub fn feed_response(&mut self, d: &[u8]) -> usize {
        let (pending, heap, done) = (&mut self.pending, &mut self.pending_heap, &mut self.done);
        let r = self
            .responses
            .feed(d, looks_like_response, parse_response_framed, |r| {
                let req = pending.pop_front();
                *heap -= req.as_ref().map_or(0, Request::heap);
                if pending.is_empty() && pending.capacity() > 4 {
                    // a pipelined burst answered: its room goes
                    *pending = VecDeque::new();
                }
                // the response to HEAD has no body, whatever its head says
                let body = req
                    .as_ref()
                    .is_none_or(|q| !q.http_method.eq_ignore_ascii_case("HEAD"));
                done.push((req, Some(r)));
                body
            });
        self.settle(d, r)
    }

    fn settle(&mut self, d: &[u8], r: Result<usize, ()>) -> usize {
        r.unwrap_or_else(|()| {
            self.malformed = true;
            d.len()
        })
    }

    /// Requests that never got a response (at flow end, or when the flow
    /// is let go at the memory cap), to be logged without one.
    pub fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.done
            .extend(pending.into_iter().map(|r| (Some(r), None)));
        self.pending_heap = 0;
    }

    /// Heap bytes the requests waiting for their response hold (counted
    /// with the streams against the engine's memory cap: a flow may hold
    /// [`MAX_PENDING`] of them).
    pub fn memory(&self) -> usize {
        self.pending.capacity() * std::mem::size_of::<Request>() + self.pending_heap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_request_names_its_target() {
        let d = b"CONNECT connect.ngrok-agent.com:443 HTTP/1.1\r\nUser-Agent: Go-http-client/1.1\r\n\r\n";
        let Progress::Done(r, n) = parse_request(d) else {
            panic!("parses")
        };
        assert_eq!(n, d.len());
        assert_eq!(r.http_method, "CONNECT");
        assert_eq!(r.url, "connect.ngrok-agent.com:443");
        assert_eq!(r.hostname.as_deref(), Some("connect.ngrok-agent.com"));
        assert_eq!(r.http_user_agent.as_deref(), Some("Go-http-client/1.1"));
    }

    #[test]
    fn response_with_server_and_title() {
        let d = b"HTTP/1.1 200 OK\r\nServer: mitmproxy 12.2.3\r\nContent-Type: text/html\r\n\r\n<html><head><TITLE> mitmproxy </TITLE>";
        let Progress::Done(r, _) = parse_response(d) else {
            panic!("parses")
        };
        assert_eq!(r.status, 200);
        assert_eq!(r.server.as_deref(), Some("mitmproxy 12.2.3"));
        assert_eq!(r.title.as_deref(), Some("mitmproxy"));
    }

    #[test]
    fn partial_heads_need_more_until_the_cap() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a"),
            Progress::NeedMore
        );
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse_request(&big), Progress::Invalid);
    }

    #[test]
    fn authority_forms() {
        assert_eq!(authority_host("a.b:443"), "a.b");
        assert_eq!(authority_host("[2001:db8::1]:8080"), "2001:db8::1");
    }

    fn hosts(h: &mut HttpSession) -> Vec<Option<String>> {
        h.flush();
        h.done
            .iter()
            .map(|(q, _)| q.as_ref().and_then(|q| q.hostname.clone()))
            .collect()
    }

    #[test]
    fn every_head_is_read_pipelined_after_bodies_and_past_sixteen() {
        let mut h = HttpSession::default();
        let d = b"GET /a HTTP/1.1\r\nHost: a.example\r\n\r\nGET /b HTTP/1.1\r\nHost: b.ngrok-free.app\r\n\r\n";
        assert_eq!(h.feed_request(d), d.len());
        // a body (which holds a fake head) by length, then a chunked one
        let d = b"POST /c HTTP/1.1\r\nHost: c\r\nContent-Length: 29\r\n\r\nGET /fake HTTP/1.1\r\nHost: f\r\nPOST /d HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\r\nGET /e HTTP/1.1\r\nHost: e\r\n\r\n";
        assert_eq!(h.feed_request(d), d.len());
        for i in 0..40 {
            let r = format!("GET /{i} HTTP/1.1\r\nHost: h{i}\r\n\r\n");
            assert_eq!(h.feed_request(r.as_bytes()), r.len());
        }
        let got = hosts(&mut h);
        assert_eq!(got.len(), 45, "{got:?}");
        let first: Vec<_> = got[..5]
            .iter()
            .map(|h| h.as_deref().unwrap_or("-"))
            .collect();
        assert_eq!(first, ["a.example", "b.ngrok-free.app", "c", "d", "e"]);
        assert_eq!(got[44].as_deref(), Some("h39"));
    }

    #[test]
    fn a_head_cut_by_the_segment_waits_for_the_rest() {
        let mut h = HttpSession::default();
        let d = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHo";
        let used = h.feed_request(d);
        assert_eq!(used, 28, "the second head is kept for more bytes");
        let mut rest = d[used..].to_vec();
        rest.extend_from_slice(b"st: b\r\n\r\n");
        assert_eq!(h.feed_request(&rest), rest.len());
        assert_eq!(hosts(&mut h), [Some("a".into()), Some("b".into())]);
        // a method cut short
        let mut h = HttpSession::default();
        assert_eq!(h.feed_request(b"GE"), 0);
    }

    #[test]
    fn absolute_form_authority_wins_and_http10_needs_no_host() {
        let mut h = HttpSession::default();
        let d = b"GET http://user@abc.ngrok-free.app:8080/x?y HTTP/1.1\r\nHost: www.example.com\r\n\r\nGET / HTTP/1.0\r\n\r\n";
        assert_eq!(h.feed_request(d), d.len());
        let got = hosts(&mut h);
        assert_eq!(got, [Some("abc.ngrok-free.app".into()), None]);
        assert_eq!(
            h.done[1].0.as_ref().map(|r| r.protocol.as_str()),
            Some("HTTP/1.0")
        );
    }

    #[test]
    fn responses_are_paired_across_bodies_and_head_requests() {
        let mut h = HttpSession::default();
        let q = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: b\r\n\r\n";
        h.feed_request(q);
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 404 Not Found\r\nServer: x\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(h.feed_response(r), r.len());
        let pairs: Vec<_> = h
            .done
            .iter()
            .map(|(q, r)| {
                (
                    q.as_ref().and_then(|q| q.hostname.clone()),
                    r.as_ref().map(|r| r.status),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [(Some("a".into()), Some(200)), (Some("b".into()), Some(404))]
        );
    }

    /// The memory of the requests waiting for a response is what their
    /// fields and the queue hold, falls as responses take them, and is
    /// freed when they are flushed to be logged.
    #[test]
    fn pending_requests_memory_follows_the_queue() {
        let mut h = HttpSession::default();
        assert_eq!(h.memory(), 0);
        let req = b"GET /abcdefgh HTTP/1.1\r\nHost: h.test\r\nUser-Agent: ua/1\r\n\r\n";
        for _ in 0..3 {
            assert_eq!(h.feed_request(req), req.len());
        }
        let fields = |h: &HttpSession| h.pending.iter().map(Request::heap).sum::<usize>();
        let queue = h.pending.capacity() * std::mem::size_of::<Request>();
        assert!(fields(&h) >= 3 * "GET/abcdefghHTTP/1.1h.testua/1".len());
        assert_eq!(h.memory(), queue + fields(&h));
        let resp = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(h.feed_response(resp), resp.len());
        assert_eq!(h.pending.len(), 2);
        assert_eq!(h.memory(), queue + fields(&h));
        h.flush();
        assert_eq!(h.memory(), 0);
        assert_eq!(h.done.len(), 3);

        // a response with no request waiting takes nothing away
        let mut h = HttpSession::default();
        assert_eq!(h.feed_response(resp), resp.len());
        assert_eq!(h.memory(), 0);
        // past MAX_PENDING the oldest is logged alone: the count follows
        for _ in 0..MAX_PENDING + 10 {
            h.feed_request(req);
        }
        assert_eq!(h.pending.len(), MAX_PENDING);
        assert_eq!(h.done.len(), 1 + 10);
        let queue = h.pending.capacity() * std::mem::size_of::<Request>();
        assert_eq!(h.memory(), queue + fields(&h));
        // every one answered: the queue's room goes too
        for _ in 0..MAX_PENDING {
            h.feed_response(resp);
        }
        assert_eq!(h.memory(), 0);
    }
}
