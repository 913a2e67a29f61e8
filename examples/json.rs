//! Rewrites JSON responses: every string value `"secret"` becomes `"[redacted]"`, in
//! any JSON body up to 1 MiB, whatever its `Content-Encoding`.
//!
//! ```text
//! cargo run --example json
//! curl --proxy http://127.0.0.1:8080 http://httpbin.example/json
//! ```
//!
//! For HTTPS, trust the CA printed on start (see README.md).

use std::sync::Arc;

use mitm::HttpHandler;
use mitm::{async_trait, Body, Bytes, Connection, HttpFlow, Mitm, Verdict};
use serde_json::Value;

struct Redact;

/// Replaces every string equal to "secret", at any depth.
fn redact(v: &mut Value) {
    match v {
        Value::String(s) if s == "secret" => *s = "[redacted]".into(),
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::Object(map) => map.values_mut().for_each(redact),
        _ => {}
    }
}

#[async_trait]
impl HttpHandler for Redact {
    async fn response(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        let Some(res) = flow.response.as_mut() else {
            return Verdict::Continue;
        };
        let is_json = res
            .headers
            .get("content-type")
            .is_some_and(|t| t.contains("json"));
        if !is_json {
            return Verdict::Continue;
        }
        // `None` for bodies over the limit, which stream past: those are left alone.
        let Some(Ok(plain)) = res.decoded_body(8 << 20) else {
            return Verdict::Continue;
        };
        let Ok(mut json) = serde_json::from_slice::<Value>(&plain) else {
            return Verdict::Continue;
        };
        redact(&mut json);
        // Sent uncompressed: the proxy sets Content-Length to match.
        res.headers.remove("content-encoding");
        res.body = Body::Full(Bytes::from(json.to_string()));
        Verdict::Continue
    }

    fn body_limit(&self) -> usize {
        1 << 20
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let proxy = Mitm::builder()
        .port(8080)
        .http_handler(Arc::new(Redact))
        .bind()
        .await?;
    println!("proxy on http://{}", proxy.local_addr());
    if let Some(path) = proxy.ca_cert_path() {
        println!("CA certificate: {}", path.display());
    }
    proxy
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
