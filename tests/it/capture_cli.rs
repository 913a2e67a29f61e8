//! Capture from the command line: `--save FILE` while the proxy runs (surviving a
//! SIGKILL), then `mitm read` and `mitm convert` on what it saved.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Runs `mitm ARGS`, returning its stdout; fails the test when it fails.
fn mitm(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mitm"))
        .args(args)
        .output()
        .expect("cannot run mitm");
    assert!(
        out.status.success(),
        "mitm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_flows_survive_a_sigkill_and_read_back() {
    let origin = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("capture.flows");
    let har = dir.path().join("capture.har");
    let db = dir.path().join("capture.sqlite");
    let save = saved.to_str().unwrap().to_string();
    let save_har = har.to_str().unwrap().to_string();
    let save_db = db.to_str().unwrap().to_string();
    let mut proxy = tokio::task::spawn_blocking(move || {
        ChildProxy::start_with(&["--save", &save, "--save", &save_har, "--save", &save_db])
    })
    .await
    .unwrap();
    let mut wire = Wire::connect(proxy.addr).await;
    let port = origin.port();
    for i in 0..5 {
        wire.send(format!(
            "GET http://127.0.0.1:{port}/saved/{i} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        ))
        .await;
        assert_eq!(wire.response_to("GET").await.status, 200);
    }
    // Every finished flow is in the file; then the proxy dies without a chance to
    // close it.
    wait_for_flows(&saved, 5).await;
    wait_for_flows(&har, 5).await;
    wait_for_flows(&db, 5).await;
    proxy.child.kill().unwrap();
    proxy.child.wait().unwrap();
    let records = mitm::capture::read(&saved).unwrap();
    assert_eq!(records.len(), 5);
    // The HAR is a whole JSON document, with every flow.
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&har).unwrap()).expect("the HAR is valid JSON");
    assert_eq!(document["log"]["entries"].as_array().unwrap().len(), 5);
    let from_har = mitm::capture::read(&har).unwrap();
    let urls = |rs: &[mitm::capture::Record]| -> Vec<String> {
        rs.iter().map(|r| r.request.url()).collect()
    };
    assert_eq!(urls(&from_har), urls(&records));
    // The SQLite store, its WAL never checkpointed by the killed writer, holds them all.
    let from_db = mitm::capture::read(&db).unwrap();
    assert_eq!(urls(&from_db), urls(&records));
    let bodies = |rs: &[mitm::capture::Record]| -> Vec<Vec<u8>> {
        rs.iter()
            .map(|r| r.response.as_ref().unwrap().body.data.to_vec())
            .collect()
    };
    assert_eq!(bodies(&from_db), bodies(&records));

    // `mitm convert`: mitmproxy's format to HAR, and the flows read back the same.
    let converted = dir.path().join("converted.har");
    mitm(&["convert".as_ref(), saved.as_os_str(), converted.as_os_str()]);
    assert_eq!(
        urls(&mitm::capture::read(&converted).unwrap()),
        urls(&records)
    );
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.request.path, format!("/saved/{i}"));
        let response = record.response.as_ref().unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(
            &response.body.data[..],
            format!("hello from origin: GET /saved/{i}").as_bytes()
        );
    }

    // `mitm read`: a line per flow; `--curl`: a command per request.
    let lines = mitm(&[std::ffi::OsStr::new("read"), saved.as_os_str()]);
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    let url = format!("http://127.0.0.1:{}/saved/0", origin.port());
    assert!(lines[0].contains(&format!("GET {url} 200")), "{}", lines[0]);
    let curl = mitm(&["read".as_ref(), saved.as_os_str(), "--curl".as_ref()]);
    assert!(curl.starts_with(&format!("curl '{url}'")), "{curl}");
    // `--filter`: mitmproxy's filter language.
    let some = mitm(&[
        "read".as_ref(),
        saved.as_os_str(),
        "--filter".as_ref(),
        "~u saved/[13] & ~c 200".as_ref(),
    ]);
    assert_eq!(some.lines().count(), 2, "{some}");
    let out = Command::new(env!("CARGO_BIN_EXE_mitm"))
        .arg("read")
        .arg(&saved)
        .args(["--filter", "~x nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown operator ~x"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_filter_keeps_only_the_matching_flows() {
    let origin = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("some.flows");
    let save = saved.to_str().unwrap().to_string();
    let proxy = tokio::task::spawn_blocking(move || {
        ChildProxy::start_with(&["--save", &save, "--save-filter", "~u /keep"])
    })
    .await
    .unwrap();
    let mut wire = Wire::connect(proxy.addr).await;
    let port = origin.port();
    for path in ["/drop", "/keep", "/drop", "/keep/too", "/last/keep"] {
        wire.send(format!(
            "GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        ))
        .await;
        assert_eq!(wire.response_to("GET").await.status, 200);
    }
    let kept = wait_for_flows(&saved, 3).await;
    let paths: Vec<&str> = kept.iter().map(|r| r.request.path.as_str()).collect();
    assert_eq!(paths, ["/keep", "/keep/too", "/last/keep"]);
}

#[test]
fn saving_never_overwrites_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("kept.flows");
    std::fs::write(&saved, b"precious").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mitm"))
        .args(["--port", "0", "--ca-dir"])
        .arg(dir.path())
        .arg("--save")
        .arg(&saved)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kept.flows"), "{stderr}");
    assert_eq!(std::fs::read(&saved).unwrap(), b"precious");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_replay_answers_from_a_capture_without_the_origin() {
    let origin = start_origin().await;
    let port = origin.port();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("recorded.har");
    let save = saved.to_str().unwrap().to_string();
    let recorder = tokio::task::spawn_blocking(move || ChildProxy::start_with(&["--save", &save]))
        .await
        .unwrap();
    let request = |path: &str| {
        format!("GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
    };
    let mut wire = Wire::connect(recorder.addr).await;
    for path in ["/one", "/two"] {
        wire.send(request(path)).await;
        assert_eq!(wire.response_to("GET").await.status, 200);
    }
    wait_for_flows(&saved, 2).await;
    drop(wire);
    drop(recorder);
    // The origin is gone: only the recording can answer now.
    drop(origin);

    let replay = saved.to_str().unwrap().to_string();
    let answered = dir.path().join("answered.flows");
    let save = answered.to_str().unwrap().to_string();
    let proxy = tokio::task::spawn_blocking(move || {
        ChildProxy::start_with(&[
            "--server-replay",
            &replay,
            "--server-replay-extra",
            "404",
            "--save",
            &save,
        ])
    })
    .await
    .unwrap();
    let mut wire = Wire::connect(proxy.addr).await;
    for path in ["/two", "/one"] {
        wire.send(request(path)).await;
        let reply = wire.response_to("GET").await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(
            String::from_utf8_lossy(&reply.body),
            format!("hello from origin: GET {path}")
        );
    }
    // Each recording serves once; then, as for anything never recorded: 404.
    for path in ["/one", "/three"] {
        wire.send(request(path)).await;
        assert_eq!(wire.response_to("GET").await.status, 404, "{path}");
    }
    // The flows it answered from the recording are marked replayed responses, as
    // mitmproxy marks them; the 404s are not.
    let flows = wait_for_flows(&answered, 4).await;
    let marks: Vec<(String, Option<&str>)> = flows
        .iter()
        .map(|r| (r.request.path.clone(), r.annotations.is_replay.as_deref()))
        .collect();
    assert_eq!(
        marks,
        [
            ("/two".to_string(), Some("response")),
            ("/one".to_string(), Some("response")),
            ("/one".to_string(), None),
            ("/three".to_string(), None),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_replay_sends_recorded_requests_again_and_says_what_failed() {
    let origin = start_origin().await;
    let port = origin.port();
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("recorded.flows");
    let save = saved.to_str().unwrap().to_string();
    let recorder = tokio::task::spawn_blocking(move || ChildProxy::start_with(&["--save", &save]))
        .await
        .unwrap();
    let mut wire = Wire::connect(recorder.addr).await;
    wire.send(format!(
        "POST http://127.0.0.1:{port}/echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 5\r\n\r\nagain"
    ))
    .await;
    assert_eq!(wire.response_to("POST").await.status, 200);
    wait_for_flows(&saved, 1).await;
    drop(wire);
    drop(recorder);

    let replayed = dir.path().join("replayed.har");
    let replay = |save: Option<&Path>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mitm"));
        command
            .args(["--log", "none", "-q", "--ca-dir"])
            .arg(dir.path().join("ca"));
        if let Some(save) = save {
            command.arg("--save").arg(save);
        }
        command.arg("replay").arg(&saved);
        command.output()
    };
    let out = replay(Some(&replayed)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!("200 POST http://127.0.0.1:{port}/echo (was 200)")
    );
    // The origin got it twice, body and all, and the replayed flow was saved.
    let seen = origin.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].body, b"again");
    let again = mitm::capture::read(&replayed).unwrap();
    assert_eq!(&again[0].response.as_ref().unwrap().body.data[..], b"again");

    // With the origin gone, the replay says so and fails.
    drop(origin);
    let out = replay(None).await.unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("ERR POST"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 1 requests failed"));
}

/// A HAR file of one flow per `(method, url)`, each answered 200 when recorded.
fn write_har(path: &Path, flows: &[(&str, &str)]) {
    let entries: Vec<String> = flows
        .iter()
        .map(|(method, url)| {
            format!(
                r#"{{"startedDateTime":"2026-01-01T00:00:00.000Z","time":1,"request":{{"method":"{method}","url":"{url}","httpVersion":"HTTP/1.1","headers":[],"queryString":[],"cookies":[],"headersSize":-1,"bodySize":0}},"response":{{"status":200,"statusText":"OK","httpVersion":"HTTP/1.1","headers":[],"cookies":[],"content":{{"size":2,"mimeType":"text/plain","text":"ok"}},"redirectURL":"","headersSize":-1,"bodySize":2}},"cache":{{}},"timings":{{"send":0,"wait":1,"receive":0}}}}"#
            )
        })
        .collect();
    std::fs::write(
        path,
        format!(
            r#"{{"log":{{"version":"1.2","creator":{{"name":"test","version":"1"}},"entries":[{}]}}}}"#,
            entries.join(",")
        ),
    )
    .unwrap();
}

/// Issue #19's command line: `mitm replay FILE --filter EXPR --upstream-ca CA --save
/// out.har`, every option after the subcommand, each of them taking effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_replay_takes_its_options_after_the_subcommand() {
    let origin = start_tls_origin().await;
    let port = origin.port();
    let dir = tempfile::tempdir().unwrap();
    let recorded = dir.path().join("recorded.har");
    let get = format!("https://localhost:{port}/again");
    let post = format!("https://localhost:{port}/not-again");
    write_har(&recorded, &[("GET", &get), ("POST", &post)]);
    let saved = dir.path().join("out.har");
    let replay = |upstream_ca: bool| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mitm"));
        command
            .arg("replay")
            .arg(&recorded)
            .args(["--filter", "~m GET"]);
        if upstream_ca {
            command.arg("--upstream-ca").arg(origin_ca_file());
        }
        command
            .arg("--save")
            .arg(&saved)
            .args(["--log", "none", "-q", "--ca-dir"])
            .arg(dir.path().join("ca"));
        command.output()
    };

    // Without the origin's CA, its certificate is refused (the file is made anew below).
    let out = replay(false).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.starts_with(&format!("ERR GET {get}")), "{stdout}");
    assert!(origin.requests().is_empty());
    std::fs::remove_file(&saved).unwrap();

    let out = replay(true).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Only the GET went again (--filter), verified with --upstream-ca, and was saved.
    assert_eq!(stdout.trim(), format!("200 GET {get} (was 200)"));
    let seen = origin.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    let again = mitm::capture::read(&saved).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].request.url(), get);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_replay_gives_up_on_a_silent_origin_after_its_timeouts() {
    let origin = start_silent_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let recorded = dir.path().join("recorded.har");
    let url = format!("http://127.0.0.1:{}/never", origin.port());
    write_har(&recorded, &[("GET", &url)]);
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mitm"))
        .args(["--log", "none", "-q", "--ca-dir"])
        .arg(dir.path().join("ca"))
        .arg("replay")
        .arg(&recorded)
        .args(["--connect-timeout", "0.5", "--response-timeout", "1"])
        .output()
        .await
        .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    // The sender obeys --response-timeout itself, and says which origin was silent.
    let origin_addr = format!("127.0.0.1:{}", origin.port());
    assert!(
        stdout.starts_with(&format!(
            "ERR GET {url}: upstream {origin_addr} did not answer within 1s"
        )),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 of 1 requests failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not the library's 120 s.
    assert!(took < Duration::from_secs(30), "{took:?}");
}
