//! The TLS key log (`MitmBuilder::key_log`, `SSLKEYLOGFILE` for the command): the
//! secrets of both hops, client to proxy and proxy to origin, in the NSS key log format,
//! which Wireshark's `tshark` uses to decrypt a loopback capture of either hop.

use crate::common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SECRET_PATH: &str = "/keylog-secret-path";

/// The client randoms whose TLS 1.3 client traffic secret was logged: what rustls itself
/// reports for the test's own client.
#[derive(Debug, Default)]
struct Randoms(Mutex<HashSet<String>>);

impl rustls::KeyLog for Randoms {
    fn log(&self, label: &str, client_random: &[u8], _secret: &[u8]) {
        if label == "CLIENT_TRAFFIC_SECRET_0" {
            let hex: String = client_random.iter().map(|b| format!("{b:02x}")).collect();
            self.0.lock().unwrap().insert(hex);
        }
    }
}

/// The client randoms of the key log file's `CLIENT_TRAFFIC_SECRET_0` lines, after
/// checking every line's shape.
fn logged_randoms(path: &Path) -> HashSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut randoms = HashSet::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 3, "not LABEL RANDOM SECRET: {line:?}");
        assert_eq!(fields[1].len(), 64, "client random of 32 bytes: {line:?}");
        let hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        assert!(hex(fields[1]) && hex(fields[2]), "{line:?}");
        if fields[0] == "CLIENT_TRAFFIC_SECRET_0" {
            randoms.insert(fields[1].to_string());
        }
    }
    randoms
}

/// A live loopback capture by tshark of the packets `filter` selects, into `file`.
struct Capture {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// A UDP socket that sends itself datagrams tshark captures: probes until the
    /// capture is seen to run, a marker after the traffic.
    marker: tokio::net::UdpSocket,
    marker_port: u16,
}

/// What the probe datagram holds (tshark's summary line ends `Len=5`).
const PROBE: &[u8] = b"probe";
/// What the marker datagram holds (`Len=13`).
const MARKER: &[u8] = b"keylog-marker";

impl Capture {
    /// Starts capturing `tcp port P` for each of `ports`, and returns once tshark says
    /// it captures.
    async fn start(ports: &[u16], file: &Path) -> Capture {
        let marker = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let marker_port = marker.local_addr().unwrap().port();
        let mut filter: Vec<String> = ports.iter().map(|p| format!("tcp port {p}")).collect();
        filter.push(format!("udp port {marker_port}"));
        let mut child = Command::new("tshark")
            .args(["-i", "lo", "-f", &filter.join(" or "), "-l", "-P", "-w"])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = Vec::new();
        let started = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = stderr.next_line().await.unwrap() {
                if line.contains("Capturing on") {
                    return true;
                }
                said.push(line);
            }
            false
        })
        .await;
        assert!(
            matches!(started, Ok(true)),
            "tshark did not start capturing on lo (it needs the right to capture): {said:?}"
        );
        // Keep reading its stderr so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut capture = Capture {
            child,
            lines,
            marker,
            marker_port,
        };
        // "Capturing on" comes before packets are really captured: probe until one
        // shows, so that none of the test's traffic is missed.
        let running = tokio::time::timeout(PATIENCE, async {
            loop {
                capture.send(PROBE).await;
                let shown =
                    tokio::time::timeout(std::time::Duration::from_millis(200), capture.saw(PROBE))
                        .await;
                if let Ok(shown) = shown {
                    return shown;
                }
            }
        })
        .await;
        assert!(matches!(running, Ok(true)), "tshark never showed a probe");
        capture
    }

    async fn send(&self, payload: &[u8]) {
        let to = ("127.0.0.1", self.marker_port);
        self.marker.send_to(payload, to).await.unwrap();
    }

    /// Reads tshark's summary lines until one is a datagram holding as many bytes as
    /// `payload`; false if tshark ends first.
    async fn saw(&mut self, payload: &[u8]) -> bool {
        let len = format!("Len={}", payload.len());
        while let Some(line) = self.lines.next_line().await.unwrap() {
            if line.contains("UDP") && line.trim_end().ends_with(&len) {
                return true;
            }
        }
        false
    }

    /// Sends a marker datagram after the traffic, waits until tshark has saved it (and
    /// so everything before it), then stops the capture.
    async fn stop(mut self) {
        self.send(MARKER).await;
        let seen = tokio::time::timeout(PATIENCE, self.saw(MARKER)).await;
        assert!(matches!(seen, Ok(true)), "tshark never showed the marker");
        let status = interrupt(&mut self.child)
            .await
            .expect("tshark did not stop on SIGINT");
        assert!(status.success(), "tshark: {status}");
    }
}

