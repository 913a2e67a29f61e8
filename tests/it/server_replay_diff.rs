//! Server replay against real mitmdump 11: one flow file (recorded by mitmdump), the
//! same `server_replay_*` options given to both (`--set NAME=VALUE` to mitmdump, the
//! flags of the same names to ours), the same requests sent by one client, and what
//! the client sees compared: the status, and the body (the recorded one, or none).
//!
//! The origin is stopped once the flows are recorded, so a request forwarded to it
//! gets the proxy's `502` (whose page differs from proxy to proxy: only its status is
//! compared), and one answered from the recording gets the recorded body.
//!
//! mitmdump's ways not copied (the test sends nothing that shows them):
//! - it marks its `server_replay_extra` status answers as replayed responses
//!   (`is_replay: response`); ours are the proxy's own, unmarked;
//! - it matches the path as Python's `urlparse` cuts it (a `;params` suffix of the last
//!   segment left out) and the host by the `Host` header when there is one;
//! - its multipart reader drops the line breaks inside a form field's value.

use crate::common;
use crate::flows::Mitmdump;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::time::SystemTime;

use common::{
    refused_port, require_tool, start_origin, start_tls_origin, venv_tool, ChildProxy, PATIENCE,
    VENV_INSTALL,
};

/// One request the client sends: method, URL, headers, body.
#[derive(Clone)]
struct Ask {
    method: &'static str,
    url: String,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static [u8],
}

impl Ask {
    fn get(url: String) -> Ask {
        Ask {
            method: "GET",
            url,
            headers: Vec::new(),
            body: b"",
        }
    }

    fn post(url: String, body: &'static [u8]) -> Ask {
        Ask {
            method: "POST",
            url,
            headers: Vec::new(),
            body,
        }
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Ask {
        self.headers.push((name, value));
        self
    }
}

/// What the client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    /// A response: its status and body (none for a `502`, whose page is each
    /// proxy's own).
    Answer(u16, String),
    /// The connection closed without an answer.
    Closed,
}

use Got::{Answer, Closed};

fn body(text: &str) -> String {
    text.to_string()
}

/// Sends each of `asks` on a connection of its own (a closed one must not be reused
/// or retried) through the proxy at `proxy`.
async fn send(client: &reqwest::Client, asks: &[Ask]) -> Vec<Got> {
    let mut seen = Vec::new();
    for ask in asks {
        let mut request = client.request(ask.method.parse().unwrap(), &ask.url);
        for (name, value) in &ask.headers {
            request = request.header(*name, *value);
        }
        if !ask.body.is_empty() {
            request = request.body(ask.body);
        }
        let got = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.bytes().await.unwrap();
                let body = if status == 502 {
                    String::new()
                } else {
                    String::from_utf8_lossy(&body).into_owned()
                };
                Answer(status, body)
            }
            Err(e) => {
                assert!(!e.is_timeout(), "{}: {e}", ask.url);
                Closed
            }
        };
        seen.push(got);
    }
    seen
}

