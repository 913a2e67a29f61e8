//! The `mitm` command's modes, run as a user runs them: several `--mode` listeners in
//! one process, each answering as its mode says, with curl as the client.

use crate::common;

use std::net::SocketAddr;

use common::*;

/// Runs curl with `args`: its exit status success, and its output.
async fn curl(args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .await
        .expect("cannot run curl");
    let text = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).to_string()
    } else {
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    (out.status.success(), text)
}

/// The address of the listener whose mode starts with `mode`.
fn listener(proxy: &ChildProxy, mode: &str) -> SocketAddr {
    proxy
        .listeners
        .iter()
        .find(|(m, _)| m.starts_with(mode))
        .unwrap_or_else(|| panic!("no {mode} listener in {:?}", proxy.listeners))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regular_and_reverse_listeners_serve_at_once_from_one_process() {
    if !require_tool(have("curl"), "curl", "apt-get install curl") {
        return;
    }
    let origin = start_origin().await;
    let reverse_mode = format!("reverse:http://127.0.0.1:{}@0", origin.port());
    let proxy = tokio::task::spawn_blocking(move || {
        ChildProxy::start_with(&["--mode", "regular", "--mode", &reverse_mode])
    })
    .await
    .unwrap();
    let regular = listener(&proxy, "regular");
    let reverse = listener(&proxy, "reverse:");
    assert_ne!(regular, reverse);
    let url = format!("http://127.0.0.1:{}/through-regular", origin.port());
    let (ok, out) = curl(&["--proxy", &format!("http://{regular}"), &url]).await;
    assert!(ok, "{out}");
    assert_eq!(out, "hello from origin: GET /through-regular");
    // The reverse listener poses as the origin: no proxy set, its own address.
    let (ok, out) = curl(&[&format!("http://{reverse}/through-reverse")]).await;
    assert!(ok, "{out}");
    assert_eq!(out, "hello from origin: GET /through-reverse");
    let seen = origin.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Its Host became the target's authority.
    let host = format!("127.0.0.1:{}", origin.port());
    assert_eq!(seen[1].header("host"), Some(host.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_host_header_sends_the_clients_host_to_a_reverse_target() {
    if !require_tool(have("curl"), "curl", "apt-get install curl") {
        return;
    }
    let origin = start_origin().await;
    let mode = format!("reverse:http://127.0.0.1:{}", origin.port());
    let proxy = tokio::task::spawn_blocking(move || {
        ChildProxy::start_with(&["--mode", &mode, "--keep-host-header"])
    })
    .await
    .unwrap();
    let (ok, out) = curl(&[
        "-H",
        "Host: front.localhost",
        &format!("http://{}/kept", proxy.addr),
    ])
    .await;
    assert!(ok, "{out}");
    assert_eq!(origin.requests()[0].header("host"), Some("front.localhost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transparent_listener_refuses_connections_that_were_not_redirected() {
    let proxy = tokio::task::spawn_blocking(|| ChildProxy::start_with(&["--mode", "transparent"]))
        .await
        .unwrap();
    assert_eq!(proxy.listeners[0].0, "transparent");
    // Straight to its port, not through a firewall redirect: nothing to serve.
    let raw = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: example.localhost\r\n\r\n",
    )
    .await;
    assert!(raw.is_empty(), "{:?}", String::from_utf8_lossy(&raw));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_fail_open_on_the_command_line_lets_a_refusing_client_through_next_time() {
    if !require_tool(have("curl"), "curl", "apt-get install curl") {
        return;
    }
    let origin = start_tls_origin().await;
    let proxy = tokio::task::spawn_blocking(|| ChildProxy::start_with(&["--tls-fail-open"]))
        .await
        .unwrap();
    let url = format!("https://localhost:{}/pinned", origin.port());
    let proxy_url = format!("http://{}", proxy.addr);
    // A client that trusts the origin's CA alone, as a pinned app does: our leaf is
    // refused the first time...
    let ca = origin_ca_file();
    let ca = ca.to_str().unwrap();
    let (ok, out) = curl(&["--proxy", &proxy_url, "--cacert", ca, &url]).await;
    assert!(!ok, "{out}");
    // ...and the next connection to that host passes through to the origin's own
    // certificate.
    let (ok, out) = curl(&["--proxy", &proxy_url, "--cacert", ca, &url]).await;
    assert!(ok, "{out}");
    assert_eq!(out, "hello from origin: GET /pinned");
    let said = proxy.stderr.lock().unwrap().join("\n");
    assert!(said.contains("passing"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regular_and_socks5_listeners_serve_at_once_from_one_process() {
    if !require_tool(have("curl"), "curl", "apt-get install curl") {
        return;
    }
    let origin = start_tls_origin().await;
    let proxy = tokio::task::spawn_blocking(|| {
        ChildProxy::start_with(&["--mode", "regular", "--mode", "socks5@0"])
    })
    .await
    .unwrap();
    let regular = listener(&proxy, "regular");
    let socks = listener(&proxy, "socks5");
    let ca = proxy.ca_pem.to_str().unwrap().to_string();
    let url = format!("https://localhost:{}/", origin.port());
    // Both clients at once, each intercepted with the one CA.
    let (http_proxy, socks) = (format!("http://{regular}"), socks.to_string());
    let (via_http, via_socks) = (format!("{url}regular"), format!("{url}socks"));
    let http_args = ["--proxy", &http_proxy, "--cacert", &ca, &via_http];
    let socks_args = ["--socks5-hostname", &socks, "--cacert", &ca, &via_socks];
    let (a, b) = tokio::join!(curl(&http_args), curl(&socks_args));
    assert_eq!(a, (true, "hello from origin: GET /regular".to_string()));
    assert_eq!(b, (true, "hello from origin: GET /socks".to_string()));
    assert_eq!(origin.requests().len(), 2);
}