/// The (source port, destination port) of every HTTP request tshark reads in
/// `capture` for `SECRET_PATH`, with the key log `keys` or without one.
fn decrypted_requests(capture: &Path, keys: Option<&Path>) -> Vec<(u16, u16)> {
    let mut cmd = std::process::Command::new("tshark");
    cmd.arg("-r").arg(capture);
    if let Some(keys) = keys {
        cmd.arg("-o")
            .arg(format!("tls.keylog_file:{}", keys.display()));
    }
    let out = cmd
        .args(["-Y", "http.request", "-T", "fields"])
        .args([
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.dstport",
            "-e",
            "http.request.uri",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark -r: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            (f.len() == 3 && f[2] == SECRET_PATH)
                .then(|| (f[0].parse().unwrap(), f[1].parse().unwrap()))
        })
        .collect()
}

#[tokio::test]
async fn tshark_decrypts_both_hops_with_the_key_log() {
    if !require_tool(have("tshark"), "tshark", "apt-get install tshark") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.log");
    // What was there stays: the log is appended to.
    std::fs::write(&keys, "").unwrap();
    let origin = start_tls_origin().await;
    let keys_for_proxy = keys.clone();
    let proxy = start_proxy(move |b| b.key_log(keys_for_proxy)).await;
    let pcap = dir.path().join("capture.pcapng");
    let capture = Capture::start(&[proxy.addr.port(), origin.port()], &pcap).await;

    let mut tls = tls_client_config(&proxy.ca);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let own = Arc::new(Randoms::default());
    tls.key_log = own.clone();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .use_preconfigured_tls(tls)
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}{SECRET_PATH}", origin.port());
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    capture.stop().await;

    // The log holds the test client's own session (client to proxy) and one more, the
    // proxy's to the origin.
    let logged = logged_randoms(&keys);
    let own = own.0.lock().unwrap().clone();
    assert_eq!(own.len(), 1, "{own:?}");
    assert!(own.is_subset(&logged), "client's {own:?} not in {logged:?}");
    assert_eq!(logged.len(), 2, "{logged:?}");

    let (proxy_port, origin_port) = (proxy.addr.port(), origin.port());
    let seen = decrypted_requests(&pcap, Some(&keys));
    assert!(
        seen.iter().any(|&(_, dst)| dst == proxy_port),
        "client to proxy not decrypted: {seen:?}"
    );
    assert!(
        seen.iter().any(|&(_, dst)| dst == origin_port),
        "proxy to origin not decrypted: {seen:?}"
    );
    // Without the key log the path is nowhere to be read.
    let blind = decrypted_requests(&pcap, None);
    assert!(blind.is_empty(), "read without keys: {blind:?}");
}

#[tokio::test]
async fn a_key_log_that_cannot_be_opened_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    // A directory is no file to append to.
    let err = mitm::Mitm::builder()
        .port(0)
        .certificate_authority(Arc::new(mitm::CertificateAuthority::generate().unwrap()))
        .key_log(dir.path())
        .bind()
        .await
        .unwrap_err();
    assert!(matches!(err, mitm::Error::KeyLog { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
}