/// A client of the proxy at `addr` for every scheme, trusting `roots` (the proxy's
/// CA), with a connection per request (a closed one must not be reused or retried).
fn client(addr: SocketAddr, roots: rustls::RootCertStore) -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(mitm::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let proxy = format!("http://{addr}");
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .proxy(reqwest::Proxy::all(&proxy).unwrap())
        .pool_max_idle_per_host(0)
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

/// The requests recorded: a GET with a query and a language, a POST with a body, a
/// POST of an urlencoded form and one of a multipart form, and a POST inside HTTPS
/// (to `tls_port`).
fn recorded(port: u16, tls_port: u16) -> Vec<Ask> {
    vec![
        Ask::get(format!("http://127.0.0.1:{port}/page?x=1&t=1")).header("accept-language", "en"),
        Ask::post(format!("http://127.0.0.1:{port}/echo"), b"one"),
        Ask::post(format!("http://127.0.0.1:{port}/echo"), b"user=ann&csrf=1")
            .header("content-type", "application/x-www-form-urlencoded"),
        multipart(format!("http://127.0.0.1:{port}/echo"), MULTIPART_ANN_1),
        Ask::post(format!("https://localhost:{tls_port}/echo"), b"secret"),
    ]
}

/// A multipart form: user=ann, csrf=1.
const MULTIPART_ANN_1: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nann\r\n--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n1\r\n--XyZ--\r\n";
/// The same form with csrf=2.
const MULTIPART_ANN_2: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nann\r\n--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n2\r\n--XyZ--\r\n";
/// The same form with user=bob.
const MULTIPART_BOB_1: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nbob\r\n--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n1\r\n--XyZ--\r\n";

fn multipart(url: String, body: &'static [u8]) -> Ask {
    Ask::post(url, body).header("content-type", "multipart/form-data; boundary=XyZ")
}

/// One case: the options (mitmproxy's names and values), what to send, and what the
/// client must see (with both proxies).
struct Case {
    options: &'static [(&'static str, &'static str)],
    asks: Vec<Ask>,
    want: Vec<Got>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_replay_options_answer_as_mitmdump_11_does() {
    let Some(mitmdump) = venv_tool("mitmdump") else {
        require_tool(false, "mitmdump", VENV_INSTALL);
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recorded.flows");

    // Record through mitmdump, then stop the origin.
    let origin = start_origin().await;
    let port = origin.port();
    // The HTTPS origin stays: what it echoes tells a forwarded request from a replayed
    // one.
    let tls_origin = start_tls_origin().await;
    let tls_port = tls_origin.port();
    let recording = dir.path().join("recording");
    std::fs::create_dir(&recording).unwrap();
    let dump = Mitmdump::start(&mitmdump, &recording, &file).await;
    let through = client(dump.addr(), Mitmdump::roots(&recording));
    let seen = send(&through, &recorded(port, tls_port)).await;
    let page = body("hello from origin: GET /page?x=1&t=1");
    assert_eq!(
        seen,
        [
            Answer(200, page.clone()),
            Answer(200, body("one")),
            Answer(200, body("user=ann&csrf=1")),
            Answer(200, String::from_utf8(MULTIPART_ANN_1.to_vec()).unwrap()),
            Answer(200, body("secret")),
        ]
    );
    // A response with dates long past, for server_replay_refresh.
    let dated_url = format!("http://127.0.0.1:{port}/dated");
    let recorded_from = SystemTime::now();
    let original = dated(&through, &dated_url).await;
    let recorded_until = SystemTime::now();
    assert_eq!(original, [OLD_DATE; 4]);
    dump.stop().await;
    drop(origin);

    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let page_ask = || Ask::get(url("/page?x=1&t=1")).header("accept-language", "en");
    let form = |body: &'static [u8]| {
        Ask::post(url("/echo"), body).header("content-type", "application/x-www-form-urlencoded")
    };
    let elsewhere = refused_port();
    let tls_url = format!("https://localhost:{tls_port}/echo");
    let cases = vec![
        // The defaults: each recording served once; the rest forwarded (to no origin).
        Case {
            options: &[],
            asks: vec![page_ask(), page_ask(), Ask::get(url("/never"))],
            want: vec![
                Answer(200, page.clone()),
                Answer(502, body("")),
                Answer(502, body("")),
            ],
        },
        Case {
            options: &[("server_replay_reuse", "true")],
            asks: vec![page_ask(), page_ask()],
            want: vec![Answer(200, page.clone()), Answer(200, page.clone())],
        },
        Case {
            options: &[("server_replay_extra", "kill")],
            asks: vec![page_ask(), page_ask()],
            want: vec![Answer(200, page.clone()), Closed],
        },
        // mitmproxy's former way to say it.
        Case {
            options: &[("server_replay_kill_extra", "true")],
            asks: vec![Ask::get(url("/never"))],
            want: vec![Closed],
        },
        Case {
            options: &[("server_replay_extra", "404")],
            asks: vec![page_ask(), page_ask()],
            want: vec![Answer(200, page.clone()), Answer(404, body(""))],
        },
        Case {
            options: &[("server_replay_extra", "204")],
            asks: vec![Ask::get(url("/never"))],
            want: vec![Answer(204, body(""))],
        },
        Case {
            options: &[("server_replay_extra", "400")],
            asks: vec![Ask::get(url("/never"))],
            want: vec![Answer(400, body(""))],
        },
        Case {
            options: &[("server_replay_extra", "500")],
            asks: vec![Ask::get(url("/never"))],
            want: vec![Answer(500, body(""))],
        },
        // Matching: with extra=404 and reuse, a 404 says "no match".
        Case {
            options: &[
                ("server_replay_extra", "404"),
                ("server_replay_reuse", "true"),
            ],
            asks: vec![
                Ask::get(url("/page?x=1&t=2")).header("accept-language", "en"),
                Ask::get(url("/page?t=1&x=1")).header("accept-language", "en"),
                Ask::get(url("/page?x=%31&t=1")).header("accept-language", "en"),
                // Headers do not count unless named.
                Ask::get(url("/page?x=1&t=1")).header("accept-language", "de"),
                Ask::post(url("/echo"), b"two"),
                Ask::get(format!("http://localhost:{port}/page?x=1&t=1")),
                Ask::get(format!("http://127.0.0.1:{elsewhere}/page?x=1&t=1")),
                form(b"user=ann&csrf=2"),
            ],
            want: vec![
                Answer(404, body("")),
                Answer(404, body("")),
                Answer(200, page.clone()),
                Answer(200, page.clone()),
                Answer(404, body("")),
                Answer(404, body("")),
                Answer(404, body("")),
                Answer(404, body("")),
            ],
        },
        Case {
            options: &[
                ("server_replay_extra", "404"),
                ("server_replay_ignore_params", "t"),
                ("server_replay_reuse", "true"),
            ],
            // An ignored parameter may be missing, or come twice.
            asks: vec![
                Ask::get(url("/page?x=1&t=2")),
                Ask::get(url("/page?x=1")),
                Ask::get(url("/page?t=3&x=1&t=4")),
                Ask::get(url("/page?x=2&t=1")),
            ],
            want: vec![
                Answer(200, page.clone()),
                Answer(200, page.clone()),
                Answer(200, page.clone()),
                Answer(404, body("")),
            ],
        },
        Case {
            options: &[
                ("server_replay_extra", "404"),
                ("server_replay_ignore_content", "true"),
            ],
            asks: vec![Ask::post(url("/echo"), b"two")],
            want: vec![Answer(200, body("one"))],
        },
        Case {
            options: &[
                ("server_replay_extra", "404"),
                ("server_replay_ignore_host", "true"),
                ("server_replay_reuse", "true"),
            ],
            asks: vec![
                Ask::get(format!("http://localhost:{port}/page?x=1&t=1")),
                Ask::get(format!("http://localhost:{elsewhere}/page?x=1&t=1")),
            ],
            want: vec![Answer(200, page.clone()), Answer(404, body(""))],
        },
        Case {
            options: &[
                ("server_replay_extra", "404"),
                ("server_replay_ignore_port", "true"),
                ("server_replay_reuse", "true"),
            ],
            asks: vec![
                Ask::get(format!("http://127.0.0.1:{elsewhere}/page?x=1&t=1")),
                Ask::get(format!("http://localhost:{elsewhere}/page?x=1&t=1")),
            ],
            want: vec![Answer(200, page.clone()), Answer(404, body(""))],
        },
        Case {
            options: &[
                ("server_replay_extra", "404"),
                ("server_replay_use_headers", "Accept-Language"),
                ("server_replay_reuse", "true"),
            ],
            asks: vec![
                page_ask().header("x-other", "1"),
                Ask::get(url("/page?x=1&t=1")).header("accept-language", "de"),
                Ask::get(url("/page?x=1&t=1")),
            ],
            want: vec![
                Answer(200, page.clone()),
                Answer(404, body("")),
                Answer(404, body("")),
            ],
        },
        Case {
            options: &[
                ("server_replay_extra", "404"),
                ("server_replay_ignore_payload_params", "csrf"),
                ("server_replay_reuse", "true"),
            ],
            // An ignored field may be missing too.
            asks: vec![
                form(b"user=ann&csrf=2"),
                form(b"user=ann"),
                form(b"user=bob&csrf=1"),
            ],
            want: vec![
                Answer(200, body("user=ann&csrf=1")),
                Answer(200, body("user=ann&csrf=1")),
                Answer(404, body("")),
            ],
        },
        Case {
            options: &[
                ("server_replay_extra", "404"),
                ("server_replay_ignore_payload_params", "csrf"),
                ("server_replay_reuse", "true"),
            ],
            asks: vec![
                multipart(url("/echo"), MULTIPART_ANN_2),
                multipart(url("/echo"), MULTIPART_BOB_1),
            ],
            want: vec![
                Answer(200, String::from_utf8(MULTIPART_ANN_1.to_vec()).unwrap()),
                Answer(404, body("")),
            ],
        },
        // Inside intercepted HTTPS: forwarded (to the origin, which echoes) unless
        // it matches; with the content ignored, it matches.
        Case {
            options: &[],
            asks: vec![
                Ask::post(tls_url.clone(), b"other"),
                Ask::post(tls_url.clone(), b"secret"),
            ],
            want: vec![Answer(200, body("other")), Answer(200, body("secret"))],
        },
        Case {
            options: &[("server_replay_ignore_content", "true")],
            asks: vec![
                Ask::post(tls_url.clone(), b"other"),
                Ask::post(tls_url.clone(), b"more"),
            ],
            want: vec![Answer(200, body("secret")), Answer(200, body("more"))],
        },
    ];

    // mitmproxy's former name of reuse: mitmdump 11 logs an error for it at start, and
    // so exits (its start refuses any error logged); ours takes it, with a warning.
    let nopop = Case {
        options: &[("server_replay_nopop", "true")],
        asks: vec![page_ask(), page_ask()],
        want: vec![Answer(200, page.clone()), Answer(200, page.clone())],
    };
    let refused = tokio::process::Command::new(&mitmdump)
        .args(["--listen-host", "127.0.0.1", "--listen-port", "0", "-S"])
        .arg(&file)
        .args(["--set", "server_replay_nopop=true", "--set"])
        .arg(format!(
            "confdir={}",
            dir.path().join("mitmproxy").display()
        ))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let refused = tokio::time::timeout(PATIENCE, refused)
        .await
        .unwrap()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("server_replay_nopop has been renamed"),
        "{said}"
    );
    let ours = with_ours(&file, nopop.options, async |client| {
        send(&client, &nopop.asks).await
    })
    .await;
    assert_eq!(ours, nopop.want);

    for case in cases {
        let what = format!("{:?}", case.options);
        let run = async |client: reqwest::Client| send(&client, &case.asks).await;
        let theirs = with_mitmdump(&mitmdump, dir.path(), &file, case.options, run).await;
        let run = async |client: reqwest::Client| send(&client, &case.asks).await;
        let ours = with_ours(&file, case.options, run).await;
        assert_eq!(theirs, case.want, "mitmdump, {what}");
        assert_eq!(ours, case.want, "ours, {what}");
    }

    // server_replay_refresh: on by default, each date moved forward by the time since
    // the response was recorded; off, the dates served as recorded.
    let refreshed = |options: &'static [(&'static str, &'static str)]| {
        let (mitmdump, file, dated_url) = (&mitmdump, &file, &dated_url);
        let dir = dir.path();
        async move {
            let sent_from = SystemTime::now();
            let theirs = with_mitmdump(mitmdump, dir, file, options, async |client| {
                dated(&client, dated_url).await
            })
            .await;
            let ours = with_ours(file, options, async |client| {
                dated(&client, dated_url).await
            })
            .await;
            let sent_until = SystemTime::now();
            (theirs, ours, sent_from, sent_until)
        }
    };
    let (theirs, ours, sent_from, sent_until) = refreshed(&[]).await;
    let least = secs(sent_from.duration_since(recorded_until).unwrap()) - 1;
    let most = secs(sent_until.duration_since(recorded_from).unwrap()) + 1;
    // What the cases above took makes a refresh show.
    assert!(least >= 2, "too little time passed to see a refresh");
    for (who, dates) in [("mitmdump", &theirs), ("ours", &ours)] {
        for date in dates {
            let moved = seconds_after_old_date(date);
            assert!(
                (least..=most).contains(&moved),
                "{who}: {date}, {moved} s not in {least}..={most} s"
            );
        }
    }
    let (theirs, ours, _, _) = refreshed(&[("server_replay_refresh", "false")]).await;
    assert_eq!(theirs, [OLD_DATE; 4], "mitmdump");
    assert_eq!(ours, [OLD_DATE; 4], "ours");
}

