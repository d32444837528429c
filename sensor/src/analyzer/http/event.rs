//! The HTTP analyzer's event: EVE's `http` object, and the facts it gives.

use serde::Serialize;

use super::{Request, Response};
use crate::analyzer::facts::{Fact, Facts};

/// EVE's `http` object: the request and response heads of one transaction.
#[derive(Debug, Serialize)]
pub struct HttpEvent<'a> {
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub request: Option<&'a Request>,
    /// The response's protocol, when there is no request to give it (one
    /// `protocol` key, never two).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub response: Option<&'a Response>,
}

impl<'a> HttpEvent<'a> {
    /// The event for one transaction (either side may be missing).
    pub fn of(req: Option<&'a Request>, resp: Option<&'a Response>) -> Self {
        HttpEvent {
            request: req,
            protocol: match (req, resp) {
                (None, Some(r)) => Some(r.protocol.as_str()),
                _ => None,
            },
            response: resp,
        }
    }

    /// The facts signatures test on this transaction. A CONNECT's target is
    /// `http_connect`, any other request's host `http_host`.
    pub fn facts(&self) -> Facts<'a> {
        let mut f = Facts::default();
        if let Some(r) = self.request {
            let host = r.hostname.as_deref();
            if r.http_method.eq_ignore_ascii_case("CONNECT") {
                f.push_opt(Fact::HttpConnect, host);
            } else {
                f.push_opt(Fact::HttpHost, host);
            }
            f.push(Fact::HttpUrl, url_path(&r.url));
            f.push_opt(Fact::HttpUserAgent, r.http_user_agent.as_deref());
        }
        if let Some(r) = self.response {
            f.push_opt(Fact::HttpServer, r.server.as_deref());
            f.push_opt(Fact::HttpTitle, r.title.as_deref());
            f.push(Fact::HttpReason, &r.reason);
            f.push_opt(Fact::HttpCookie, r.set_cookie.as_deref());
            f.set(Fact::HttpStatus, r.status.into());
            f.set(Fact::HttpHeaderCount, r.header_count as i64);
        }
        f
    }
}

/// The path of a request target, also in absolute form (`http://host/path`,
/// what a client sends through a proxy).
fn url_path(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
        None => url,
    }
}
