//! mitmproxy's flow files with the real mitmproxy (from the test virtual environment):
//! flows this crate captured, opened by `mitmdump -nr` and by mitmproxy's Python
//! `FlowReader`; flows `mitmdump -w` saved, read back by `read_flows`.

use crate::common;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mitm::capture::flows::{read_flows, FlowWriter};
use mitm::capture::Capture;

/// The mitmproxy releases the tests run: the pinned 11 of the test venv, and 10 in the
/// venv inside it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Release {
    Ten,
    Eleven,
}

/// mitmdump and the venv's python of `release`, or `None` (the test skips) when the
/// venv is missing and `MITM_REQUIRE_TOOLS` is unset.
pub(crate) fn mitmproxy(release: Release) -> Option<(PathBuf, PathBuf)> {
    let tool = match release {
        Release::Ten => venv10_tool,
        Release::Eleven => venv_tool,
    };
    let (dump, python) = (tool("mitmdump"), tool("python"));
    let what = format!("mitmdump ({release:?})");
    if !require_tool(dump.is_some() && python.is_some(), &what, VENV_INSTALL) {
        return None;
    }
    Some((dump?, python?))
}

/// What one request got: its URL, the status, and the body received.
struct Sent {
    url: String,
    method: &'static str,
    request_body: Vec<u8>,
    status: u16,
    body: Vec<u8>,
}

