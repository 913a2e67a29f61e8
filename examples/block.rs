//! Blocks hosts: requests to them are answered by the proxy with a 403 page, and never
//! reach the network. HTTPS is blocked at `CONNECT`, before any TLS.
//!
//! ```text
//! cargo run --example block -- ads.example.com tracker.example.net
//! curl --proxy http://127.0.0.1:8080 http://ads.example.com/       # 403 from the proxy
//! ```

use std::sync::Arc;

use mitm::HttpHandler;
use mitm::{async_trait, Connection, HttpFlow, Mitm, Response, Verdict};

/// Answers requests to the listed hosts (and their subdomains) with 403.
struct Block {
    hosts: Vec<String>,
}

impl Block {
    fn blocks(&self, host: &str) -> bool {
        self.hosts
            .iter()
            .any(|h| host == h || host.ends_with(&format!(".{h}")))
    }
}

#[async_trait]
impl HttpHandler for Block {
    async fn request(&self, _conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if !self.blocks(&flow.request.target.host) {
            return Verdict::Continue;
        }
        let page = format!("{} is blocked by this proxy.\n", flow.request.target.host);
        Verdict::Respond(Response::new(403).with_body("text/plain; charset=utf-8", page))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let hosts: Vec<String> = std::env::args().skip(1).collect();
    if hosts.is_empty() {
        eprintln!("usage: block HOST...");
        std::process::exit(2);
    }
    let proxy = Mitm::builder()
        .port(8080)
        .http_handler(Arc::new(mitm::HttpLog::default()))
        .http_handler(Arc::new(Block { hosts }))
        .bind()
        .await?;
    println!("proxy on http://{}", proxy.local_addr());
    proxy
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
