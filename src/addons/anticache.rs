//! `anticache`: the request headers that let an origin answer `304 Not Modified`
//! removed.

use async_trait::async_trait;

use crate::core::Connection;
use crate::http::message::{HttpFlow, Verdict};
use crate::middleware::HttpHandler;

/// The conditional request headers [`AntiCache`] removes (those mitmproxy removes).
pub const CONDITIONAL_HEADERS: [&str; 2] = ["if-modified-since", "if-none-match"];

/// mitmproxy's `anticache`: removes `If-Modified-Since` and `If-None-Match` from every
/// request, so that origins send the whole resource instead of `304 Not Modified`
/// (and the flow shows it). `CONNECT` requests are left as they are.
///
/// ```
/// use std::sync::Arc;
///
/// let builder = mitm::Mitm::builder().http_handler(Arc::new(mitm::addons::AntiCache));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AntiCache;

#[async_trait]
impl HttpHandler for AntiCache {
    async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if !flow.request.is_connect() {
            for name in CONDITIONAL_HEADERS {
                flow.request.headers.remove(name);
            }
        }
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Host;
    use crate::http::message::Request;

    #[tokio::test]
    async fn conditional_headers_go_and_the_others_stay() {
        let conn = Connection::new(1, Host::default());
        let mut flow = HttpFlow::new(1, Request::new("GET", "http://h/").unwrap());
        let headers = &mut flow.request.headers;
        headers.append("If-None-Match", "\"a\"");
        headers.append("If-Modified-Since", "Wed, 21 Oct 2015 07:28:00 GMT");
        headers.append("if-none-match", "\"b\"");
        headers.append("If-Match", "\"c\"");
        AntiCache.request(&conn, &mut flow).await;
        let names: Vec<&str> = flow.request.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["If-Match"]);
    }
}
