//! mitmproxy's CA, used as it is: a confdir the real mitmdump created is given to our
//! proxy (`--confdir`, or found in `~/.mitmproxy` while we have no CA of our own), a
//! device that trusts mitmproxy's CA (curl with `--cacert mitmproxy-ca-cert.pem`)
//! accepts our leaves, and nothing in the confdir changes by a byte. Skipped where
//! mitmdump, curl or openssl is missing (a failure instead with `MITM_REQUIRE_TOOLS=1`).

// clippy's allow-unwrap-in-tests covers `#[test]` functions only, not their helpers.
#![allow(clippy::unwrap_used)]

use crate::common;
use crate::flows::Mitmdump;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use mitm::tls::ca::{CaSource, MITMPROXY_CA_CERT_FILE, MITMPROXY_CA_FILE};
use mitm::CertificateAuthority;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::parse_x509_certificate;

/// mitmdump of the test venv, curl and openssl, or `None` (the test skips).
fn tools() -> Option<PathBuf> {
    let dump = venv_tool("mitmdump");
    let present = require_tool(dump.is_some(), "mitmdump", VENV_INSTALL)
        && require_tool(have("curl"), "curl", "apt-get install curl")
        && require_tool(have_openssl(), "openssl", "apt-get install openssl");
    present.then_some(dump?)
}

fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A confdir made by the real mitmdump: started with it (it makes its CA on start), and
/// stopped once it listens. Returns the directory holding `mitmproxy/`.
async fn mitmdump_confdir(mitmdump: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("unused.flows");
    Mitmdump::start(mitmdump, dir.path(), &flows)
        .await
        .stop()
        .await;
    let confdir = dir.path().join("mitmproxy");
    assert!(confdir.join(MITMPROXY_CA_FILE).is_file());
    (dir, confdir)
}

/// Every file in `dir` (not recursing) by name, with its SHA-256 and mode.
fn snapshot(dir: &Path) -> BTreeMap<String, ([u8; 32], u32)> {
    use std::os::unix::fs::PermissionsExt;
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            let hash = sha256(&fs::read(entry.path()).unwrap());
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, (hash, meta.permissions().mode()))
        })
        .collect()
}

/// `curl --cacert CACERT -x http://PROXY URL`: a device trusting only `cacert`.
/// Returns the body; fails the test if curl fails.
fn curl_trusting(cacert: &Path, proxy: SocketAddr, url: &str) -> String {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "30"])
        .arg("--cacert")
        .arg(cacert)
        .arg("-x")
        .arg(format!("http://{proxy}"))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl --cacert {} through {proxy} to {url} failed: {}",
        cacert.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The environment of a user whose home is `home`: our default CA directory is under
/// it too, so neither the real `~/.mitmproxy` nor the real data directory is seen.
fn home_env(home: &Path) -> Vec<(&'static str, &OsStr)> {
    vec![
        ("HOME", home.as_os_str()),
        ("XDG_DATA_HOME", OsStr::new("")),
    ]
}

