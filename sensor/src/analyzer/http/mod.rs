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
/// Transactions logged per flow.
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
        let hostname = get("host")
            .map(|h| authority_host(&h))
            .or_else(|| (method == "CONNECT").then(|| authority_host(&url)));
        Request {
            http_method: method,
            protocol: format!("HTTP/1.{}", req.version.unwrap_or(1)),
            hostname,
            http_user_agent: get("user-agent"),
            url,
        }
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
        Response {
            status: resp.code.unwrap_or(0),
            reason: field(resp.reason.unwrap_or_default().as_bytes()),
            header_count: resp.headers.len(),
            protocol: format!("HTTP/1.{}", resp.version.unwrap_or(1)),
            server: get("server"),
            http_content_type: get("content-type"),
            set_cookie: get("set-cookie"),
            title: title(&d[body_at..]),
        }
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

/// Per-flow HTTP state: requests waiting for their response, finished pairs.
#[derive(Debug, Default)]
pub struct HttpSession {
    pending: VecDeque<Request>,
    /// Finished transactions, for the engine to log.
    pub done: Vec<(Option<Request>, Option<Response>)>,
    pub logged: usize,
    pub malformed: bool,
}

impl HttpSession {
    fn room(&self) -> bool {
        self.logged + self.done.len() + self.pending.len() < MAX_TRANSACTIONS
    }

    /// Feeds client bytes; returns how many were consumed.
    pub fn feed_request(&mut self, d: &[u8]) -> usize {
        if !looks_like_request(d) || !self.room() {
            return d.len();
        }
        match parse_request(d) {
            Progress::Done(r, _) => {
                self.pending.push_back(r);
                d.len()
            }
            Progress::NeedMore => 0,
            Progress::Invalid => {
                self.malformed = true;
                d.len()
            }
        }
    }

    /// Feeds server bytes; returns how many were consumed.
    pub fn feed_response(&mut self, d: &[u8]) -> usize {
        if !looks_like_response(d) {
            return d.len();
        }
        match parse_response(d) {
            Progress::Done(r, _) => {
                let req = self.pending.pop_front();
                self.done.push((req, Some(r)));
                d.len()
            }
            Progress::NeedMore => 0,
            Progress::Invalid => {
                self.malformed = true;
                d.len()
            }
        }
    }

    /// Requests that never got a response (at flow end).
    pub fn flush(&mut self) {
        while let Some(r) = self.pending.pop_front() {
            self.done.push((Some(r), None));
        }
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
}
