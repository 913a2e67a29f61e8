//! mitmproxy's traffic-changing options in every mode of the `mitm` command: the same
//! rules (`--modify-headers` on requests and on responses, `--modify-body`,
//! `--map-remote`, `--block-list`) given to a regular proxy, a SOCKS5 one, a reverse
//! proxy in front of an HTTP and an HTTPS origin, one sending everything through an
//! upstream proxy (tinyproxy), and a transparent one on a gateway (the network
//! namespaces of `tests/it/transparent.rs`); curl as the client, over plain HTTP and
//! intercepted HTTPS with HTTP/1.1 and with HTTP/2. Each mode asks the same three
//! requests ([`check`]) and checks what the client and the origin saw.

use crate::common;
use crate::upstream::Tinyproxy;

use std::sync::Mutex;

use common::*;

/// The rules every mode is given: a request field added, a response field added, a
/// response body changed, a path rewritten, a path answered by the proxy itself.
const RULES: [&str; 10] = [
    "--modify-headers",
    "/~q/x-added/yes",
    "--modify-headers",
    "/~s/x-resp/yes",
    "--modify-body",
    "/~s/from origin/from the rule",
    "--map-remote",
    "|from-here|to-there",
    "--block-list",
    "|~u blocked|418",
];

/// `mitm` with [`RULES`] and `args`.
async fn start(args: &[&str]) -> ChildProxy {
    let all: Vec<String> = RULES.iter().chain(args).map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        ChildProxy::start_with(&all)
    })
    .await
    .unwrap()
}

/// How one client reaches the origin through the proxy: how curl is run, its
/// arguments, the URL up to the path, and the HTTP version curl must end up speaking
/// (`1.1` or `2`).
struct Client {
    what: &'static str,
    /// The program and the arguments before curl's own: `curl`, or `ip netns exec NS
    /// curl`.
    command: Vec<String>,
    args: Vec<String>,
    base: String,
    version: &'static str,
}

fn client(what: &'static str, args: &[&str], base: String, version: &'static str) -> Client {
    Client {
        what,
        command: vec!["curl".into()],
        args: args.iter().map(|a| a.to_string()).collect(),
        base,
        version,
    }
}

/// What curl got.
#[derive(Debug)]
struct Answer {
    status: u16,
    version: String,
    /// The response's `x-resp` field, if any.
    x_resp: Option<String>,
    body: String,
}

/// One request with curl.
async fn ask(client: &Client, path: &str) -> Answer {
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let out = tokio::process::Command::new(&client.command[0])
        .args(&client.command[1..])
        .args(["-sS", "--max-time", "20", "--suppress-connect-headers"])
        .arg("--dump-header")
        .arg(&head)
        .arg("--output")
        .arg(&body)
        .args(["--write-out", "%{http_code} %{http_version}"])
        .args(&client.args)
        .arg(format!("{}{path}", client.base))
        .output()
        .await
        .expect("cannot run curl");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {path}: curl failed: {}",
        client.what,
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, version) = said.split_once(' ').expect("curl's --write-out");
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    let x_resp = head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case("x-resp")
            .then(|| v.trim().to_string())
    });
    Answer {
        status: status.parse().expect("a status"),
        version: version.to_string(),
        x_resp,
        body: std::fs::read_to_string(&body).unwrap_or_default(),
    }
}

/// A request target in origin-form, whatever form it came in.
fn path_of(target: &str) -> &str {
    match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    }
}