/// `mitm ARGS` with the environment `env`: (success, stdout, stderr).
fn mitm(args: &[&OsStr], env: &[(&str, &OsStr)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mitm"));
    command.args(args).stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The key identifier extensions of a DER certificate: (SKI, AKI).
fn key_ids(der: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let (_, cert) = parse_x509_certificate(der).unwrap();
    let (mut ski, mut aki) = (None, None);
    for ext in cert.iter_extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => ski = Some(id.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(id) => {
                aki = id.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => {}
        }
    }
    (ski, aki)
}

/// The SHA-256 fingerprint openssl gives the certificate in `file`.
fn openssl_fingerprint(file: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.trim().rsplit('=').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_trusting_mitmproxys_ca_accept_our_leaves() {
    let Some(mitmdump) = tools() else { return };
    let (_dir, confdir) = mitmdump_confdir(&mitmdump).await;
    let before = snapshot(&confdir);
    let cacert = confdir.join(MITMPROXY_CA_CERT_FILE);
    let origin = start_tls_origin().await;
    let url = format!("https://localhost:{}/hello", origin.port());

    // The library: mitmproxy's file as mitmdump wrote it (PKCS#1 RSA key, then the
    // certificate) loads, and leaves chain to it by name and key identifier.
    let ca = CertificateAuthority::load_mitmproxy(&confdir).unwrap();
    assert_eq!(ca.source(), &CaSource::Mitmproxy(confdir.clone()));
    assert_eq!(ca.cert_path(), Some(cacert.as_path()));
    assert_eq!(ca.fingerprint_sha256(), openssl_fingerprint(&cacert));
    let (root_ski, _) = key_ids(ca.cert_der());
    let (_, leaf_aki) = key_ids(&ca.issue_leaf("localhost").unwrap());
    assert!(root_ski.is_some(), "mitmproxy's root has an SKI");
    assert_eq!(leaf_aki, root_ski, "a leaf's AKI is mitmproxy's SKI");

    // --confdir DIR, with an empty home: mitmproxy's CA, said so in the banner.
    let empty_home = tempfile::tempdir().unwrap();
    let args = [OsStr::new("--confdir"), confdir.as_os_str()];
    let proxy = ChildProxy::start_env(args, &home_env(empty_home.path()));
    let banner = proxy.banner.join("\n");
    assert!(banner.contains("CA in use: mitmproxy's CA"), "{banner}");
    assert!(banner.contains(&confdir.display().to_string()), "{banner}");
    assert_eq!(proxy.ca_pem, cacert, "{banner}");
    curl_trusting(&cacert, proxy.addr, &url);
    drop(proxy);
    assert_eq!(fs::read_dir(empty_home.path()).unwrap().count(), 0);

    // The default rule: a home holding mitmproxy's CA and none of ours.
    let home = tempfile::tempdir().unwrap();
    let theirs = home.path().join(".mitmproxy");
    fs::create_dir(&theirs).unwrap();
    for name in before.keys() {
        fs::copy(confdir.join(name), theirs.join(name)).unwrap();
    }
    let copied = snapshot(&theirs);
    let env = home_env(home.path());
    let proxy = ChildProxy::start_env(Vec::<&OsStr>::new(), &env);
    let banner = proxy.banner.join("\n");
    assert!(banner.contains("CA in use: mitmproxy's CA"), "{banner}");
    assert!(banner.contains(&theirs.display().to_string()), "{banner}");
    curl_trusting(&theirs.join(MITMPROXY_CA_CERT_FILE), proxy.addr, &url);
    drop(proxy);
    let ours = home.path().join(".local/share/mitm");
    assert!(
        !ours.exists(),
        "no CA of ours is made while mitmproxy's is used"
    );

    // `mitm ca` says which CA, from where, its subject and fingerprint.
    let (ok, out, err) = mitm(&[OsStr::new("ca")], &env);
    assert!(ok, "{err}");
    assert!(out.contains("CA in use: mitmproxy's CA"), "{out}");
    assert!(
        out.contains("CA subject: CN=mitmproxy, O=mitmproxy"),
        "{out}"
    );
    let cert_line = format!(
        "CA certificate: {}",
        theirs.join(MITMPROXY_CA_CERT_FILE).display()
    );
    assert!(out.contains(&cert_line), "{out}");
    assert!(out.contains(&ca.fingerprint_sha256()), "{out}");

    // Once ours exists, ours wins, and the banner says so.
    let own = CertificateAuthority::init(&ours).unwrap();
    let proxy = ChildProxy::start_env(Vec::<&OsStr>::new(), &env);
    let banner = proxy.banner.join("\n");
    assert!(banner.contains("CA in use: mitm's own CA"), "{banner}");
    assert_eq!(proxy.ca_pem, ours.join(mitm::tls::ca::CA_CERT_FILE));
    curl_trusting(&proxy.ca_pem, proxy.addr, &url);
    drop(proxy);
    let (ok, out, err) = mitm(&[OsStr::new("ca")], &env);
    assert!(ok && out.contains("CA in use: mitm's own CA"), "{out}{err}");
    assert!(out.contains(&own.fingerprint_sha256()), "{out}");

    assert!(
        origin.requests().len() >= 3,
        "every request reached the origin"
    );
    assert_eq!(
        snapshot(&confdir),
        before,
        "mitmdump's confdir is unchanged"
    );
    assert_eq!(snapshot(&theirs), copied, "~/.mitmproxy is unchanged");
}

#[test]
fn a_damaged_or_unreadable_mitmproxy_ca_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let env = home_env(home.path());
    let confdir = home.path().join(".mitmproxy");
    fs::create_dir(&confdir).unwrap();
    let file = confdir.join(MITMPROXY_CA_FILE);
    let check = |args: &[&OsStr], what: &str| {
        let (ok, out, err) = mitm(args, &env);
        assert!(!ok, "{what}: mitm succeeded: {out}");
        assert!(err.contains(&file.display().to_string()), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
    };
    let ca = [OsStr::new("ca")];
    let with_confdir = [
        OsStr::new("ca"),
        OsStr::new("--confdir"),
        confdir.as_os_str(),
    ];
    let proxy = [
        OsStr::new("--port"),
        OsStr::new("0"),
        OsStr::new("--confdir"),
        confdir.as_os_str(),
    ];

    // Missing: with --confdir an error; by default simply not used.
    check(&with_confdir, "missing");
    // Damaged: truncated in the middle of its key, or holding only a certificate.
    let good = CertificateAuthority::generate().unwrap();
    fs::write(&file, "-----BEGIN RSA PRIVATE KEY-----\nMIIEow").unwrap();
    for args in [&ca[..], &with_confdir, &proxy] {
        check(args, "truncated");
    }
    fs::write(&file, good.cert_pem()).unwrap();
    check(&ca, "no key");
    // Unreadable: a directory where the file should be.
    fs::remove_file(&file).unwrap();
    fs::create_dir(&file).unwrap();
    check(&with_confdir, "a directory");
    check(&proxy, "a directory");
    assert!(
        !home.path().join(".local").exists(),
        "no CA of ours is made in its place"
    );
}
