"""Imports a HAR file with headless Chromium's own DevTools HAR importer, the code behind
the Network panel's "Import HAR file", and prints what it made of it as JSON: one object
per request (URL, method, status, MIME type, decoded content, request body, WebSocket
frames).

    python3 devtools_har.py CHROMIUM FILE.har

Run by tests/har.rs. Talks to Chromium over --remote-debugging-pipe (the DevTools
protocol as NUL-separated JSON on file descriptors 3 and 4), so it needs nothing beyond
Python's standard library. Exits non-zero, with the reason on stderr, when Chromium
cannot load DevTools or the importer rejects the file.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile

# The whole run, Chromium's start included; the test waits a little longer.
DEADLINE_SECS = 60

DEVTOOLS = "devtools://devtools/bundled/devtools_app.html"

# Runs inside the DevTools page: parses the document as the Network panel does, and
# turns each request into plain data.
IMPORT = """(async (text) => {
  const har = await import('./models/har/har.js');
  const root = new har.HARFormat.HARRoot(JSON.parse(text));
  const requests = har.Importer.Importer.requestsFromHARLog(root.log);
  const out = [];
  for (const r of requests) {
    const content = await r.requestContentData();
    const frames = r.frames().map((f) => ({type: f.type, opCode: f.opCode, text: f.text}));
    out.push({
      url: r.url(),
      method: r.requestMethod,
      status: r.statusCode,
      mimeType: r.mimeType,
      content: content && content.text !== undefined ? content.text : null,
      requestBody: await r.requestFormData(),
      frames,
    });
  }
  return JSON.stringify(out);
})"""


class Chromium:
    def __init__(self, chromium):
        self.profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        to_chromium = os.pipe()
        from_chromium = os.pipe()
        # Chromium reads commands on fd 3 and writes answers on fd 4.
        high = [os.dup(f) for f in (*to_chromium, *from_chromium)]
        for f in (*to_chromium, *from_chromium):
            os.close(f)
        read_cmd, write_cmd, read_out, write_out = high
        os.dup2(read_cmd, 3)
        os.dup2(write_out, 4)
        self.proc = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                "--user-data-dir=" + self.profile.name,
                "about:blank",
            ],
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for f in (3, 4, read_cmd, write_out):
            os.close(f)
        self.commands = os.fdopen(write_cmd, "wb", buffering=0)
        self.answers = os.fdopen(read_out, "rb", buffering=0)
        self.buffer = b""
        self.next_id = 0

    def message(self):
        while b"\0" not in self.buffer:
            chunk = self.answers.read(1 << 16)
            if not chunk:
                raise SystemExit("Chromium closed the DevTools pipe")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(line)

    def send(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.commands.write(json.dumps(msg).encode() + b"\0")
        while True:
            m = self.message()
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise SystemExit(f"{method} failed: {m['error']}")
                return m["result"]

    def wait_for(self, event, session):
        while True:
            m = self.message()
            if m.get("method") == event and m.get("sessionId") == session:
                return m["params"]

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.profile.cleanup()


def main():
    chromium_path, har_path = sys.argv[1], sys.argv[2]
    with open(har_path, encoding="utf-8") as f:
        text = f.read()
    signal.alarm(DEADLINE_SECS)
    chromium = Chromium(chromium_path)
    try:
        target = chromium.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = chromium.send(
            "Target.attachToTarget", {"targetId": target, "flatten": True}
        )["sessionId"]
        chromium.send("Page.enable", {}, session)
        chromium.send("Page.navigate", {"url": DEVTOOLS}, session)
        chromium.wait_for("Page.loadEventFired", session)
        result = chromium.send(
            "Runtime.evaluate",
            {
                "expression": IMPORT + "(" + json.dumps(text) + ")",
                "awaitPromise": True,
                "returnByValue": True,
            },
            session,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            reason = details.get("exception", {}).get("description") or details
            raise SystemExit(f"DevTools could not import the HAR: {reason}")
        print(result["result"]["value"])
    finally:
        chromium.close()


if __name__ == "__main__":
    main()
