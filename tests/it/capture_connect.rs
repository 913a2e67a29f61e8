//! CONNECT flows in captures, as mitmproxy and browsers keep them: left out of flow
//! files and HAR (unless asked for), kept in SQLite stores as what they are (the
//! authority, no scheme or path), shown so by `mitm read`, skipped by `mitm replay`;
//! and files with none of them that `mitmdump -nr` reads without a complaint.

use crate::common;

use std::ffi::OsStr;
use std::process::Command;

use common::*;

/// Runs `program ARGS`, returning its stdout and stderr; fails the test when it fails.
fn run(program: impl AsRef<OsStr>, args: &[&OsStr]) -> (String, String) {
    let program = program.as_ref();
    let out = Command::new(program).args(args).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{program:?} {args:?} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

fn mitm(args: &[&OsStr]) -> (String, String) {
    run(env!("CARGO_BIN_EXE_mitm"), args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_are_kept_in_sqlite_and_left_out_of_files_other_tools_read() {
    let origin = start_origin().await;
    let tls = start_tls_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let [flows, har, db] = ["x.flows", "x.har", "x.sqlite"].map(|f| dir.path().join(f));
    let args: Vec<String> = [&flows, &har, &db]
        .iter()
        .flat_map(|p| ["--save".to_string(), p.to_str().unwrap().to_string()])
        .collect();
    let proxy = tokio::task::spawn_blocking(move || {
        ChildProxy::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let plain = format!("http://127.0.0.1:{}/plain", origin.port());
    let secure = format!("https://localhost:{}/secure", tls.port());
    for url in [&plain, &secure] {
        let proxy_url = format!("http://{}", proxy.addr);
        let ca = proxy.ca_pem.to_str().unwrap().to_string();
        let target = url.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("curl")
                .args(["--silent", "--show-error", "--fail", "--max-time", "30"])
                .args(["--proxy", &proxy_url, "--cacert", &ca, &target])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The store keeps the CONNECT as what it is.
    let stored = wait_for_flows(&db, 3).await;
    let authority = format!("localhost:{}", tls.port());
    let connect = stored
        .iter()
        .find(|r| r.request.method == "CONNECT")
        .expect("the store keeps the CONNECT");
    assert_eq!(connect.request.url(), authority);
    assert_eq!(
        (
            connect.request.scheme.as_str(),
            connect.request.path.as_str()
        ),
        ("", "")
    );
    // The files leave it out.
    let urls = |records: &[mitm::capture::Record]| -> Vec<String> {
        records.iter().map(|r| r.request.url()).collect()
    };
    assert_eq!(
        urls(&wait_for_flows(&flows, 2).await),
        [plain.clone(), secure.clone()]
    );
    assert_eq!(
        urls(&wait_for_flows(&har, 2).await),
        [plain.clone(), secure.clone()]
    );
    drop(proxy);

    // `mitm read` names the CONNECT by its authority; `--curl` says it is no request;
    // mitmproxy's filters see its URL as mitmproxy's do.
    let (lines, _) = mitm(&["read".as_ref(), db.as_os_str()]);
    assert!(
        lines.contains(&format!(" CONNECT {authority} 200")),
        "{lines}"
    );
    let (curl, _) = mitm(&["read".as_ref(), db.as_os_str(), "--curl".as_ref()]);
    assert!(
        curl.contains(&format!("# CONNECT {authority}: a tunnel")),
        "{curl}"
    );
    let (only, _) = mitm(&[
        "read".as_ref(),
        db.as_os_str(),
        "--filter".as_ref(),
        format!("~u ^{authority}$").as_ref(),
    ]);
    assert_eq!(only.lines().count(), 1, "{only}");

    // `mitm replay` skips it (it used to send the CONNECT to the origin).
    let ca_dir = dir.path().join("ca");
    let (replayed, _) = mitm(&[
        "--log".as_ref(),
        "none".as_ref(),
        "--ca-dir".as_ref(),
        ca_dir.as_os_str(),
        "replay".as_ref(),
        db.as_os_str(),
        "--filter".as_ref(),
        "~m CONNECT".as_ref(),
    ]);
    assert_eq!(replayed.trim(), format!("skipped CONNECT {authority}"));

    // `mitm convert` leaves it out of a flow file, or keeps it when asked.
    let [left, kept] = ["left.flows", "kept.flows"].map(|f| dir.path().join(f));
    mitm(&["convert".as_ref(), db.as_os_str(), left.as_os_str()]);
    mitm(&[
        "convert".as_ref(),
        db.as_os_str(),
        kept.as_os_str(),
        "--keep-connects".as_ref(),
    ]);
    assert_eq!(mitm::capture::read(&left).unwrap().len(), 2);
    let kept = mitm::capture::read(&kept).unwrap();
    assert_eq!(
        urls(&kept),
        [plain.clone(), authority.clone(), secure.clone()]
    );

    // mitmproxy reads both files, every flow, with no complaint.
    let mitmdump = venv_tool("mitmdump");
    if !require_tool(mitmdump.is_some(), "mitmdump", VENV_INSTALL) {
        return;
    }
    let mitmdump = mitmdump.unwrap();
    let confdir = dir.path().join("mitmproxy");
    for file in [&flows, &har] {
        let (printed, stderr) = run(
            &mitmdump,
            &[
                "-nr".as_ref(),
                file.as_os_str(),
                "--set".as_ref(),
                "flow_detail=1".as_ref(),
                "--set".as_ref(),
                format!("confdir={}", confdir.display()).as_ref(),
            ],
        );
        for url in [&plain, &secure] {
            assert!(printed.contains(&format!("GET {url}")), "{printed}");
        }
        let complaints: Vec<&str> = printed
            .lines()
            .chain(stderr.lines())
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("error") || l.contains("warn") || l.contains("could not")
            })
            .collect();
        assert!(
            complaints.is_empty(),
            "mitmdump -nr {}: {complaints:?}",
            file.display()
        );
    }
}
