//! Transparent mode end to end, as a gateway runs it: a client, a router and an origin,
//! each in a network namespace of the test's own, linked by veth pairs. The router's
//! firewall redirects the client's TCP connections (IPv4 and IPv6) to the proxy, which
//! runs in the router's namespace; `curl` in the client's namespace is the client, and
//! knows nothing of the proxy but its CA.
//!
//! ```text
//!  client ns            router ns                           origin ns
//!  10.200.1.2  ──veth── 10.200.1.1 │ mitm (Transparent)  │ 10.200.2.1 ──veth── 10.200.2.2
//!  fd00:1::2            fd00:1::1  │ PREROUTING REDIRECT │ fd00:2::1           fd00:2::2
//!                                                                             :80, :443
//! ```
//!
//! Linux only, as root, with `ip` (iproute2), `iptables`, `ip6tables` and `curl`. A
//! missing tool skips (or fails, under `MITM_REQUIRE_TOOLS`); a kernel that refuses
//! network namespaces skips with a message saying so.
#![cfg(target_os = "linux")]

use crate::common;

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use common::{origin_ca_file, require_tool, Seen, PATIENCE};
use mitm::{async_trait, CertificateAuthority, Connection, HttpFlow, Middleware, Mitm, Verdict};
use mitm::{DataHooks, HttpHandler};

const CLIENT_V4: &str = "10.200.1.2";
const ROUTER_CLIENT_SIDE_V4: &str = "10.200.1.1";
const ROUTER_ORIGIN_SIDE_V4: &str = "10.200.2.1";
pub(crate) const ORIGIN_V4: &str = "10.200.2.2";
const CLIENT_V6: &str = "fd00:1::2";
const ROUTER_CLIENT_SIDE_V6: &str = "fd00:1::1";
const ROUTER_ORIGIN_SIDE_V6: &str = "fd00:2::1";
const ORIGIN_V6: &str = "fd00:2::2";
/// The name the HTTPS origin's certificate is for; the client reaches it with
/// `curl --resolve`, so nothing resolves it but the client.
pub(crate) const ORIGIN_NAME: &str = "origin.test";

/// The origin's port for a protocol that is neither HTTP nor TLS: it echoes.
const ECHO_PORT: u16 = 7;
/// Another echo port of the origin, which the proxy's router refuses tunnels to.
const REFUSED_PORT: u16 = 9;

/// An echo server on `addr`: every connection gets its bytes back until it closes.
async fn start_echo(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut from, mut to) = stream.split();
                let _ = tokio::io::copy(&mut from, &mut to).await;
            });
        }
    })
}

/// Runs `cmd`, returning its output whatever its exit status.
pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd` and fails the test unless it succeeds.
#[track_caller]
pub(crate) fn must(cmd: &mut Command) {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ip ARGS…`.
pub(crate) fn ip(args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    cmd
}

/// `ip netns exec NS PROGRAM ARGS…`.
pub(crate) fn in_ns(ns: &str, program: &str, args: &[&str]) -> Command {
    let mut cmd = ip(&["netns", "exec", ns, program]);
    cmd.args(args);
    cmd
}

