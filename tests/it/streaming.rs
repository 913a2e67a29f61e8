//! Damaged capture files on the command line: `mitm read` prints the flows before the
//! damage, then the error, and fails, as `mitmdump -nr` does with the same file; `mitm
//! convert` keeps the flows before it. (`mitm web` of a damaged file: `web.rs`.)

use std::path::Path;
use std::process::{Command, Output};

/// A capture at `path` (`.har`, or any format `mitm convert` makes from HAR) of `n`
/// flows to `/flow-0` … `/flow-{n-1}`, each with a small body.
fn capture(path: &Path, n: usize) {
    let mut har = String::from(r#"{"log":{"version":"1.2","entries":["#);
    for i in 0..n {
        if i > 0 {
            har.push(',');
        }
        har.push_str(&format!(
            r#"{{"startedDateTime":"2026-01-01T00:00:00.{i:03}Z","request":{{"method":"GET","url":"http://a.localhost:8080/flow-{i}","httpVersion":"HTTP/1.1","headers":[{{"name":"Host","value":"a.localhost:8080"}}]}},"response":{{"status":200,"statusText":"OK","httpVersion":"HTTP/1.1","headers":[],"content":{{"size":6,"mimeType":"text/plain","text":"body {i}"}}}}}}"#
        ));
    }
    har.push_str("]}}");
    if path.extension().is_some_and(|e| e == "har") {
        std::fs::write(path, har).unwrap();
        return;
    }
    let source = path.with_extension("source.har");
    std::fs::write(&source, har).unwrap();
    let out = mitm(&[
        "-q".as_ref(),
        "convert".as_ref(),
        source.as_ref(),
        path.as_ref(),
    ]);
    assert!(out.status.success(), "{out:?}");
}

fn mitm(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mitm"))
        .args(args)
        .output()
        .expect("cannot run mitm")
}

/// The paths of the flows `mitm read` printed, one per line.
fn paths(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| {
            let at = line.find("/flow-").unwrap_or_else(|| panic!("{line}"));
            line[at..].split_whitespace().next().unwrap().to_string()
        })
        .collect()
}

#[test]
fn a_truncated_capture_prints_the_flows_before_the_damage_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["flows", "har"] {
        let file = dir.path().join(format!("cut.{format}"));
        capture(&file, 10);
        let whole = std::fs::read(&file).unwrap();
        let out = mitm(&["read".as_ref(), file.as_ref()]);
        assert!(out.status.success(), "{format}: {out:?}");
        assert_eq!(paths(&out.stdout).len(), 10, "{format}");

        // Cut in the middle of the seventh flow.
        let needle = b"/flow-6";
        let at = whole
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        std::fs::write(&file, &whole[..at + 3]).unwrap();
        let out = mitm(&["read".as_ref(), file.as_ref()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{format}: {stderr}");
        let want: Vec<String> = (0..6).map(|i| format!("/flow-{i}")).collect();
        assert_eq!(paths(&out.stdout), want, "{format}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!(
                "mitm: error: invalid capture file {}: ",
                file.display()
            )),
            "{format}: {stderr}"
        );
        assert!(first.contains("at byte"), "{format}: {stderr}");
        assert!(first.contains("truncated"), "{format}: {stderr}");

        // `convert` writes the flows before the damage, whole, and fails.
        let converted = dir.path().join(format!("from-{format}.sqlite"));
        let out = mitm(&["convert".as_ref(), file.as_ref(), converted.as_ref()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{format}: {stderr}");
        assert!(
            stderr.contains("holds the 6 flows before the damage"),
            "{format}: {stderr}"
        );
        let out = mitm(&["read".as_ref(), converted.as_ref()]);
        assert!(out.status.success(), "{format}: {out:?}");
        assert_eq!(paths(&out.stdout), want, "{format}");
    }
}

#[test]
fn a_har_with_pages_after_its_entries_and_damage_after_them_reads_them_all_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.har");
    capture(&file, 3);
    let text = std::fs::read_to_string(&file).unwrap();
    // `"pages"` after the entries, its array never closed.
    let end = text.rfind("]}}").unwrap();
    let damaged = format!("{}], \"pages\": [{{\"id\": \"p\"}}}}}}", &text[..end]);
    std::fs::write(&file, damaged).unwrap();
    let out = mitm(&["read".as_ref(), file.as_ref()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(paths(&out.stdout), ["/flow-0", "/flow-1", "/flow-2"]);
    assert!(stderr.contains("'}' where ']' belongs"), "{stderr}");
}

#[test]
fn a_truncated_flow_file_gives_as_many_flows_as_mitmdump_loads_from_it() {
    let mitmdump = crate::common::venv_tool("mitmdump");
    if !crate::common::require_tool(mitmdump.is_some(), "mitmdump", crate::common::VENV_INSTALL) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cut.flows");
    capture(&file, 10);
    let whole = std::fs::read(&file).unwrap();
    let at = whole.windows(7).position(|w| w == b"/flow-4").unwrap();
    std::fs::write(&file, &whole[..at + 3]).unwrap();

    let ours = mitm(&["read".as_ref(), file.as_ref()]);
    assert_eq!(ours.status.code(), Some(1));
    assert_eq!(paths(&ours.stdout).len(), 4);
    let theirs = Command::new(mitmdump.unwrap())
        .arg("-nr")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!theirs.status.success());
    // mitmdump says how many flows it loaded before the damage.
    let said = String::from_utf8_lossy(&theirs.stdout).to_string()
        + &String::from_utf8_lossy(&theirs.stderr);
    assert!(
        said.contains("Flow file corrupted - loaded 4 flows"),
        "{said}"
    );
}
