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
