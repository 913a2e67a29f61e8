//! WebSocket flows in captures: their messages are kept, written in HAR (Chrome's
//! `_webSocketMessages`) and in mitmproxy's flow files (which mitmproxy reads), and
//! read back.

use crate::common;

use mitm::capture::{flows::FlowWriter, har::HarFile, Capture};

use common::*;

#[tokio::test]
async fn websocket_messages_are_saved_in_both_formats() {
    let origin = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let har = dir.path().join("ws.har");
    let flows = dir.path().join("ws.flows");
    let (proxy, capture) = start_capturing(
        Capture::builder()
            .sink(Box::new(HarFile::create(&har).unwrap()))
            .sink(Box::new(FlowWriter::create(&flows).unwrap())),
    )
    .await;
    let ws = websocket_echoed(proxy.addr, origin.port()).await;
    close_websocket(ws).await;

    // The flow is kept when its connection ends.
    tokio::time::timeout(PATIENCE, capture.wait_written(1))
        .await
        .expect("the WebSocket flow was never written");
    for path in [&har, &flows] {
        let records = mitm::capture::read(path).unwrap();
        assert_eq!(records.len(), 1, "{}", path.display());
        let messages = records[0].websocket.as_ref().expect("a WebSocket flow");
        assert_echoed(messages, &path.display().to_string());
    }

    // mitmproxy reads the messages from our flow file.
    let Some(python) = venv_tool("python") else {
        require_tool(false, "mitmproxy (Python)", VENV_INSTALL);
        return;
    };
    let script = "import sys\nfrom mitmproxy.io import FlowReader\n\
                  f = next(FlowReader(open(sys.argv[1], 'rb')).stream())\n\
                  print([(m.from_client, m.content) for m in f.websocket.messages])";
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(&flows)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r"[(True, b'hello'), (False, b'hello'), (True, b'\x00\xff'), (False, b'\x00\xff')]"
    );
}
