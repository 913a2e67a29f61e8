//! The proxy as curl sees it: plain HTTP and HTTPS through CONNECT, trusting only the
//! proxy's CA. Skipped, with the reason printed, where curl is not installed (a failure
//! instead with `MITM_REQUIRE_TOOLS=1`).

use crate::common;

use common::*;
use tokio::process::Command;

/// Runs curl through `proxy` with `args`; returns stdout, failing the test on a non-zero
/// exit.
async fn curl(proxy: &TestProxy, args: &[&str]) -> Vec<u8> {
    curl_success(
        Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--fail",
                "--proxy",
                &proxy.url(),
            ])
            .args(args),
        args,
    )
    .await
    .stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_plain_get_and_post_byte_for_byte() {
    if !require_tool(have("curl"), "curl", "apt-get install curl") {
        return;
    }
    let origin = start_origin().await;
    let proxy = start_proxy(|b| b).await;
    let got = curl(
        &proxy,
        &[&format!("http://127.0.0.1:{}/bytes/2000000", origin.port())],
    )
    .await;
    assert_same(&got, &pattern(2_000_000));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.bin");
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 256) as u8).collect();
    std::fs::write(&file, &body).unwrap();
    let got = curl(
        &proxy,
        &[
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("http://127.0.0.1:{}/echo", origin.port()),
        ],
    )
    .await;
    assert_same(&got, &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_https_through_connect_trusting_only_the_proxy_ca() {
    if !require_tool(have("curl"), "curl", "apt-get install curl") {
        return;
    }
    let origin = start_tls_origin().await;
    let proxy = start_proxy(|b| b).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("proxy-ca.pem");
    std::fs::write(&ca, proxy.ca.cert_pem()).unwrap();
    let ca = ca.display().to_string();

    let got = curl(
        &proxy,
        &[
            "--cacert",
            &ca,
            &format!("https://localhost:{}/bytes/1500000", origin.port()),
        ],
    )
    .await;
    assert_same(&got, &pattern(1_500_000));

    let got = curl(
        &proxy,
        &[
            "--cacert",
            &ca,
            "--data-binary",
            "posted over TLS",
            &format!("https://localhost:{}/echo", origin.port()),
        ],
    )
    .await;
    assert_eq!(got, b"posted over TLS");
}