/// The one check every mode passes, for each of its clients: through the proxy,
/// - `/plain` reaches `origin` with the request field added, and comes back with the
///   response field added and the body changed, in the HTTP version the client asked
///   for;
/// - `/from-here` reaches the origin as `/to-there`;
/// - `/blocked` is answered `418` by the proxy, and the origin never sees it.
///
/// `origin` is what the origin received ([`Origin::seen`]).
async fn check(clients: &[Client], origin: &Mutex<Vec<Seen>>) {
    let requests = || origin.lock().unwrap().clone();
    for c in clients {
        let what = c.what;
        let before = requests().len();
        let a = ask(c, "/plain").await;
        assert_eq!(
            (a.status, a.body.as_str()),
            (200, "hello from the rule: GET /plain"),
            "{what}: {a:?}"
        );
        assert_eq!(a.version, c.version, "{what}: {a:?}");
        assert_eq!(a.x_resp.as_deref(), Some("yes"), "{what}: {a:?}");
        let seen = requests();
        assert_eq!(seen.len(), before + 1, "{what}: {seen:?}");
        let plain = &seen[before];
        assert_eq!(path_of(&plain.target), "/plain", "{what}");
        assert_eq!(plain.header("x-added"), Some("yes"), "{what}: {plain:?}");

        let a = ask(c, "/from-here").await;
        assert_eq!(
            (a.status, a.body.as_str()),
            (200, "hello from the rule: GET /to-there"),
            "{what}: {a:?}"
        );
        let seen = requests();
        assert_eq!(seen.len(), before + 2, "{what}: {seen:?}");
        assert_eq!(path_of(&seen[before + 1].target), "/to-there", "{what}");

        let a = ask(c, "/blocked").await;
        assert_eq!(a.status, 418, "{what}: {a:?}");
        let seen = requests();
        assert_eq!(seen.len(), before + 2, "{what}: the origin saw {seen:?}");
    }
}

/// Whether curl is there (or the test should skip).
fn have_curl() -> bool {
    require_tool(have("curl"), "curl", "apt-get install curl")
}

