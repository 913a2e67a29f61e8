//! The `mitm` command as a user runs it: start, serve, stop on SIGINT; clear one-line
//! errors for a taken port or a broken CA.

use crate::common;

use std::path::Path;
use std::process::Stdio;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn mitm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mitm"));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Reads the child's stdout until the banner gives the address and CA path.
async fn banner(child: &mut Child) -> (String, String) {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut addr, mut ca) = (None, None);
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(a) = line.strip_prefix("mitm listening on ") {
                // `http://ADDR (mode)`
                addr = Some(a.split(' ').next().unwrap_or_default().to_string());
            }
            if let Some(p) = line.strip_prefix("CA certificate: ") {
                ca = Some(p.to_string());
            }
            if addr.is_some() && ca.is_some() {
                break;
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("mitm printed no banner");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (addr.expect("address line"), ca.expect("CA line"))
}

fn sigint(child: &Child) {
    let pid = child.id().unwrap().to_string();
    let ok = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_serves_and_stops_on_sigint_with_exit_code_0() {
    let dir = tempfile::tempdir().unwrap();
    let origin = start_origin().await;
    let mut child = mitm()
        .args(["--port", "0", "--ca-dir"])
        .arg(dir.path())
        .spawn()
        .unwrap();
    let (addr, ca) = banner(&mut child).await;
    assert!(addr.starts_with("http://127.0.0.1:"), "{addr}");
    assert_eq!(Path::new(&ca), dir.path().join("mitm.pem"));

    let ca = mitm::CertificateAuthority::load(&ca, dir.path().join("mitm.key")).unwrap();
    let client = client_for(&addr, &ca);
    let url = format!("http://127.0.0.1:{}/cli", origin.port());
    let got = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert_eq!(got, "hello from origin: GET /cli");
    drop(client);

    sigint(&child);
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("mitm did not stop on SIGINT")
        .unwrap();
    assert_eq!(status.code(), Some(0));

    // A second start reuses the same CA.
    let first = std::fs::read_to_string(dir.path().join("mitm.pem")).unwrap();
    let mut child = mitm()
        .args(["--port", "0", "--ca-dir"])
        .arg(dir.path())
        .spawn()
        .unwrap();
    banner(&mut child).await;
    sigint(&child);
    child.wait().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("mitm.pem")).unwrap(),
        first
    );
}

/// Runs mitm expecting it to fail; returns its stderr.
async fn failing(args: &[&str], ca_dir: &Path) -> String {
    let out = tokio::time::timeout(
        PATIENCE,
        mitm().args(args).arg("--ca-dir").arg(ca_dir).output(),
    )
    .await
    .expect("mitm did not exit")
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let err = failing(&["--port", &port], dir.path()).await;
    assert!(err.contains("failed to listen on 127.0.0.1:"), "{err}");
    assert!(err.to_lowercase().contains("in use"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_ca_is_a_one_line_error_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mitm.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("mitm.key"), "not a key").unwrap();
    let err = failing(&["--port", "0"], dir.path()).await;
    assert!(err.contains("mitm.pem"), "{err}");
    let kept = std::fs::read_to_string(dir.path().join("mitm.pem")).unwrap();
    assert_eq!(kept, "not a certificate");
}

#[tokio::test]
async fn help_explains_every_flag() {
    let out = mitm().arg("--help").output().await.unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--host",
        "--port",
        "--ca-dir",
        "--upstream-ca",
        "--insecure",
        "--log",
        "--verbose",
        "--quiet",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_ca_lives_in_the_user_data_directory() {
    let home = tempfile::tempdir().unwrap();
    let mut child = mitm()
        .args(["--port", "0"])
        .env("HOME", home.path())
        .env_remove("XDG_DATA_HOME")
        .spawn()
        .unwrap();
    let (_, ca) = banner(&mut child).await;
    sigint(&child);
    child.wait().await.unwrap();
    let expected = home.path().join(".local/share/mitm/mitm.pem");
    assert_eq!(Path::new(&ca), expected);
    assert!(expected.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_beyond_loopback_prints_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    for (host, warned) in [("0.0.0.0", true), ("127.0.0.1", false)] {
        let mut child = mitm()
            .args(["--host", host, "--port", "0", "-q", "--ca-dir"])
            .arg(dir.path())
            .spawn()
            .unwrap();
        banner(&mut child).await;
        sigint(&child);
        let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
            .await
            .expect("mitm did not stop on SIGINT")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.contains("reachable from the network"),
            warned,
            "{host}: {stderr}"
        );
    }
}

/// An embedder that turns the default features off builds the library without the
/// command's crates (argument parsing, `anyhow`, the log subscriber).
#[test]
fn the_library_without_default_features_depends_on_no_cli_crate() {
    let root = env!("CARGO_MANIFEST_DIR");
    let tree = |features: &[&str]| {
        let out = std::process::Command::new(env!("CARGO"))
            .current_dir(root)
            .args(["tree", "-p", "mitm", "-e", "normal", "--prefix", "none"])
            .args(features)
            .output()
            .expect("cargo tree runs");
        assert!(
            out.status.success(),
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect::<std::collections::BTreeSet<String>>()
    };
    let cli_only = ["clap", "anyhow", "tracing-subscriber"];
    let lean = tree(&["--no-default-features"]);
    for name in cli_only {
        assert!(
            !lean.contains(name),
            "{name} is built without the cli feature"
        );
    }
    // The check itself sees those crates where they are: with the default features.
    let full = tree(&[]);
    for name in cli_only {
        assert!(full.contains(name), "{name} missing from the default build");
    }
}

/// Each subcommand's help lists the options it takes, and only those.
#[tokio::test]
async fn replay_help_lists_the_options_of_replay() {
    let out = mitm().args(["replay", "--help"]).output().await.unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--filter",
        "--upstream-ca",
        "--insecure",
        "--connect-timeout",
        "--response-timeout",
        "--save",
        "--ca-dir",
    ] {
        assert!(
            help.contains(flag),
            "{flag} missing from replay --help:\n{help}"
        );
    }
    for flag in ["--web-host", "--web-port", "--mode", "--max-head"] {
        assert!(!help.contains(flag), "{flag} in replay --help:\n{help}");
    }
}

/// An option given before and after a subcommand with two values is a usage error
/// that says what to do.
#[tokio::test]
async fn an_option_given_twice_around_a_subcommand_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = mitm()
        .args(["--save", "a.har", "replay", "f.flows", "--save", "b.har"])
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--save is given both before and after `replay`"),
        "{stderr}"
    );
    assert!(stderr.contains("give it on one side only"), "{stderr}");
    assert!(!dir.path().join("a.har").exists() && !dir.path().join("b.har").exists());
}
