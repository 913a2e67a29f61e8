//! A small Chrome DevTools Protocol client for the browser tests: starts headless
//! Chromium on a debugging port of its choice, opens a page, and runs JavaScript in it.
//! Waits are on conditions with a deadline ([`PATIENCE`]), never fixed sleeps.
#![allow(dead_code)] // each test file uses a different part of this module

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::PATIENCE;

type Replies = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// A headless Chromium and its DevTools connection; killed when dropped.
pub struct Browser {
    child: tokio::process::Child,
    out: mpsc::UnboundedSender<Message>,
    replies: Replies,
    next: AtomicU64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Browser {
    /// Starts `chromium` headless with a fresh profile and connects to it.
    pub async fn start(chromium: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,800",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start Chromium");
        // Chromium says where its DevTools listen on stderr; the rest of stderr is
        // drained (and kept for a failure message) so it never blocks on a full pipe.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = Vec::new();
        let endpoint = tokio::time::timeout(PATIENCE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return Some(url.trim().to_string());
                }
                said.push(line);
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("Chromium did not open its DevTools port: {said:?}"));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let hostport = endpoint
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .expect("a ws:// DevTools URL");
        let tcp = tokio::net::TcpStream::connect(hostport).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(endpoint.as_str(), tcp)
            .await
            .expect("DevTools WebSocket handshake");
        let (mut sink, mut stream) = ws.split();
        let (out, mut outgoing) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = outgoing.recv().await {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
        });
        let replies: Replies = Arc::default();
        let waiting = replies.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                // Events have no id; only replies are waited for.
                let Some(id) = v.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                let reply = match v.get("error") {
                    Some(e) => Err(e.to_string()),
                    None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
                };
                if let Some(tx) = waiting.lock().unwrap().remove(&id) {
                    let _ = tx.send(reply);
                }
            }
        });
        Browser {
            child,
            out,
            replies,
            next: AtomicU64::new(1),
            _profile: profile,
        }
    }

    /// Calls `method` (in `session`, if given) and returns its result.
    pub async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut request = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            request["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.replies.lock().unwrap().insert(id, tx);
        self.out
            .send(Message::Text(request.to_string().into()))
            .expect("DevTools connection closed");
        tokio::time::timeout(PATIENCE, rx)
            .await
            .unwrap_or_else(|_| panic!("no answer to {method} in time"))
            .expect("DevTools connection closed")
            .unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }

    /// A new tab, attached.
    pub async fn page(&self) -> Page<'_> {
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        let page = Page {
            browser: self,
            session: attached["sessionId"].as_str().unwrap().to_string(),
        };
        // Scripts added for new documents run only once the page domain is on.
        page.call("Page.enable", json!({})).await;
        page
    }
}

/// One tab of a [`Browser`].
pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

impl Page<'_> {
    /// Calls a method in this tab.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.browser.call(Some(&self.session), method, params).await
    }

    /// Opens `url` and waits until the document has loaded.
    pub async fn navigate(&self, url: &str) {
        let done = self.call("Page.navigate", json!({"url": url})).await;
        assert!(done.get("errorText").is_none(), "navigate to {url}: {done}");
        self.wait_for("document.readyState === 'complete'", "the page to load")
            .await;
    }

    /// The value of the JavaScript `expression` (promises awaited); an exception
    /// is an `Err` with its description.
    pub async fn try_eval(&self, expression: &str) -> Result<Value, String> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(e["exception"]["description"]
                .as_str()
                .map_or_else(|| e.to_string(), str::to_string));
        }
        Ok(r["result"]["value"].clone())
    }

    /// The value of `expression`; panics on an exception.
    pub async fn eval(&self, expression: &str) -> Value {
        self.try_eval(expression)
            .await
            .unwrap_or_else(|e| panic!("{expression}: {e}"))
    }

    /// Waits until `expression` is true in the page, failing after [`PATIENCE`] with
    /// `what` and the page's text.
    pub async fn wait_for(&self, expression: &str, what: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if self.try_eval(expression).await == Ok(Value::Bool(true)) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let text = self
                    .try_eval("document.body ? document.body.innerText : ''")
                    .await
                    .unwrap_or_default();
                panic!("waited in vain for {what} ({expression}); the page shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `text` into the focused element, as a keyboard would.
    pub async fn type_text(&self, text: &str) {
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// Presses one key (e.g. `"j"`) on the focused element.
    pub async fn press(&self, key: &str) {
        for kind in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": key, "text": key}),
            )
            .await;
        }
    }

    /// A PNG of the visible page.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    }
}
