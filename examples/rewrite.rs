//! A proxy with a custom middleware that rewrites bytes of responses.
//!
//! Run it, then send a request through it:
//!
//! ```text
//! cargo run --example rewrite
//! curl --proxy http://127.0.0.1:8080 http://example.com/
//! ```
//!
//! Every `Example` in what the server sends comes back as `Rewrote` (the same
//! length, so `Content-Length` stays right). For HTTPS, trust the CA printed on start.

use std::sync::Arc;

use mitm::DataHooks;
use mitm::{async_trait, Bytes, Connection, Log, Middleware, Mitm};

/// Replaces one word by another of the same length in server data.
struct Rewrite {
    from: &'static [u8],
    to: &'static [u8],
}

#[async_trait]
impl Middleware for Rewrite {
    fn data_hooks(&self) -> DataHooks {
        DataHooks::On
    }

    async fn server_data(&self, _conn: &Connection, data: Bytes) -> Bytes {
        if !data.windows(self.from.len()).any(|w| w == self.from) {
            // Nothing to change: pass the same buffer on, no copy.
            return data;
        }
        let mut out = data.to_vec();
        let mut i = 0;
        while i + self.from.len() <= out.len() {
            if &out[i..i + self.from.len()] == self.from {
                out[i..i + self.from.len()].copy_from_slice(self.to);
                i += self.from.len();
            } else {
                i += 1;
            }
        }
        Bytes::from(out)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let proxy = Mitm::builder()
        .port(8080)
        .middleware(Arc::new(Log))
        .middleware(Arc::new(Rewrite {
            from: b"Example",
            to: b"Rewrote",
        }))
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