/// Whether `program ARG` runs and succeeds (`ip` has no `--version`).
pub(crate) fn answers(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A tag unique to this process and this call (so parallel runs never share a
/// name), and the namespace `mitm-{prefix}{tag}-client`, made. `None` (after saying
/// why) when the kernel or the user refuses network namespaces to `who` (what needs
/// them, for the message).
pub(crate) fn client_namespace(prefix: char, who: &str) -> Option<(String, String)> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let tag = format!(
        "{}{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let client = format!("mitm-{prefix}{tag}-client");
    let created = run(&mut ip(&["netns", "add", &client]));
    if !created.status.success() {
        let why = String::from_utf8_lossy(&created.stderr);
        if kernel_refused(&why) {
            eprintln!(
                "skipped: this kernel (or this user) refuses network namespaces \
                 (`ip netns add` said: {}); {who} needs root on Linux",
                why.trim()
            );
            return None;
        }
        panic!("ip netns add {client} failed: {why}");
    }
    Some((tag, client))
}

/// Whether a failed command's message says the kernel (or the lack of privilege) refused
/// it, rather than the command being wrong.
pub(crate) fn kernel_refused(stderr: &str) -> bool {
    [
        "Operation not permitted",
        "Function not implemented",
        "not supported",
        "Permission denied",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

/// The three namespaces of one test; dropping it deletes them, and with them their
/// veth pairs and firewall rules (also when the test panics).
pub(crate) struct Net {
    pub(crate) client: String,
    pub(crate) router: String,
    pub(crate) origin: String,
    /// The router's interface towards the client: the one the redirect rules match.
    router_client_side: String,
}

impl Drop for Net {
    fn drop(&mut self) {
        // Never a panic here: this runs while a failed test unwinds too.
        for ns in [&self.client, &self.router, &self.origin] {
            let _ = ip(&["netns", "del", ns]).output();
        }
    }
}

impl Net {
    /// Builds the namespaces and links between them. `None` (after saying why) when the
    /// tools are missing or the kernel refuses network namespaces.
    pub(crate) fn build() -> Option<Net> {
        let tools = [
            (
                answers("ip", "-V"),
                "ip (iproute2)",
                "apt-get install iproute2",
            ),
            (
                answers("iptables", "--version") && answers("ip6tables", "--version"),
                "iptables and ip6tables",
                "apt-get install iptables",
            ),
            (answers("curl", "--version"), "curl", "apt-get install curl"),
        ];
        for (present, what, install) in tools {
            if !require_tool(present, what, install) {
                return None;
            }
        }
        let (tag, client) = client_namespace('t', "transparent mode")?;
        // From here on the guard deletes whatever was made.
        let net = Net {
            router: format!("mitm-t{tag}-router"),
            origin: format!("mitm-t{tag}-origin"),
            client,
            router_client_side: format!("t{tag}rc"),
        };
        must(&mut ip(&["netns", "add", &net.router]));
        must(&mut ip(&["netns", "add", &net.origin]));
        let router_origin_side = format!("t{tag}ro");
        net.link(
            (&net.client, &format!("t{tag}c"), CLIENT_V4, CLIENT_V6),
            (
                &net.router,
                &net.router_client_side,
                ROUTER_CLIENT_SIDE_V4,
                ROUTER_CLIENT_SIDE_V6,
            ),
        );
        net.link(
            (&net.origin, &format!("t{tag}o"), ORIGIN_V4, ORIGIN_V6),
            (
                &net.router,
                &router_origin_side,
                ROUTER_ORIGIN_SIDE_V4,
                ROUTER_ORIGIN_SIDE_V6,
            ),
        );
        for (ns, v4, v6) in [
            (&net.client, ROUTER_CLIENT_SIDE_V4, ROUTER_CLIENT_SIDE_V6),
            (&net.origin, ROUTER_ORIGIN_SIDE_V4, ROUTER_ORIGIN_SIDE_V6),
        ] {
            must(&mut ip(&["-n", ns, "route", "add", "default", "via", v4]));
            must(&mut ip(&[
                "-n", ns, "-6", "route", "add", "default", "via", v6,
            ]));
        }
        // A gateway forwards what it does not redirect.
        must(&mut in_ns(
            &net.router,
            "sysctl",
            &[
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
        ));
        Some(net)
    }

    /// A veth pair from `a` to `b`, each end up with its IPv4 (/24) and IPv6 (/64)
    /// address. IPv6 addresses skip duplicate address detection, so they are usable at
    /// once rather than after a second or two.
    fn link(&self, a: (&str, &str, &str, &str), b: (&str, &str, &str, &str)) {
        let ((a_ns, a_if, _, _), (b_ns, b_if, _, _)) = (a, b);
        must(&mut ip(&[
            "link", "add", a_if, "netns", a_ns, "type", "veth", "peer", "name", b_if, "netns", b_ns,
        ]));
        for (ns, dev, v4, v6) in [a, b] {
            must(&mut ip(&["-n", ns, "link", "set", "lo", "up"]));
            let v4 = format!("{v4}/24");
            must(&mut ip(&["-n", ns, "addr", "add", &v4, "dev", dev]));
            let v6 = format!("{v6}/64");
            must(&mut ip(&[
                "-n", ns, "addr", "add", &v6, "dev", dev, "nodad",
            ]));
            must(&mut ip(&["-n", ns, "link", "set", dev, "up"]));
        }
    }

    /// Redirects every TCP connection arriving from the client's side, IPv4 and IPv6,
    /// to `port` in the router: the gateway rules of `docs/transparent.md`.
    pub(crate) fn redirect_to(&self, port: u16) -> Result<(), String> {
        let port = port.to_string();
        for table in ["iptables", "ip6tables"] {
            let args = [
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-i",
                &self.router_client_side,
                "-p",
                "tcp",
                "-j",
                "REDIRECT",
                "--to-ports",
                &port,
            ];
            let out = run(&mut in_ns(&self.router, table, &args));
            if !out.status.success() {
                return Err(format!(
                    "{table} {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(())
    }

    /// `curl ARGS…` run in the client's namespace.
    fn curl(&self, args: &[&str]) -> Output {
        let max_time = PATIENCE.as_secs().to_string();
        let mut all = vec!["-sS", "-i", "--max-time", &max_time];
        all.extend_from_slice(args);
        run(&mut in_ns(&self.client, "curl", &all))
    }
}

/// Moves the calling thread into the network namespace `ns`: sockets it makes from then
/// on (and those of threads it starts) belong to that namespace.
pub(crate) fn enter(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    rustix::thread::move_into_link_name_space(
        file.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|e| panic!("setns into {ns} failed: {e}"));
}

/// A thread running a tokio runtime inside a namespace; dropping it stops the work and
/// waits for the thread.
pub(crate) struct InNamespace {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for InNamespace {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A panic on that thread already failed the setup (its channel closed);
            // a second one here would only hide the first.
            let _ = thread.join();
        }
    }
}

impl InNamespace {
    /// Runs `start` inside `ns` on a thread of its own (with a current-thread runtime,
    /// so every socket is made on that thread), hands back what it returns once it is
    /// ready, and keeps what it started running until dropped.
    pub(crate) fn start<T, R, F>(
        ns: &str,
        start: impl FnOnce() -> F + Send + 'static,
    ) -> (InNamespace, R)
    where
        F: std::future::Future<Output = (T, R)>,
        R: Send + 'static,
    {
        let (ready_tx, ready) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let ns = ns.to_string();
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                // `running` keeps the servers alive until told to stop.
                let (running, ready) = start().await;
                let _ = ready_tx.send(ready);
                let _ = stopped.await;
                drop(running);
            });
        });
        let ready = ready
            .recv_timeout(PATIENCE)
            .expect("the servers in the namespace did not start");
        let guard = InNamespace {
            stop: Some(stop),
            thread: Some(thread),
        };
        (guard, ready)
    }
}

/// What the proxy's hooks saw of each exchange: the connection's original destination
/// and the request's target and `Host`. It also marks each response, so the client can
/// tell the proxy handled it.
#[derive(Default)]
struct Witness {
    seen: Mutex<Vec<String>>,
    /// Each upstream connection: the protocol and the server reached.
    connected: Mutex<Vec<String>>,
    /// Each tunnel its router refused.
    refused: Mutex<Vec<String>>,
}

/// Refuses tunnels to [`REFUSED_PORT`].
#[async_trait]
impl mitm::Router for Witness {
    async fn tunnel(&self, _conn: &Connection, target: &mitm::Target) -> mitm::TunnelVerdict {
        if target.port != REFUSED_PORT {
            return mitm::TunnelVerdict::Open;
        }
        self.refused.lock().unwrap().push(target.to_string());
        mitm::TunnelVerdict::Refuse("closed to tests".into())
    }
}

#[async_trait]
impl Middleware for Witness {
    fn data_hooks(&self) -> DataHooks {
        DataHooks::Off
    }

    async fn server_connected(&self, conn: &Connection) {
        let line = format!("{} {}", conn.protocol.unwrap_or("-"), conn.server);
        self.connected.lock().unwrap().push(line);
    }
}

#[async_trait]
impl HttpHandler for Witness {
    async fn request(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        let line = format!(
            "{:?} {} {} host={}",
            conn.original_dst,
            flow.request.target,
            flow.request.path,
            flow.request.headers.get("host").unwrap_or("-")
        );
        self.seen.lock().unwrap().push(line);
        Verdict::Continue
    }

    async fn response(&self, conn: &Connection, flow: &mut HttpFlow) -> Verdict {
        if let Some(response) = flow.response.as_mut() {
            let dst = conn.original_dst.map(|d| d.to_string()).unwrap_or_default();
            response.headers.insert("x-mitm-transparent", dst);
        }
        Verdict::Continue
    }
}

/// The test's setup: its namespaces, the origins, the proxy and its CA file for curl.
struct Setup {
    net: Net,
    witness: Arc<Witness>,
    origin_seen: Vec<Arc<Mutex<Vec<Seen>>>>,
    ca_file: std::path::PathBuf,
    proxy_port: u16,
    _servers: Vec<InNamespace>,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Option<Setup> {
        let net = Net::build()?;
        // The origins: plain HTTP on :80 and HTTPS (a certificate for ORIGIN_NAME from
        // the test origins' CA, which the proxy trusts and curl does not) on :443, each
        // on every address of the origin's namespace, IPv4 and IPv6.
        let (origins, origin_seen) = InNamespace::start(&net.origin, || async {
            let any = |port| SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
            let plain = common::start_origin_at(any(80), None).await;
            let tls = common::start_origin_at(any(443), Some(ORIGIN_NAME)).await;
            let echo = start_echo(any(ECHO_PORT)).await;
            let refused = start_echo(any(REFUSED_PORT)).await;
            let seen = vec![plain.seen.clone(), tls.seen.clone()];
            ((plain, tls, echo, refused), seen)
        });
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(CertificateAuthority::generate().unwrap());
        let ca_file = dir.path().join("mitm-ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let witness = Arc::new(Witness::default());
        let hooks = witness.clone();
        let upstream_ca = origin_ca_file();
        // The proxy, on every address of the router (IPv4 connections arrive on the
        // dual-stack socket as IPv4-mapped ones).
        let (proxy, proxy_port) = InNamespace::start(&net.router, move || async move {
            let proxy = Mitm::builder()
                .host("::")
                .port(0)
                .certificate_authority(ca)
                .middleware(hooks.clone())
                .http_handler(hooks.clone())
                .router(hooks)
                .upstream_ca_file(upstream_ca)
                .protocol(Arc::new(mitm::Transparent::new()))
                .bind()
                .await
                .expect("the proxy cannot listen in the router's namespace");
            let port = proxy.local_addr().port();
            (proxy.spawn(), port)
        });
        if let Err(refused) = net.redirect_to(proxy_port) {
            if kernel_refused(&refused) || refused.contains("Table does not exist") {
                eprintln!(
                    "skipped: this kernel refuses NAT redirect rules in a namespace ({refused})"
                );
                return None;
            }
            panic!("the redirect rules failed: {refused}");
        }
        Some(Setup {
            net,
            witness,
            origin_seen,
            ca_file,
            proxy_port,
            _servers: vec![proxy, origins],
            _dir: dir,
        })
    }

    fn ca(&self) -> &str {
        self.ca_file.to_str().unwrap()
    }

    /// The requests the plain (0) or TLS (1) origin received for `path`.
    fn origin_saw(&self, which: usize, path: &str) -> Vec<Seen> {
        self.origin_seen[which]
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.target == path)
            .cloned()
            .collect()
    }

    /// What the proxy's hooks saw for requests to `path`.
    fn proxy_saw(&self, path: &str) -> Vec<String> {
        let suffix = format!(" {path} ");
        self.witness
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(&suffix))
            .cloned()
            .collect()
    }
}

/// curl's output (`-i`: the head, then the body), after checking it succeeded.
#[track_caller]
fn succeeded(out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl failed ({}): {}\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The value of the header `name` in curl's `-i` output.
fn header<'a>(curl_output: &'a str, name: &str) -> Option<&'a str> {
    curl_output.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn redirected_http_goes_to_its_original_destination_with_its_host_as_sent() {
    let Some(setup) = Setup::start() else { return };
    // The client names the origin by a name only it knows: the proxy cannot resolve
    // it, so reaching the origin proves it went by the original destination.
    let resolve = format!("named.example:80:{ORIGIN_V4}");
    let out = succeeded(
        setup
            .net
            .curl(&["--resolve", &resolve, "http://named.example/plain-v4"]),
    );
    assert!(
        out.ends_with("hello from origin: GET /plain-v4"),
        "unexpected answer: {out}"
    );
    let dst = format!("{ORIGIN_V4}:80");
    assert_eq!(header(&out, "x-mitm-transparent"), Some(dst.as_str()));
    let seen = setup.origin_saw(0, "/plain-v4");
    assert_eq!(seen.len(), 1, "the origin saw {seen:?}");
    assert_eq!(seen[0].header("host"), Some("named.example"));
    assert_eq!(
        setup.proxy_saw("/plain-v4"),
        vec![format!("Some({dst}) {dst} /plain-v4 host=named.example")]
    );

    // IPv6, by address.
    let url = format!("http://[{ORIGIN_V6}]/plain-v6");
    let out = succeeded(setup.net.curl(&["-g", &url]));
    assert!(out.ends_with("hello from origin: GET /plain-v6"), "{out}");
    let dst = format!("[{ORIGIN_V6}]:80");
    assert_eq!(header(&out, "x-mitm-transparent"), Some(dst.as_str()));
    let seen = setup.origin_saw(0, "/plain-v6");
    assert_eq!(seen.len(), 1, "the origin saw {seen:?}");
    assert_eq!(seen[0].header("host"), Some(&*format!("[{ORIGIN_V6}]")));
}

#[test]
fn redirected_https_is_intercepted_with_a_leaf_named_by_sni() {
    let Some(setup) = Setup::start() else { return };
    for (origin_ip, path) in [
        (ORIGIN_V4.to_string(), "/tls-v4"),
        (format!("[{ORIGIN_V6}]"), "/tls-v6"),
    ] {
        // curl trusts only the proxy's CA: the origin's own certificate (from the test
        // origins' CA) would fail, so success means the proxy answered with its leaf
        // for the SNI name, and reached the origin at the original address.
        let resolve = format!("{ORIGIN_NAME}:443:{origin_ip}");
        let url = format!("https://{ORIGIN_NAME}{path}");
        let out = succeeded(
            setup
                .net
                .curl(&["--cacert", setup.ca(), "--resolve", &resolve, &url]),
        );
        assert!(
            out.ends_with(&format!("hello from origin: GET {path}")),
            "unexpected answer: {out}"
        );
        let dst = format!("{origin_ip}:443");
        assert_eq!(header(&out, "x-mitm-transparent"), Some(dst.as_str()));
        let seen = setup.origin_saw(1, path);
        assert_eq!(seen.len(), 1, "the origin saw {seen:?}");
        assert_eq!(seen[0].header("host"), Some(ORIGIN_NAME));
        let saw = setup.proxy_saw(path);
        assert_eq!(saw.len(), 1, "the hooks saw {saw:?}");
        assert!(
            saw[0].starts_with(&format!("Some({dst}) {ORIGIN_NAME}:443 {path}")),
            "the hooks saw {saw:?}"
        );
    }
}

#[test]
fn redirected_connections_in_other_protocols_are_relayed_as_they_are() {
    let Some(setup) = Setup::start() else { return };
    let client_ns = setup.net.client.clone();
    // A client in the client's namespace: a thread that entered it.
    let echoed = std::thread::spawn(move || {
        use std::io::{Read, Write};
        enter(&client_ns);
        let to = SocketAddr::new(ORIGIN_V6.parse().unwrap(), ECHO_PORT);
        let mut stream = std::net::TcpStream::connect_timeout(&to, PATIENCE).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let greeting = b"HELO client.test\r\n";
        stream.write_all(greeting).unwrap();
        let mut back = vec![0; greeting.len()];
        stream.read_exact(&mut back).unwrap();
        back
    })
    .join()
    .expect("the client failed");
    assert_eq!(echoed, b"HELO client.test\r\n");
    let connected = setup.witness.connected.lock().unwrap().clone();
    let relayed = format!("transparent [{ORIGIN_V6}]:{ECHO_PORT}");
    assert_eq!(
        connected,
        vec![relayed],
        "the proxy connected {connected:?}"
    );
}

/// A router refuses a redirected connection's destination before anything is
/// connected: the client is closed, its bytes never echoed, and no server connected.
#[test]
fn a_router_refuses_a_redirected_destination_before_connecting() {
    let Some(setup) = Setup::start() else { return };
    let client_ns = setup.net.client.clone();
    let got = std::thread::spawn(move || {
        use std::io::{Read, Write};
        enter(&client_ns);
        let to = SocketAddr::new(ORIGIN_V6.parse().unwrap(), REFUSED_PORT);
        let mut stream = std::net::TcpStream::connect_timeout(&to, PATIENCE).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(b"HELO client.test\r\n").unwrap();
        let mut back = Vec::new();
        match stream.read_to_end(&mut back) {
            Ok(_) => back,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => back,
            Err(e) => panic!("the proxy neither answered nor closed: {e}"),
        }
    })
    .join()
    .expect("the client failed");
    assert!(got.is_empty(), "echoed: {got:?}");
    let refused = setup.witness.refused.lock().unwrap().clone();
    assert_eq!(refused, vec![format!("[{ORIGIN_V6}]:{REFUSED_PORT}")]);
    let connected = setup.witness.connected.lock().unwrap().clone();
    assert!(connected.is_empty(), "the proxy connected {connected:?}");
}

#[test]
fn a_connection_to_the_proxys_own_port_is_refused() {
    let Some(setup) = Setup::start() else { return };
    // Redirected too (the rule takes every TCP connection from the client's side), but
    // to where the proxy listens: serving it would loop, so it is closed unanswered.
    let url = format!("http://{ROUTER_CLIENT_SIDE_V4}:{}/loop", setup.proxy_port);
    let out = setup.net.curl(&[&url]);
    assert!(!out.status.success(), "the proxy answered: {out:?}");
    assert!(out.stdout.is_empty(), "the proxy answered: {out:?}");
    assert!(setup.proxy_saw("/loop").is_empty());
}

/// A client that reaches a transparent listener straight, with no redirect rule (here
/// on loopback), is closed without an answer: there is nowhere to send it.
#[tokio::test]
async fn a_direct_connection_is_closed_unanswered() {
    let witness = Arc::new(Witness::default());
    let proxy = common::start_proxy(|b| {
        b.protocol(Arc::new(mitm::Transparent::new()))
            .middleware(witness.clone())
            .http_handler(witness.clone())
    })
    .await;
    let reply = common::raw_exchange(
        proxy.addr,
        b"GET /direct HTTP/1.1\r\nHost: example.com\r\n\r\n",
    )
    .await;
    assert!(
        reply.is_empty(),
        "the proxy answered: {:?}",
        String::from_utf8_lossy(&reply)
    );
    assert!(witness.seen.lock().unwrap().is_empty());
}
