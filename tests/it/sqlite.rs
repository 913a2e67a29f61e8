//! The SQLite store through a real proxy, its database then queried with the real
//! `sqlite3` command-line tool.

use crate::common;

use std::path::Path;

use common::*;
use mitm::capture::sqlite::{read_sqlite, SqliteReader, SqliteStore};
use mitm::capture::{Capture, Filter};

/// Runs `sqlite3 -separator | DB SQL`, returning its stdout; fails with its output if
/// it fails.
fn sqlite3(db: &Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .args(["-batch", "-separator", "|"])
        .arg(db)
        .arg(sql)
        .output()
        .expect("cannot run sqlite3");
    assert!(
        out.status.success(),
        "sqlite3 {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_flows_are_rows_sqlite3_reads() {
    if !require_tool(have("sqlite3"), "sqlite3", "apt-get install sqlite3") {
        return;
    }
    let origin = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.sqlite");
    let (proxy, capture) =
        start_capturing(Capture::builder().sink(Box::new(SqliteStore::create(&path).unwrap())))
            .await;
    let client = client_via(&proxy);
    let base = format!("http://127.0.0.1:{}", origin.port());
    let get = client.get(format!("{base}/one?x=1")).send().await.unwrap();
    assert_eq!(get.status(), 200);
    let post = client
        .post(format!("{base}/echo"))
        .body("posted body")
        .send()
        .await
        .unwrap();
    assert_eq!(post.text().await.unwrap(), "posted body");
    let missing = client
        .get(format!("{base}/status/404"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Written counts a flow once flushed, which commits it.
    tokio::time::timeout(PATIENCE, capture.wait_written(3))
        .await
        .expect("3 flows never written");
    assert_eq!(
        read_sqlite(&path).map_or(0, |r| r.len()),
        3,
        "3 flows never committed"
    );

    // While the capture still has the database open: sqlite3 reads what it committed.
    let rows = sqlite3(
        &path,
        "SELECT method, host, path, status FROM flows ORDER BY id",
    );
    assert_eq!(
        rows,
        "GET|127.0.0.1|/one?x=1|200\n\
         POST|127.0.0.1|/echo|200\n\
         GET|127.0.0.1|/status/404|404\n"
    );
    assert_eq!(sqlite3(&path, "PRAGMA journal_mode").trim(), "wal");
    assert_eq!(
        sqlite3(&path, "PRAGMA user_version").trim(),
        mitm::capture::sqlite::SCHEMA_VERSION.to_string()
    );
    let posted = sqlite3(
        &path,
        "SELECT f.request_size, CAST(b.data AS TEXT) FROM flows f \
         JOIN bodies b ON b.flow_id = f.id AND b.side = 'request'",
    );
    assert_eq!(posted, "11|posted body\n");
    // A "last N flows of a host" query walks the flows newest first (by the index
    // on `started_at`) and stops at N; `count(*)` reads that index too.
    let plan = sqlite3(
        &path,
        "EXPLAIN QUERY PLAN SELECT id FROM flows WHERE host = 'x' \
         ORDER BY started_at DESC LIMIT 10",
    );
    assert!(plan.contains("flows_started_at"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    let plan = sqlite3(&path, "EXPLAIN QUERY PLAN SELECT count(*) FROM flows");
    assert!(plan.contains("flows_started_at"), "{plan}");

    capture.finish();
    drop(proxy);
    let records = mitm::capture::read(&path).unwrap();
    assert_eq!(records.len(), 3);
    let echo = &records[1];
    assert_eq!(echo.request.url(), format!("{base}/echo"));
    assert_eq!(&echo.request.body.data[..], b"posted body");
    let response = echo.response.as_ref().unwrap();
    assert_eq!(&response.body.data[..], b"posted body");
    assert!(!response.body.truncated);
    assert!(echo.timings.response_end.is_some());
    assert_eq!(sqlite3(&path, "SELECT count(*) FROM flows").trim(), "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_are_rows_of_the_messages_table() {
    if !require_tool(have("sqlite3"), "sqlite3", "apt-get install sqlite3") {
        return;
    }
    let origin = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ws.sqlite");
    let (proxy, capture) =
        start_capturing(Capture::builder().sink(Box::new(SqliteStore::create(&path).unwrap())))
            .await;
    let ws = websocket_echoed(proxy.addr, origin.port()).await;
    close_websocket(ws).await;
    tokio::time::timeout(PATIENCE, capture.wait_written(1))
        .await
        .expect("the WebSocket flow was never written");

    // While the capture has the database open.
    assert_eq!(
        sqlite3(&path, "SELECT id, path, status, websocket FROM flows"),
        "1|/chat|101|1\n"
    );
    assert_eq!(
        sqlite3(
            &path,
            "SELECT flow_id, seq, from_client, text, hex(data), at > 0 FROM messages \
             ORDER BY flow_id, seq"
        ),
        "1|0|1|1|68656C6C6F|1\n\
         1|1|0|1|68656C6C6F|1\n\
         1|2|1|0|00FF|1\n\
         1|3|0|0|00FF|1\n"
    );
    // A reader beside the writer finds it, messages and all.
    let reader = SqliteReader::open(&path).unwrap();
    assert_eq!(reader.count().unwrap(), 1);
    let websocket = Filter::parse("~websocket & ~u /chat").unwrap();
    let found = reader.query(Some(&websocket), None, 10).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, 1);
    let messages = found[0].1.websocket.as_ref().expect("a WebSocket flow");
    assert_echoed(messages, "the flow SqliteReader found");

    capture.finish();
    drop(proxy);
    assert_eq!(read_sqlite(&path).unwrap(), vec![found[0].1.clone()]);
}