/// The date of the origin's `/dated`.
const OLD_DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

fn secs(d: std::time::Duration) -> i64 {
    d.as_secs() as i64
}

/// How many seconds `date` (IMF-fixdate, within the month of [`OLD_DATE`]) is after
/// it.
fn seconds_after_old_date(date: &str) -> i64 {
    let words: Vec<&str> = date.split_whitespace().collect();
    assert_eq!(words.len(), 6, "{date}");
    assert_eq!(&words[2..4], ["Nov", "1994"], "{date}");
    assert_eq!(words[5], "GMT", "{date}");
    let day: i64 = words[1].parse().unwrap();
    let hms: Vec<i64> = words[4].split(':').map(|n| n.parse().unwrap()).collect();
    let at = |day: i64, h: i64, m: i64, s: i64| ((day * 24 + h) * 60 + m) * 60 + s;
    at(day, hms[0], hms[1], hms[2]) - at(6, 8, 49, 37)
}

/// The dates `url`'s response has through `proxy`: `Date`, `Expires`,
/// `Last-Modified`, and the `Expires` of its cookie.
async fn dated(client: &reqwest::Client, url: &str) -> Vec<String> {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    let mut dates: Vec<String> = ["date", "expires", "last-modified"]
        .iter()
        .map(|name| headers.get(*name).unwrap().to_str().unwrap().to_string())
        .collect();
    let cookie = headers.get("set-cookie").unwrap().to_str().unwrap();
    let expires = cookie
        .split(';')
        .find_map(|a| {
            let (name, value) = a.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("expires")
                .then(|| value.trim())
        })
        .unwrap_or_else(|| panic!("no Expires in {cookie}"));
    dates.push(expires.to_string());
    dates
}

