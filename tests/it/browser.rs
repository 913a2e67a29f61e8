//! Headless Chromium through the proxy, trusting only the proxy's CA: the strictest
//! client we can run here. Skipped, with the reason, where Chromium or NSS's `certutil`
//! (to make Chromium trust the CA) is missing; a failure instead with
//! `MITM_REQUIRE_TOOLS=1`.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A fresh NSS database in `home` (where Chromium on Linux looks) trusting `ca_pem`.
fn trust_in_nss(home: &Path, ca_pem: &Path) -> bool {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let db = format!("sql:{}", db.display());
    let made = Command::new("certutil")
        .args(["-d", &db, "-N", "--empty-password"])
        .status()
        .is_ok_and(|s| s.success());
    made && Command::new("certutil")
        .args(["-d", &db, "-A", "-t", "C,,", "-n", "mitm-test"])
        .arg("-i")
        .arg(ca_pem)
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_accepts_the_leaves_with_the_ca_as_only_added_anchor() {
    let chromium = find_chromium();
    if !require_tool(chromium.is_some(), "Chromium", "apt-get install chromium") {
        return;
    }
    let certutil = Command::new("certutil").arg("-H").output().is_ok();
    if !require_tool(certutil, "certutil", "apt-get install libnss3-tools") {
        return;
    }
    let chromium = chromium.unwrap();
    let origin = start_tls_origin().await;
    let proxy = start_proxy(|b| b).await;
    let home = tempfile::tempdir().unwrap();
    let ca_pem = home.path().join("ca.pem");
    std::fs::write(&ca_pem, proxy.ca.cert_pem()).unwrap();
    assert!(
        trust_in_nss(home.path(), &ca_pem),
        "certutil could not import the CA"
    );

    let url = format!("https://localhost:{}/page", origin.port());
    // The page goes to a file, not a pipe: Chromium's helper processes may keep a pipe
    // open after the browser itself has exited.
    let dom_file = home.path().join("dom.html");
    let log_file = home.path().join("chromium.log");
    let status = tokio::time::timeout(
        PATIENCE * 3,
        tokio::process::Command::new(chromium)
            .env("HOME", home.path())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                // Chromium skips proxies for loopback unless told not to.
                "--proxy-bypass-list=<-loopback>",
            ])
            .arg(format!("--proxy-server=http://{}", proxy.addr))
            .arg(format!(
                "--user-data-dir={}",
                home.path().join("profile").display()
            ))
            .arg("--dump-dom")
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&dom_file).unwrap())
            .stderr(std::fs::File::create(&log_file).unwrap())
            .kill_on_drop(true)
            .status(),
    )
    .await;
    let status = match status {
        Ok(status) => status.unwrap(),
        Err(_) => panic!(
            "Chromium took too long; its log:\n{}",
            std::fs::read_to_string(&log_file).unwrap_or_default()
        ),
    };
    let dom = std::fs::read_to_string(&dom_file).unwrap_or_default();
    assert!(
        dom.contains("hello from origin: GET /page"),
        "Chromium ({status}) did not show the page:\n{dom}\n{}",
        std::fs::read_to_string(&log_file).unwrap_or_default()
    );
}
