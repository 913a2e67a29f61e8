//! mitmdump's command line given to `mitm` by changing only the program's name, and
//! the options it reads from `--set` and `config.yaml` (issue 21, items 1 and 3).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// A `mitm` child with a home of its own (so no config file or CA of the user's is
/// read or written), its stdout lines coming through a channel.
struct Mitm {
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    addr: String,
    ca_dir: PathBuf,
}

/// `mitm` run with `args` and `home` as its home and data directory.
fn command(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mitm"));
    c.args(args)
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("share"))
        .env_remove("RUST_LOG")
        .env_remove("COLUMNS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

impl Mitm {
    /// Starts the proxy and waits for its banner.
    async fn start(home: &Path, args: &[&str]) -> Mitm {
        let mut child = command(home, args).spawn().expect("cannot start mitm");
        let (tx, mut stdout) = mpsc::unbounded_channel();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = stderr.clone();
        let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err_lines.next_line().await {
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        let (mut addr, mut ca) = (None, None);
        let banner = async {
            while addr.is_none() || ca.is_none() {
                let Some(line) = stdout.recv().await else {
                    break;
                };
                if let Some((_, a)) = banner_listener(&line) {
                    addr.get_or_insert(format!("http://{a}"));
                }
                if let Some(p) = line.strip_prefix("CA certificate: ") {
                    ca = Some(PathBuf::from(p));
                }
            }
        };
        tokio::time::timeout(PATIENCE, banner)
            .await
            .expect("no banner in time");
        let Some(addr) = addr else {
            panic!("mitm printed no banner: {}", stderr.lock().unwrap());
        };
        let ca_dir = ca.unwrap().parent().unwrap().to_path_buf();
        Mitm {
            child,
            stdout,
            stderr,
            addr,
            ca_dir,
        }
    }

    /// A client through the proxy, trusting its CA.
    fn client(&self) -> reqwest::Client {
        let ca = mitm::CertificateAuthority::load(
            self.ca_dir.join("mitm.pem"),
            self.ca_dir.join("mitm.key"),
        )
        .unwrap();
        client_for(&self.addr, &ca)
    }

    /// The next stdout lines up to and including one that `done` accepts.
    async fn lines_until(&mut self, done: impl Fn(&str) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        let read = async {
            while let Some(line) = self.stdout.recv().await {
                let last = done(&line);
                seen.push(line);
                if last {
                    return true;
                }
            }
            false
        };
        let found = tokio::time::timeout(PATIENCE, read).await;
        assert!(
            matches!(found, Ok(true)),
            "not printed; stdout so far: {seen:?}; stderr: {}",
            self.stderr.lock().unwrap()
        );
        seen
    }

    /// Stops it ([`stop`](Self::stop)); what it wrote to stdout that was not read yet.
    async fn output(self) -> String {
        let mut rest = Vec::new();
        let mut stdout = self.stop().await;
        while let Some(line) = stdout.recv().await {
            rest.push(line);
        }
        rest.join("\n") + "\n"
    }

    /// SIGINT; waits for the exit, which must be a clean one. The rest of stdout.
    async fn stop(mut self) -> mpsc::UnboundedReceiver<String> {
        let status = interrupt(&mut self.child)
            .await
            .expect("mitm did not stop on SIGINT");
        assert_eq!(status.code(), Some(0), "{}", self.stderr.lock().unwrap());
        self.stdout
    }
}

/// Runs a command that exits by itself; its exit code, stdout and stderr.
async fn run(home: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(PATIENCE, command(home, args).output())
        .await
        .expect("mitm did not exit")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// mitmdump's words, as a mitmdump user types them: the listen address, `-w` saving
/// flows, `-k` reaching an origin whose certificate nothing trusts, `--flow-detail 1`
/// lines on stdout; then `-nr` prints the saved flows and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mitmdump_command_line_works_by_changing_only_the_name() {
    let home = tempfile::tempdir().unwrap();
    let saved = home.path().join("out.flows");
    let saved_arg = saved.to_str().unwrap();
    let plain = start_origin().await;
    let tls = start_tls_origin().await;
    let mut proxy = Mitm::start(
        home.path(),
        &[
            "--listen-host",
            "127.0.0.1",
            "-p",
            "0",
            "-w",
            saved_arg,
            "-k",
            "--flow-detail",
            "1",
        ],
    )
    .await;
    assert!(
        proxy.addr.starts_with("http://127.0.0.1:"),
        "{}",
        proxy.addr
    );
    let client = proxy.client();
    let url = format!("http://127.0.0.1:{}/dump", plain.port());
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    let body = got.text().await.unwrap();
    // mitmdump's two lines: the client, method and URL; the status under the method.
    let lines = proxy.lines_until(|l| l.contains(" << ")).await;
    let request = lines
        .iter()
        .position(|l| l.ends_with(&format!(": GET {url}")))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(lines[request].starts_with("127.0.0.1:"), "{lines:?}");
    let status = &lines[request + 1];
    assert_eq!(status.trim_start(), format!("<< 200 OK {}b", body.len()));
    // Aligned as mitmdump aligns it: the status code under the method.
    let method_at = lines[request].find("GET").unwrap();
    assert_eq!(status.find("200").unwrap(), method_at, "{lines:?}");

    // -k: the origin's certificate is from a CA nothing trusts.
    let url = format!("https://localhost:{}/tls", tls.port());
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200, "-k did not turn verification off");
    proxy
        .lines_until(|l| l.ends_with(&format!(": GET {url}")))
        .await;
    drop(client);
    proxy.stop().await;

    // -w saved both; `mitm -nr` prints them and exits, as `mitmdump -nr` does.
    let (code, stdout, stderr) = run(home.path(), &["-nr", saved_arg]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let printed: Vec<&str> = stdout.lines().collect();
    assert_eq!(printed.len(), 2, "{stdout}");
    assert!(
        printed[0].contains("/dump") && printed[1].contains("/tls"),
        "{stdout}"
    );
}

/// `-s` is mitmdump's too, but needs Python: the binary refuses it clearly (not
/// "unexpected argument"), saying how to get the command that runs scripts; `-n` alone
/// has nothing to do.
#[tokio::test]
async fn scripts_are_refused_with_the_reason() {
    let home = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(home.path(), &["-p", "0", "-s", "addon.py"]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("pip install ./python"), "{stderr}");
    assert!(!stderr.contains("unexpected argument"), "{stderr}");
    let (code, _, stderr) = run(home.path(), &["-n"]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("-r FILE"), "{stderr}");
}

/// Options from `config.yaml` in the CA directory (mitmproxy's format, mitmproxy's
/// names); the command line wins over it; a misspelt name is refused with the closest
/// one, in the file or in `--set`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_yaml_sets_options_and_the_command_line_wins() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("ca");
    std::fs::create_dir(&dir).unwrap();
    let dir_arg = dir.to_str().unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        "# as mitmproxy writes it\nlisten_host: 127.0.0.1\nlisten_port: 0\n\
         ssl_insecure: true\nflow_detail: 2\nignore_hosts:\n  - '^nothing\\.example'\n",
    )
    .unwrap();
    let tls = start_tls_origin().await;
    // The file's flow_detail (2, with headers) loses to the command line's 1.
    let mut proxy = Mitm::start(home.path(), &["--ca-dir", dir_arg, "--flow-detail", "1"]).await;
    // listen_port: 0 from the file, where the default is 8080.
    assert!(!proxy.addr.ends_with(":8080"), "{}", proxy.addr);
    let client = proxy.client();
    // ssl_insecure from the file: the untrusted origin is reached.
    let url = format!("https://localhost:{}/config", tls.port());
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    let lines = proxy.lines_until(|l| l.contains(" << ")).await;
    assert!(
        lines
            .iter()
            .all(|l| !l.to_ascii_lowercase().starts_with("    host:")),
        "headers at --flow-detail 1: {lines:?}"
    );
    drop(client);
    proxy.stop().await;

    // --set beats the file: no verification off, so the origin is refused (502).
    let mut proxy = Mitm::start(
        home.path(),
        &["--ca-dir", dir_arg, "--set", "ssl_insecure=false"],
    )
    .await;
    let got = proxy.client().get(&url).send().await.unwrap();
    assert_eq!(got.status(), 502);
    // And the file's flow_detail 2 applies: headers are printed.
    let lines = proxy.lines_until(|l| l.contains(" << ")).await;
    assert!(
        lines
            .iter()
            .any(|l| l.to_ascii_lowercase().starts_with("    host:")),
        "no headers at the file's flow_detail 2: {lines:?}"
    );
    proxy.stop().await;

    // A name nothing declares: refused at start, naming the closest one.
    let (code, _, stderr) = run(
        home.path(),
        &["--ca-dir", dir_arg, "--set", "listen_prot=0"],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("no option is named listen_prot"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean listen_port?"), "{stderr}");
    std::fs::write(dir.join("config.yaml"), "ssl_insecur: true\n").unwrap();
    let (code, _, stderr) = run(home.path(), &["--ca-dir", dir_arg]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("config.yaml: ssl_insecur"), "{stderr}");
    assert!(stderr.contains("did you mean ssl_insecure?"), "{stderr}");
    // A bad value: what was wrong.
    std::fs::write(dir.join("config.yaml"), "listen_port: eighty\n").unwrap();
    let (code, _, stderr) = run(home.path(), &["--ca-dir", dir_arg]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("listen_port") && stderr.contains("eighty"),
        "{stderr}"
    );
}

/// `-C FILE` beside a proxy sends the recorded requests again through it (its hooks see
/// them: --flow-detail writes them as replays, -w saves them); `-r FILE` beside a proxy
/// prints the flows, saves them with -w and puts them in the web UI's list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_replay_and_rfile_go_through_the_running_proxy() {
    let home = tempfile::tempdir().unwrap();
    let path = |name: &str| home.path().join(name).to_str().unwrap().to_string();
    let origin = start_origin().await;
    let url = format!("http://127.0.0.1:{}/again", origin.port());
    // A recording.
    let recorded = path("rec.flows");
    let proxy = Mitm::start(home.path(), &["-p", "0", "-w", &recorded]).await;
    let got = proxy.client().get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    proxy.stop().await;
    assert_eq!(origin.requests().len(), 1);

    // -C: sent again once the proxy is up, through its hooks.
    let replayed = path("replayed.flows");
    let mut proxy = Mitm::start(
        home.path(),
        &[
            "-p",
            "0",
            "-C",
            &recorded,
            "--flow-detail",
            "1",
            "-w",
            &replayed,
        ],
    )
    .await;
    // Both the replay's status line and its flow line, in either order.
    let (status, flow) = (
        format!("200 GET {url} (was 200)"),
        format!("[replay]: GET {url}"),
    );
    let mut lines = Vec::new();
    while !(lines.contains(&status) && lines.contains(&flow)) {
        lines.extend(proxy.lines_until(|l| l == status || l == flow).await);
    }
    proxy.stop().await;
    assert_eq!(
        origin.requests().len(),
        2,
        "the origin did not see the replay"
    );
    let (code, stdout, stderr) =
        run(home.path(), &["read", &replayed, "--filter", "~replayq"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");

    // -r beside a proxy with the web UI and -w.
    let copy = path("copy.flows");
    let mut proxy = Mitm::start(
        home.path(),
        &[
            "-p",
            "0",
            "-r",
            &recorded,
            "-w",
            &copy,
            "--web",
            "--web-port",
            "0",
        ],
    )
    .await;
    let lines = proxy.lines_until(|l| l.starts_with("web UI: ")).await;
    assert!(
        lines.iter().any(|l| l.contains("/again")),
        "-r's flows not printed: {lines:?}"
    );
    let ui = lines.last().unwrap().strip_prefix("web UI: ").unwrap();
    let (base, token) = ui.split_once("/?token=").unwrap();
    let listed = crate::web::get_text(format!("{base}/api/flows"), token).await;
    assert!(listed.contains("/again"), "not in the web UI: {listed}");
    proxy.stop().await;
    let (code, stdout, stderr) = run(home.path(), &["-nr", &copy]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("/again"),
        "-r's flows not saved by -w: {stdout}"
    );
    // No request reached the origin for -r.
    assert_eq!(origin.requests().len(), 2);
}

/// `--flow-detail` 1, 2 and 3 write what mitmdump 11 writes for the same requests (a
/// GET with a query, a POST with a text body, one with a form, a brotli text response
/// and an HTTPS GET), once the client's port and the `date` fields are set aside.
/// (mitmdump joins a body's lines with `\r\n`; compared by lines, that is not seen.)
/// Then both read the flows mitmdump saved (`-nr FILE --flow-detail N`): the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_detail_writes_what_mitmdump_writes() {
    use crate::flows::{mitmproxy, Mitmdump, Release};
    let Some((mitmdump, _)) = mitmproxy(Release::Eleven) else {
        return;
    };
    let plain = start_origin().await;
    let tls = start_tls_origin().await;
    let send = |client: reqwest::Client| {
        let (plain, tls) = (plain.port(), tls.port());
        async move {
            let requests = [
                client.get(format!("http://127.0.0.1:{plain}/page?x=1")),
                client
                    .post(format!("http://127.0.0.1:{plain}/echo"))
                    .header("content-type", "text/plain")
                    .body("a posted\nbody"),
                client
                    .post(format!("http://127.0.0.1:{plain}/echo"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("a=b&c=d+e%21"),
                client.get(format!("http://127.0.0.1:{plain}/br")),
                client.get(format!("https://localhost:{tls}/page")),
            ];
            for request in requests {
                let response = request.send().await.unwrap();
                assert!(response.status().is_success());
                response.bytes().await.unwrap();
            }
        }
    };
    for level in ["1", "2", "3"] {
        let dir = tempfile::tempdir().unwrap();
        let dump = Mitmdump::start_with(
            &mitmdump,
            dir.path(),
            &dir.path().join("dump.flows"),
            // Its log lines stay (the listening line says its port); `normalize`
            // leaves them out.
            &["--flow-detail", level],
        )
        .await;
        send(dump.client(dir.path())).await;
        dump.stop().await;
        let theirs = Mitmdump::output_in(dir.path());

        // The flows mitmdump saved, read back by both: `-nr FILE --flow-detail N`.
        let saved = dir.path().join("dump.flows");
        let confdir = format!("confdir={}", dir.path().join("mitmproxy").display());
        let read_back = std::process::Command::new(&mitmdump)
            .arg("-nr")
            .arg(&saved)
            .args(["--flow-detail", level, "--set", "termlog_verbosity=error"])
            .args(["--set", &confdir])
            .output()
            .unwrap();
        let theirs_read = String::from_utf8(read_back.stdout).unwrap();
        let home = tempfile::tempdir().unwrap();
        let (code, ours_read, stderr) = run(
            home.path(),
            &["-nr", saved.to_str().unwrap(), "--flow-detail", level],
        )
        .await;
        assert_eq!(code, Some(0), "{stderr}");
        assert!(!normalize(&theirs_read).is_empty(), "{theirs_read}");
        assert_eq!(
            normalize(&ours_read),
            normalize(&theirs_read),
            "-nr --flow-detail {level}\nours:\n{ours_read}\nmitmdump's:\n{theirs_read}"
        );

        let home = tempfile::tempdir().unwrap();
        let origin_ca = origin_ca_file();
        let args = [
            "--listen-host",
            "127.0.0.1",
            "-p",
            "0",
            "--flow-detail",
            level,
            "--set",
            &format!("ssl_verify_upstream_trusted_ca={}", origin_ca.display()),
            "-q",
        ];
        let proxy = Mitm::start(home.path(), &args).await;
        send(proxy.client()).await;
        let ours = proxy.output().await;
        assert_eq!(
            normalize(&ours),
            normalize(&theirs),
            "--flow-detail {level}\nours:\n{ours}\nmitmdump's:\n{theirs}"
        );
    }
}

/// Flow lines as compared: from the first flow line on, client ports as `PPPPP` (the
/// same width), `date` fields' values left out.
fn normalize(output: &str) -> Vec<String> {
    let port = regex_lite::Regex::new(r"^(127\.0\.0\.1:)\d+").unwrap();
    output
        .lines()
        .skip_while(|l| !l.starts_with("127.0.0.1:"))
        // mitmdump's own log lines, should any come through.
        .filter(|l| !l.starts_with('['))
        .map(|l| {
            let l = port.replace(l, |c: &regex_lite::Captures| {
                format!("{}{}", &c[1], "P".repeat(c[0].len() - c[1].len()))
            });
            if l.to_ascii_lowercase().starts_with("    date: ") {
                "    date: …".to_string()
            } else {
                l.into_owned()
            }
        })
        .collect()
}

/// `--upstream-auth USER:PASS` logs in to the upstream proxy of `--mode upstream:URL`
/// (here one that asks for credentials); without it that proxy answers 407, which the
/// client gets as a 502 naming the hop and the 407.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_auth_logs_in_to_the_upstream_proxy() {
    let home = tempfile::tempdir().unwrap();
    let origin = start_origin().await;
    let upstream = start_proxy(|b| b.proxy_auth("alice", "s3cret")).await;
    let mode = format!("upstream:http://{}", upstream.addr);
    let url = format!("http://127.0.0.1:{}/through", origin.port());
    for (auth, status) in [(Some("alice:s3cret"), 200), (None, 502)] {
        let mut args = vec!["-p", "0", "-m", &mode];
        if let Some(auth) = auth {
            args.extend(["--upstream-auth", auth]);
        }
        let proxy = Mitm::start(home.path(), &args).await;
        let got = proxy.client().get(&url).send().await.unwrap();
        assert_eq!(got.status(), status, "--upstream-auth {auth:?}");
        let page = got.text().await.unwrap();
        if auth.is_none() {
            assert!(page.contains("407"), "{page}");
        }
        proxy.stop().await;
    }
    assert_eq!(origin.requests().len(), 1);
}
