//! Chooses, per request and per tunnel, how traffic leaves the proxy: some hosts through
//! a SOCKS5 proxy, some through a pool of HTTP proxies taken in turn, the rest direct.
//!
//! Each argument is `HOST=ROUTE[,ROUTE...]`: requests to HOST and its subdomains go by
//! the routes, in turn (`direct`, or a proxy URL: `http://`, `https://`,
//! `socks5://[USER:PASS@]HOST:PORT`).
//!
//! ```text
//! cargo run --example route -- \
//!     onion=socks5://127.0.0.1:9050 \
//!     api.example=http://proxy-a:3128,http://proxy-b:3128 \
//!     example.org=direct
//! curl --proxy http://127.0.0.1:8080 http://api.example/   # via proxy-a, then proxy-b, ...
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mitm::Router;
use mitm::{async_trait, Connection, Mitm, Route, Target};

/// Routes for the hosts under one name, used in turn.
struct Rule {
    suffix: String,
    routes: Vec<Route>,
    next: AtomicUsize,
}

/// The `route` hook: the first rule whose name covers the target's host decides.
struct Rules {
    rules: Vec<Rule>,
}

#[async_trait]
impl Router for Rules {
    async fn route(&self, _conn: &Connection, target: &Target) -> Option<Route> {
        let host = target.host.as_str();
        let rule = self
            .rules
            .iter()
            .find(|r| host == r.suffix || host.ends_with(&format!(".{}", r.suffix)))?;
        let turn = rule.next.fetch_add(1, Ordering::Relaxed) % rule.routes.len();
        Some(rule.routes[turn].clone())
    }
}

/// Parses `HOST=ROUTE[,ROUTE...]`.
fn rule(arg: &str) -> Result<Rule, String> {
    let (suffix, routes) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?}: expected HOST=ROUTE[,ROUTE...]"))?;
    let routes = routes
        .split(',')
        .map(|r| r.parse::<Route>().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule {
        suffix: suffix.to_ascii_lowercase(),
        routes,
        next: AtomicUsize::new(0),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let rules = std::env::args()
        .skip(1)
        .map(|a| rule(&a))
        .collect::<Result<Vec<_>, _>>()?;
    if rules.is_empty() {
        eprintln!("usage: route HOST=ROUTE[,ROUTE...]...");
        std::process::exit(2);
    }
    for r in &rules {
        let routes: Vec<String> = r.routes.iter().map(ToString::to_string).collect();
        println!("{} -> {}", r.suffix, routes.join(", "));
    }
    let proxy = Mitm::builder()
        .port(8080)
        .middleware(Arc::new(mitm::Log))
        .router(Arc::new(Rules { rules }))
        .bind()
        .await?;
    println!("listening on http://{}", proxy.local_addr());
    proxy.run().await?;
    Ok(())
}
