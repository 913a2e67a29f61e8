//! `anticomp`: origins asked for bodies without compression.

use async_trait::async_trait;

use crate::core::Connection;
use crate::http::message::{HttpFlow, Verdict};
use crate::middleware::HttpHandler;

/// mitmproxy's `anticomp`: sets `Accept-Encoding: identity` on every request (in place
/// of the client's, or added when it sent none), so that origins that honour it send
/// bodies uncompressed. `CONNECT` requests are left as they are.
///
/// ```
/// use std::sync::Arc;
///
/// let builder = mitm::Mitm::builder().http_handler(Arc::new(mitm::addons::AntiComp));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AntiComp;

#[async_trait]
impl HttpHandler for AntiComp {
    async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if !flow.request.is_connect() {
            flow.request.headers.insert("accept-encoding", "identity");
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
    async fn accept_encoding_becomes_identity_or_is_added() {
        let conn = Connection::new(1, Host::default());
        let mut flow = HttpFlow::new(1, Request::new("GET", "http://h/").unwrap());
        AntiComp.request(&conn, &mut flow).await;
        assert_eq!(
            flow.request.headers.get("accept-encoding"),
            Some("identity")
        );
        flow.request.headers.insert("Accept-Encoding", "gzip, br");
        flow.request.headers.append("accept-encoding", "zstd");
        AntiComp.request(&conn, &mut flow).await;
        let values: Vec<&[u8]> = flow.request.headers.get_all("accept-encoding").collect();
        assert_eq!(values, [b"identity"]);
    }
}