/// `run` with the URL of mitmdump `-S file` with `options` (`--set NAME=VALUE`).
async fn with_mitmdump<T>(
    mitmdump: &Path,
    dir: &Path,
    file: &Path,
    options: &[(&str, &str)],
    run: impl AsyncFnOnce(reqwest::Client) -> T,
) -> T {
    let mut args = vec!["-S".to_string(), file.display().to_string()];
    for (name, value) in options {
        args.push("--set".into());
        args.push(format!("{name}={value}"));
    }
    let dump = Mitmdump::start_args(mitmdump, dir, args.iter().map(OsStr::new)).await;
    let got = run(client(dump.addr(), Mitmdump::roots(dir))).await;
    dump.stop().await;
    got
}

/// `run` with the URL of ours with `--server-replay file` and the flags named as
/// `options` (`server_replay_x=true` → `--server-replay-x`, else
/// `--server-replay-x VALUE`).
async fn with_ours<T>(
    file: &Path,
    options: &[(&str, &str)],
    run: impl AsyncFnOnce(reqwest::Client) -> T,
) -> T {
    let mut args = vec!["--server-replay".to_string(), file.display().to_string()];
    for (name, value) in options {
        args.push(format!("--{}", name.replace('_', "-")));
        if *value != "true" {
            args.push(value.to_string());
        }
    }
    let proxy = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ChildProxy::start_with(&args)
    })
    .await
    .unwrap();
    let roots = roots_of(&proxy.ca_pem);
    run(client(proxy.addr, roots)).await
}

/// Roots that trust only the CA certificate in `pem`.
fn roots_of(pem: &Path) -> rustls::RootCertStore {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(pem).unwrap())
        .unwrap();
    roots
}
