//! [`HttpLog`]: one block per request/response pair, built on the message hooks.

use std::fmt::Write as _;

use async_trait::async_trait;

use super::HttpHandler;
use crate::core::Connection;
use crate::http::message::{Body, Headers, HttpFlow};

/// Logs each HTTP exchange that crosses the proxy (decrypted, for intercepted TLS) as
/// one block, when it is over: method, URL, status, body sizes and timings, then the
/// request and response heads, with bodies shown when they are short text. Output goes
/// through `tracing` at `info`, target `mitm::http`.
///
/// ```text
/// GET https://example.com/ -> 200 OK (0 B up, 1256 B down, first byte 41.2 ms, total 42.0 ms)
/// > Host: example.com
/// > User-Agent: curl/8.5.0
/// < Content-Type: text/html
/// < Content-Length: 1256
/// ```
#[derive(Debug, Clone)]
pub struct HttpLog {
    max_body: usize,
}

impl Default for HttpLog {
    fn default() -> Self {
        HttpLog { max_body: 2048 }
    }
}

impl HttpLog {
    /// Shows bodies of at most `bytes` bytes (longer ones are summarised by size).
    /// Default: 2048.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The block logged for a finished flow.
    pub fn render(&self, flow: &HttpFlow) -> String {
        let req = &flow.request;
        let mut text = format!("{} {}", req.method, req.url());
        match &flow.response {
            Some(res) => {
                let _ = write!(text, " -> {} {}", res.status, res.reason);
            }
            None => text.push_str(" -> (no response)"),
        }
        let _ = write!(
            text,
            " ({} B up, {} B down",
            flow.request_body_size, flow.response_body_size
        );
        if let Some(t) = flow.timings.time_to_first_byte() {
            let _ = write!(text, ", first byte {:.1} ms", t.as_secs_f64() * 1e3);
        }
        if let Some(t) = flow.timings.total() {
            let _ = write!(text, ", total {:.1} ms", t.as_secs_f64() * 1e3);
        }
        text.push(')');
        self.section(&mut text, '>', &req.headers, &req.body);
        if let Some(res) = &flow.response {
            self.section(&mut text, '<', &res.headers, &res.body);
        }
        text
    }

    fn section(&self, text: &mut String, mark: char, headers: &Headers, body: &Body) {
        for (name, value) in headers.iter() {
            let _ = write!(text, "\n{mark} {name}: {}", String::from_utf8_lossy(value));
        }
        let Some(bytes) = body.bytes() else {
            return;
        };
        if bytes.is_empty() || bytes.len() > self.max_body {
            return;
        }
        if let Ok(body) = std::str::from_utf8(bytes) {
            text.push('\n');
            text.push_str(body);
        }
    }
}

#[async_trait]
impl HttpHandler for HttpLog {
    async fn flow_finished(&self, _conn: &Connection, flow: &HttpFlow) {
        tracing::info!(target: "mitm::http", "{}", self.render(flow));
    }

    /// Bodies up to `max_body` are held so they can be shown.
    fn body_limit(&self) -> usize {
        self.max_body
    }
}