/// A GET, a POST with a body, a 404 and an HTTPS GET through `client`, to `plain` and
/// `tls` (an HTTPS origin for `localhost`).
async fn send_requests(client: &reqwest::Client, plain: u16, tls: u16) -> Vec<Sent> {
    let posted = b"a posted body \x00\x01 with a NUL".to_vec();
    let requests: [(&'static str, String, Vec<u8>); 4] = [
        ("GET", format!("http://127.0.0.1:{plain}/hello?x=1"), vec![]),
        ("POST", format!("http://127.0.0.1:{plain}/echo"), posted),
        (
            "GET",
            format!("http://127.0.0.1:{plain}/status/404"),
            vec![],
        ),
        ("GET", format!("https://localhost:{tls}/secure"), vec![]),
    ];
    let mut sent = Vec::new();
    for (method, url, request_body) in requests {
        let builder = match method {
            "POST" => client.post(&url).body(request_body.clone()),
            _ => client.get(&url),
        };
        let response = builder.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap().to_vec();
        sent.push(Sent {
            url,
            method,
            request_body,
            status,
            body,
        });
    }
    assert_eq!(
        sent.iter().map(|s| s.status).collect::<Vec<_>>(),
        [200, 200, 404, 200]
    );
    sent
}

/// Runs `program` with `args`, returning its stdout; fails with its output if it fails.
fn run(program: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}\n{stdout}\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Loads `file` with mitmproxy's own `FlowReader`, one JSON object per flow.
const LOAD_FLOWS: &str = r#"
import json, sys
from mitmproxy.io import FlowReader
with open(sys.argv[1], "rb") as f:
    for flow in FlowReader(f).stream():
        print(json.dumps({
            "type": flow.type,
            "url": flow.request.pretty_url,
            "method": flow.request.method,
            "request": flow.request.raw_content.hex(),
            "status": flow.response.status_code if flow.response else None,
            "response": flow.response.raw_content.hex() if flow.response else None,
            "error": flow.error.msg if flow.error else None,
        }))
"#;

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn mitmproxy_11_opens_the_flows_we_capture() {
    opens_the_flows_we_capture(Release::Eleven).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mitmproxy_10_opens_the_flows_we_capture() {
    opens_the_flows_we_capture(Release::Ten).await;
}

async fn opens_the_flows_we_capture(release: Release) {
    let Some((mitmdump, python)) = mitmproxy(release) else {
        return;
    };
    let origin = start_origin().await;
    let tls = start_tls_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.flows");
    let capture = Arc::new(
        Capture::builder()
            .sink(Box::new(FlowWriter::create(&path).unwrap()))
            .start(),
    );
    let handler = capture.clone();
    let proxy = start_proxy(|b| b.http_handler(handler)).await;
    let client = client_via(&proxy);

    let sent = send_requests(&client, origin.port(), tls.port()).await;
    let down = format!("http://127.0.0.1:{}/down", refused_port());
    let failed = client.get(&down).send().await.unwrap().status().as_u16();
    // Five requests, and the CONNECT before the HTTPS one: a flow of its own, which
    // the flow file leaves out.
    tokio::time::timeout(PATIENCE, capture.wait_written(6))
        .await
        .expect("timed out waiting for six flows written");
    // Every queued flow written and flushed.
    assert_eq!(capture.finish(), (6, 0));

    let confdir = dir.path().join("mitmproxy");
    let printed = run(
        &mitmdump,
        &[
            "-nr",
            path.to_str().unwrap(),
            "--set",
            "flow_detail=1",
            "--set",
            &format!("confdir={}", confdir.display()),
        ],
    );
    for s in &sent {
        let line = format!("{} {}", s.method, s.url);
        let at = printed
            .find(&line)
            .unwrap_or_else(|| panic!("mitmdump did not print {line:?}:\n{printed}"));
        let answer = format!("<< {}", s.status);
        assert!(
            printed[at..].contains(&answer),
            "no {answer:?} after {line:?}:\n{printed}"
        );
    }
    assert!(
        printed.contains(&format!("GET {down}")),
        "the failed flow:\n{printed}"
    );

    let script = dir.path().join("load.py");
    std::fs::write(&script, LOAD_FLOWS).unwrap();
    let loaded: Vec<serde_json::Value> =
        run(&python, &[script.to_str().unwrap(), path.to_str().unwrap()])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    // The CONNECT before the HTTPS request is left out, as mitmproxy leaves it out.
    assert_eq!(loaded.len(), 5, "{loaded:?}");
    assert!(
        loaded.iter().all(|f| f["method"] != "CONNECT"),
        "{loaded:?}"
    );
    for (s, flow) in sent.iter().zip(&loaded) {
        assert_eq!(flow["type"], "http");
        assert_eq!(flow["url"], s.url.as_str());
        assert_eq!(flow["method"], s.method);
        assert_eq!(flow["status"], s.status);
        assert_eq!(flow["request"], hex(&s.request_body).as_str(), "{}", s.url);
        assert_eq!(flow["response"], hex(&s.body).as_str(), "{}", s.url);
        assert!(flow["error"].is_null(), "{flow}");
    }
    let last = &loaded[4];
    assert_eq!(last["url"], down.as_str());
    assert!(
        last["error"].is_string(),
        "the failed flow keeps its error: {last}"
    );
    // The client got the proxy's error page; the flow is kept as mitmproxy keeps
    // one that could not be delivered: its error, and no response.
    assert_eq!(failed, 502);
    assert!(last["status"].is_null(), "{last}");
}

/// A running `mitmdump -w`, killed if the test ends early.
pub(crate) struct Mitmdump {
    child: tokio::process::Child,
    pub(crate) port: u16,
    log: PathBuf,
}

impl Mitmdump {
    /// Starts `mitmdump` on a free loopback port, saving every flow to `file`, with
    /// its confdir (and CA) in `dir/mitmproxy`, trusting the test origins' CA
    /// upstream, and waits until it listens.
    pub(crate) async fn start(mitmdump: &Path, dir: &Path, file: &Path) -> Mitmdump {
        Self::start_with(mitmdump, dir, file, &[]).await
    }

    /// [`start`](Self::start) with more command-line arguments (`extra`).
    pub(crate) async fn start_with(
        mitmdump: &Path,
        dir: &Path,
        file: &Path,
        extra: &[&str],
    ) -> Mitmdump {
        let args = [OsStr::new("-w"), file.as_os_str()]
            .into_iter()
            .chain(extra.iter().map(OsStr::new));
        Self::start_args(mitmdump, dir, args).await
    }

    /// [`start`](Self::start) with `args` instead of `-w FILE` (e.g. `-S FILE` and
    /// `--set` options).
    pub(crate) async fn start_args<'a>(
        mitmdump: &Path,
        dir: &Path,
        args: impl IntoIterator<Item = &'a OsStr>,
    ) -> Mitmdump {
        let confdir = dir.join("mitmproxy");
        let log = dir.join("mitmdump.log");
        // (`output_in` reads it.) Port 0: mitmdump binds a free port itself and says
        // which in its log, so no other test can take it between our choice and its
        // bind (as one did, answering our requests with its own 502s).
        let child = tokio::process::Command::new(mitmdump)
            .args(["--listen-host", "127.0.0.1", "--listen-port", "0"])
            .args(args)
            .arg("--set")
            .arg(format!("confdir={}", confdir.display()))
            .arg("--set")
            .arg(format!(
                "ssl_verify_upstream_trusted_ca={}",
                origin_ca_file().display()
            ))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut dump = Mitmdump {
            child,
            port: 0,
            log,
        };
        dump.port = dump.wait_listening().await;
        dump
    }

    /// The CA certificate clients of [`start`](Self::start)'s mitmdump trust (it
    /// exists once mitmdump listens).
    pub(crate) fn ca_cert(dir: &Path) -> PathBuf {
        dir.join("mitmproxy").join("mitmproxy-ca-cert.pem")
    }

    /// Roots that trust only the CA of [`start`](Self::start)'s mitmdump.
    pub(crate) fn roots(dir: &Path) -> rustls::RootCertStore {
        use rustls_pki_types::pem::PemObject;
        let pem = std::fs::read(Self::ca_cert(dir)).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap())
            .unwrap();
        roots
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A reqwest client that uses this mitmdump (started with `dir`) for every scheme
    /// and trusts only its CA.
    pub(crate) fn client(&self, dir: &Path) -> reqwest::Client {
        let roots = Self::roots(dir);
        let tls_config = rustls::ClientConfig::builder_with_provider(mitm::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://127.0.0.1:{}", self.port)).unwrap())
            .use_preconfigured_tls(tls_config)
            .timeout(PATIENCE)
            .build()
            .unwrap()
    }

    fn log(&self) -> String {
        Self::output(&self.log)
    }

    /// What mitmdump started with `dir` wrote to stdout (and its log lines).
    pub(crate) fn output_in(dir: &Path) -> String {
        Self::output(&dir.join("mitmdump.log"))
    }

    fn output(log: &Path) -> String {
        std::fs::read_to_string(log).unwrap_or_default()
    }

    /// Waits until it accepts connections (or fails with its log if it exits first).
    /// The port mitmdump listens on, once its log says so ("… listening at
    /// 127.0.0.1:PORT."); fails the test if it exits first or takes over a minute.
    async fn wait_listening(&mut self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            if let Some(port) = log.lines().find_map(|line| {
                let rest = line.split_once("listening at 127.0.0.1:")?.1;
                rest.trim_end().trim_end_matches('.').parse().ok()
            }) {
                return port;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("mitmdump exited ({status}) before listening:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "mitmdump did not listen within a minute:\n{log}"
            );
            // Its log is a file: polled, not waited on.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGINT, as Ctrl-C: mitmdump finishes writing its file and exits.
    pub(crate) async fn stop(mut self) {
        let status = interrupt(&mut self.child)
            .await
            .unwrap_or_else(|| panic!("mitmdump did not stop on SIGINT:\n{}", self.log()));
        // A clean shutdown exits 0; some versions report the signal instead.
        assert!(
            status.success() || status.code().is_none(),
            "mitmdump: {status}\n{}",
            self.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_what_mitmdump_11_wrote() {
    reads_what_mitmdump_wrote(Release::Eleven).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_what_mitmdump_10_wrote() {
    reads_what_mitmdump_wrote(Release::Ten).await;
}

async fn reads_what_mitmdump_wrote(release: Release) {
    let Some((mitmdump, _)) = mitmproxy(release) else {
        return;
    };
    let origin = start_origin().await;
    let tls = start_tls_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mitmdump.flows");
    let dump = Mitmdump::start(&mitmdump, dir.path(), &file).await;

    let client = dump.client(dir.path());

    let sent = send_requests(&client, origin.port(), tls.port()).await;
    drop(client);
    dump.stop().await;

    let records = read_flows(&file).unwrap();
    assert_eq!(records.len(), sent.len(), "{records:#?}");
    for (s, r) in sent.iter().zip(&records) {
        assert_eq!(r.request.url(), s.url);
        assert_eq!(r.request.method, s.method);
        assert_eq!(r.request.body.data, s.request_body, "{}", s.url);
        let response = r.response.as_ref().expect("a response");
        assert_eq!(response.status, s.status, "{}", s.url);
        assert_eq!(response.body.data, s.body, "{}", s.url);
        assert!(!response.body.truncated);
        assert!(r.error.is_none(), "{:?}", r.error);
        assert!(
            r.client.is_some_and(|c| c.ip().is_loopback()),
            "{:?}",
            r.client
        );
        assert!(r.timings.response_end.is_some());
    }
    assert!(records[3].client_tls, "the HTTPS flow");
}