/// The clients of a proxy reached with curl's `how` (`--proxy URL` or
/// `--socks5-hostname ADDR`): plain HTTP to `plain`, intercepted HTTPS to `tls` with
/// HTTP/1.1 and with HTTP/2, trusting `proxy`'s CA.
fn proxied_clients(
    how: [&str; 2],
    proxy: &ChildProxy,
    plain: &Origin,
    tls: &Origin,
) -> Vec<Client> {
    let ca = proxy.ca_pem.to_str().unwrap();
    let https = format!("https://localhost:{}", tls.port());
    vec![
        client(
            "plain HTTP",
            &how,
            format!("http://127.0.0.1:{}", plain.port()),
            "1.1",
        ),
        client(
            "HTTPS, HTTP/1.1",
            &[how[0], how[1], "--cacert", ca, "--http1.1"],
            https.clone(),
            "1.1",
        ),
        client(
            "HTTPS, HTTP/2",
            &[how[0], how[1], "--cacert", ca, "--http2"],
            https,
            "2",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_options_apply_in_regular_mode() {
    if !have_curl() {
        return;
    }
    let (plain, tls) = (start_origin().await, start_tls_origin().await);
    let proxy = start(&[]).await;
    let url = format!("http://{}", proxy.addr);
    let clients = proxied_clients(["--proxy", &url], &proxy, &plain, &tls);
    check(&clients[..1], &plain.seen).await;
    check(&clients[1..], &tls.seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_options_apply_in_socks5_mode() {
    if !have_curl() {
        return;
    }
    let (plain, tls) = (start_origin().await, start_tls_origin().await);
    let proxy = start(&["--mode", "socks5"]).await;
    let addr = proxy.addr.to_string();
    let clients = proxied_clients(["--socks5-hostname", &addr], &proxy, &plain, &tls);
    check(&clients[..1], &plain.seen).await;
    check(&clients[1..], &tls.seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_options_apply_in_reverse_mode_to_an_http_origin() {
    if !have_curl() {
        return;
    }
    let origin = start_origin().await;
    let proxy = start(&[
        "--mode",
        &format!("reverse:http://127.0.0.1:{}", origin.port()),
    ])
    .await;
    let clients = [client(
        "plain HTTP",
        &[],
        format!("http://{}", proxy.addr),
        "1.1",
    )];
    check(&clients, &origin.seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_options_apply_in_reverse_mode_to_an_https_origin() {
    if !have_curl() {
        return;
    }
    let origin = start_tls_origin().await;
    let proxy = start(&[
        "--mode",
        &format!("reverse:https://localhost:{}", origin.port()),
    ])
    .await;
    let ca = proxy.ca_pem.to_str().unwrap();
    // The client speaks TLS to the proxy as to the origin itself.
    let base = format!("https://localhost:{}", proxy.addr.port());
    let clients = [
        client(
            "HTTPS, HTTP/1.1",
            &["--cacert", ca, "--http1.1"],
            base.clone(),
            "1.1",
        ),
        client("HTTPS, HTTP/2", &["--cacert", ca, "--http2"], base, "2"),
    ];
    check(&clients, &origin.seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_options_apply_in_upstream_mode() {
    if !have_curl() {
        return;
    }
    let Some(tiny) = Tinyproxy::start(None).await else {
        return;
    };
    let (plain, tls) = (start_origin().await, start_tls_origin().await);
    let proxy = start(&[
        "--mode",
        &format!("upstream:http://127.0.0.1:{}", tiny.port),
    ])
    .await;
    let url = format!("http://{}", proxy.addr);
    let clients = proxied_clients(["--proxy", &url], &proxy, &plain, &tls);
    check(&clients[..1], &plain.seen).await;
    check(&clients[1..], &tls.seen).await;
    // All of it went through the upstream proxy: the plain requests as they were
    // changed, the HTTPS ones in a tunnel.
    let log = tiny.log();
    for line in [
        format!("GET http://127.0.0.1:{}/to-there", plain.port()),
        format!("CONNECT localhost:{}", tls.port()),
    ] {
        assert!(
            log.contains(&line),
            "tinyproxy did not log {line:?}:\n{log}"
        );
    }
    assert!(!log.contains("/blocked"), "{log}");
}

/// Transparent mode, as a gateway runs it (the namespaces of `tests/it/transparent.rs`):
/// `mitm --mode transparent` in the router's namespace, the client's connections to
/// the origin redirected to it by the firewall. Linux only, as root.
#[cfg(target_os = "linux")]
#[test]
fn the_options_apply_in_transparent_mode() {
    use crate::transparent::{enter, kernel_refused, InNamespace, Net, ORIGIN_NAME, ORIGIN_V4};

    let Some(net) = Net::build() else { return };
    let (_origins, (plain, tls)) = InNamespace::start(&net.origin, || async {
        let any = |port| std::net::SocketAddr::from(([0, 0, 0, 0], port));
        let plain = start_origin_at(any(80), None).await;
        let tls = start_origin_at(any(443), Some(ORIGIN_NAME)).await;
        let seen = (plain.seen.clone(), tls.seen.clone());
        ((plain, tls), seen)
    });
    // A process started from a thread inside the router's namespace runs there.
    let router = net.router.clone();
    let proxy = std::thread::spawn(move || {
        enter(&router);
        let mode = ["--mode", "transparent", "--host", "0.0.0.0"];
        let args: Vec<&str> = RULES.iter().copied().chain(mode).collect();
        ChildProxy::start_with(&args)
    })
    .join()
    .expect("mitm did not start in the router's namespace");
    if let Err(refused) = net.redirect_to(proxy.addr.port()) {
        if kernel_refused(&refused) || refused.contains("Table does not exist") {
            eprintln!("skipped: this kernel refuses NAT redirect rules in a namespace ({refused})");
            return;
        }
        panic!("the redirect rules failed: {refused}");
    }
    let in_client = |what, args: &[&str], base: String, version| {
        let mut c = client(what, args, base, version);
        c.command = ["ip", "netns", "exec", &net.client, "curl"]
            .map(String::from)
            .to_vec();
        c
    };
    let ca = proxy.ca_pem.to_str().unwrap();
    let resolve = format!("{ORIGIN_NAME}:443:{ORIGIN_V4}");
    let https = format!("https://{ORIGIN_NAME}");
    let tls_clients = [
        in_client(
            "HTTPS, HTTP/1.1",
            &["--resolve", &resolve, "--cacert", ca, "--http1.1"],
            https.clone(),
            "1.1",
        ),
        in_client(
            "HTTPS, HTTP/2",
            &["--resolve", &resolve, "--cacert", ca, "--http2"],
            https,
            "2",
        ),
    ];
    let plain_clients = [in_client(
        "plain HTTP",
        &[],
        format!("http://{ORIGIN_V4}"),
        "1.1",
    )];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        check(&plain_clients, &plain).await;
        check(&tls_clients, &tls).await;
    });
}
