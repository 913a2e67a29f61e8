"""mitmproxy addon scripts (python/tests/addons/) under real mitmdump 11 and under our
engine (``mitm.addons.Addons``, run by programs/addons_runner.py), with the same curl
requests: the client and the origin must see the same thing under both."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

from conftest import PATIENCE, Origin, Package, ProxyProcess, TestCA, require_tool, wait_for

ADDONS = Path(__file__).parent / "addons"
KINDS = ("mitmdump", "ours")


def _mitmdump() -> Optional[Path]:
    venv = os.environ.get("MITM_TEST_VENV")
    if not venv:
        return None
    path = Path(venv) / "bin" / "mitmdump"
    return path if path.exists() else None


@pytest.fixture
def mitmdump() -> Tuple[Package, Path]:
    """mitmproxy 11's mitmdump (from ``MITM_TEST_VENV``)."""
    path = _mitmdump()
    require_tool(
        path is not None,
        "mitmdump (mitmproxy 11)",
        "set MITM_TEST_VENV to a venv with mitmproxy 11 (scripts/py-venvs.sh makes one)",
    )
    assert path is not None
    return Package("mitmdump", str(path.parent / "python")), path


Start = Callable[..., ProxyProcess]


@pytest.fixture
def proxy(spawn: Callable[..., ProxyProcess], ours: Package, mitmdump: Tuple[Package, Path], tmp_path: Path) -> Start:
    """``proxy(kind, script, *sets)``: mitmdump or ours running ``script`` (a name in
    addons/ or a path) with ``--set`` ``sets`` ("name=value"), listening."""

    def start(
        kind: str, script: "str | Path", *sets: str, listen: bool = True, ca: Optional[Path] = None, save: Optional[Path] = None
    ) -> ProxyProcess:
        path = Path(script) if os.sep in str(script) else ADDONS / script
        options = [x for s in sets for x in ("--set", s)]
        if kind == "mitmdump":
            package, binary = mitmdump
            confdir = tmp_path / "mitmdump-conf"
            return spawn(
                package,
                str(binary),
                "--set",
                f"confdir={confdir}",
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
                "0",
                "-s",
                str(path),
                *(["--set", f"ssl_verify_upstream_trusted_ca={ca}"] if ca else []),
                *(["--set", f"save_stream_file={save}"] if save else []),
                *options,
                listen=listen,
            )
        saving = ["--save", str(save)] if save else []
        return spawn(ours, "addons_runner.py", "--ca-dir", str(tmp_path / "ours-ca"), *saving, *options, str(path), listen=listen)

    return start


class Fetched:
    """What curl got: exit status, status code, headers (lower-case names, repeated
    ones joined by ", "), body."""

    def __init__(self, exit: int, status: int, headers: Dict[str, str], body: bytes, stderr: str) -> None:
        self.exit, self.status, self.headers, self.body, self.stderr = exit, status, headers, body, stderr

    def view(self, *names: str) -> Tuple[int, int, Dict[str, Optional[str]], bytes]:
        """What to compare: exit, status, the ``names`` headers, body."""
        return (self.exit, self.status, {n: self.headers.get(n) for n in names}, self.body)

    def __repr__(self) -> str:
        return f"Fetched({self.exit}, {self.status}, {self.headers}, {self.body!r})"


def fetch(proxy: ProxyProcess, url: str, *args: str, timeout: float = PATIENCE) -> Fetched:
    """``curl`` of ``url`` through ``proxy``."""
    with tempfile.NamedTemporaryFile() as head:
        cmd = ["curl", "-sS", "--max-time", str(int(timeout)), "-D", head.name, "-o", "-", "-w", "\n%{http_code}"]
        cmd += ["--proxy", f"http://{proxy.address}", *args, url]
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
        done = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout + 10)
        raw = Path(head.name).read_bytes().decode(errors="replace")
    body, _, status = done.stdout.rpartition(b"\n")
    headers: Dict[str, str] = {}
    for line in raw.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return Fetched(done.returncode, int(status or 0), headers, body, done.stderr.decode(errors="replace"))


def each_kind(start: Callable[[str], ProxyProcess], scenario: Callable[[str, ProxyProcess], Any]) -> Dict[str, Any]:
    """Runs ``scenario(kind, proxy)`` against mitmdump then ours, each proxy made by
    ``start(kind)`` and stopped after; a failure shows that proxy's output."""
    out = {}
    for kind in KINDS:
        p = start(kind)
        try:
            out[kind] = scenario(kind, p)
        except (Exception, pytest.fail.Exception) as e:
            raise AssertionError(f"{kind} failed ({e!r}); its output:\n{p.output()}") from e
        finally:
            p.stop()
    return out


def both(proxy: Start, script: str, scenario: Callable[[ProxyProcess], Any], *sets: str) -> Dict[str, Any]:
    """Runs ``scenario`` against mitmdump then ours, each running ``script``."""
    return each_kind(lambda kind: proxy(kind, script, *sets), lambda _kind, p: scenario(p))


def seen(origin: Origin, *names: str) -> List[Tuple[str, str, Dict[str, Optional[str]], bytes]]:
    """The origin's requests: method, path, the ``names`` headers, body."""
    out = []
    for method, path, headers, body in origin.requests:
        lower = {k.lower(): v for k, v in headers.items()}
        out.append((method, path, {n: lower.get(n) for n in names}, body))
    return out


def addon_lines(output: str) -> List[str]:
    """The ``ADDON ...`` lines a script logged, without the loggers' prefixes."""
    return [m.group(0).strip() for m in re.finditer(r"ADDON [^\n]*", output)]


# -- the flow's request -----------------------------------------------------------------


def test_request_change(proxy: Start, origin: Origin) -> None:
    def scenario(p: ProxyProcess) -> Any:
        origin.requests.clear()
        got = [
            fetch(p, origin.url("/rewrite/a?x=1&drop=2"), "-H", "x-remove-me: 1", "-H", "Cookie: c1=one"),
            fetch(p, origin.url("/form"), "-d", "a=1&b=two"),
            fetch(p, origin.url("/put"), "-X", "PUT", "-H", "content-type: text/plain", "-d", "hello"),
        ]
        return [g.view() for g in got], seen(
            origin, "x-from-requestheaders", "x-added", "x-multi", "x-remove-me", "cookie", "content-type"
        )

    out = both(proxy, "request_change.py", scenario)
    assert out["ours"] == out["mitmdump"]
    client, at_origin = out["ours"]
    assert all(status == 200 for _, status, _, _ in client)
    assert at_origin[0][1] == "/rewritten/a?x=1&added=q"
    assert at_origin[0][2]["x-added"] == "yes" and at_origin[0][2]["x-remove-me"] is None
    assert at_origin[0][2]["cookie"] == "c1=one; c2=two"
    assert at_origin[1][3] == b"a=1&b=two&extra=e"
    assert at_origin[2][3] == b"HELLO"


def test_request_attributes(proxy: Start, origin: Origin) -> None:
    def scenario(p: ProxyProcess) -> Any:
        origin.requests.clear()
        got = [
            fetch(
                p,
                origin.url("/attrs?a=1&a=2&b="),
                "-H",
                "X-One: 1",
                "-H",
                "X-Two: 2a",
                "-H",
                "X-Two: 2b",
                "-H",
                "Cookie: k=v; k2=v2",
            ),
            fetch(p, origin.url("/json"), "-H", "content-type: application/json", "-d", '{"n": [1, 2]}'),
            fetch(p, origin.url("/form"), "-d", "f=1&g=%20x"),
        ]
        return [json.loads(g.body) for g in got], origin.requests[:]

    out = both(proxy, "request_attrs.py", scenario)
    assert out["ours"][0] == out["mitmdump"][0]
    first, as_json, form = out["ours"][0]
    assert first["query"] == [["a", "1"], ["b", ""]] and first["query_multi"] == ["1", "2"]
    assert first["header_all"] == ["2a", "2b"] and first["cookies"] == [["k", "v"], ["k2", "v2"]]
    assert as_json["json"] == {"n": [1, 2]} and form["form"] == [["f", "1"], ["g", " x"]]
    assert out["ours"][1] == [] == out["mitmdump"][1]  # answered by the script


# -- the flow's response ----------------------------------------------------------------


def test_response_change(proxy: Start, origin: Origin) -> None:
    def scenario(p: ProxyProcess) -> Any:
        return [
            fetch(p, origin.url(path)).view("x-seen", "x-added", "x-from-responseheaders", "x-replaced")
            for path in ("/", "/status", "/replace")
        ]

    out = both(proxy, "response_change.py", scenario)
    assert out["ours"] == out["mitmdump"]
    plain, status, replaced = out["ours"]
    assert plain[3] == b"hello from ORIGIN: GET /" and plain[2]["x-from-responseheaders"] == "200"
    assert json.loads(plain[2]["x-seen"] or "")["reason"] == "OK"
    assert status[1] == 201 and replaced[1] == 418 and replaced[3] == b"replaced"


def test_local_answer_and_kill(proxy: Start, origin: Origin) -> None:
    def scenario(p: ProxyProcess) -> Any:
        origin.requests.clear()
        local = fetch(p, origin.url("/local")).view("x-local", "x-response-hook")
        killed = fetch(p, origin.url("/kill"))
        return local, (killed.exit != 0, killed.status), len(origin.requests)

    out = both(proxy, "local_kill.py", scenario)
    assert out["ours"] == out["mitmdump"]
    assert out["ours"] == ((0, 203, {"x-local": "1", "x-response-hook": "/local"}, b"from the script"), (True, 0), 0)


# -- lifecycle, options, addons lists ---------------------------------------------------


def test_options_and_lifecycle(proxy: Start, origin: Origin) -> None:
    def scenario(p: ProxyProcess) -> Any:
        return fetch(p, origin.url("/")).view("x-events", "x-maybe")

    out = both(proxy, "options_lifecycle.py", scenario, "greeting=hey", "times=2", "shout=true")
    assert out["ours"] == out["mitmdump"]
    assert out["ours"][3] == b"HEYHEY"
    assert out["ours"][2]["x-events"].startswith("load configure:greeting,maybe,shout,times")
    assert out["ours"][2]["x-events"].endswith("running")


def test_unknown_option_is_an_error(proxy: Start) -> None:
    """mitmdump 11 keeps an option no script declares pending, silently; ours says
    so and does not start."""
    p = proxy("ours", "options_lifecycle.py", "nope=1", listen=False)
    assert p.proc.wait(PATIENCE) != 0
    assert "No such option: nope" in p.output()


def test_addons_list(proxy: Start, origin: Origin) -> None:
    def scenario(p: ProxyProcess) -> Any:
        return [fetch(p, origin.url(f"/{i}")).view("x-count", "x-inner") for i in range(3)]

    out = both(proxy, "addon_class.py", scenario)
    assert out["ours"] == out["mitmdump"]
    assert [v[2]["x-count"] for v in out["ours"]] == ["1", "2", "3"]


# -- errors -------------------------------------------------------------------------------


def test_hook_errors_are_logged_and_the_flow_goes_on(proxy: Start, origin: Origin) -> None:
    def scenario(p: ProxyProcess) -> Any:
        origin.requests.clear()
        raised = fetch(p, origin.url("/raise")).view("x-response")
        fine = fetch(p, origin.url("/fine")).view("x-response")
        gone = fetch(p, "http://127.0.0.1:9/gone")
        p.wait_output("ADDON error hook")
        out = p.output()
        return (
            raised,
            fine,
            seen(origin, "x-after"),
            gone.status,
            "boom in request" in out and "boom in response" in out and "Traceback" in out,
            addon_lines(out),
        )

    out = both(proxy, "hook_errors.py", scenario)
    assert out["ours"] == out["mitmdump"]
    raised, fine, at_origin, gone, traced, lines = out["ours"]
    assert raised[1] == 200 and raised[2]["x-response"] is None and fine[2]["x-response"] == "1"
    assert at_origin[0][2]["x-after"] is None and at_origin[1][2]["x-after"] == "1"
    assert gone == 502 and traced and lines == ["ADDON error hook: /gone True"]


def test_a_script_that_fails_to_load_is_reported_and_the_proxy_serves(
    proxy: Start, origin: Origin, tmp_path: Path
) -> None:
    """mitmdump 11 reports the error, then exits ("Error logged during startup");
    ours reports it and serves without the script (as mitmproxy does on a reload)."""
    broken = tmp_path / "broken.py"
    broken.write_text("def request(flow):\n    return (\n")
    theirs = proxy("mitmdump", broken, listen=False)
    assert theirs.proc.wait(PATIENCE) != 0
    assert "SyntaxError" in theirs.output() and "Error logged during startup" in theirs.output()
    p = proxy("ours", broken)
    assert "SyntaxError" in p.output() and "Traceback" in p.output()
    got = fetch(p, origin.url("/"))
    assert (got.status, got.body) == (200, b"hello from origin: GET /")


# -- connections, logging, filters, async -------------------------------------------------


def test_connection_hooks(proxy: Start, origin: Origin) -> None:
    def scenario(p: ProxyProcess) -> Any:
        got = fetch(p, origin.url("/")).view("x-client", "x-server", "x-tls")
        p.wait_output("ADDON client_disconnected")
        return got, addon_lines(p.output())

    out = both(proxy, "connection_hooks.py", scenario)
    assert out["ours"][0] == out["mitmdump"][0]
    assert out["ours"][0][2] == {"x-client": "127.0.0.1", "x-server": f"127.0.0.1:{origin.port}", "x-tls": "False"}
    for kind in KINDS:
        lines = out[kind][1]
        assert lines[0] == "ADDON client_connected 127.0.0.1", (kind, lines)
        assert lines[-1] == "ADDON client_disconnected", (kind, lines)
        assert set(lines) == {
            "ADDON client_connected 127.0.0.1",
            "ADDON server_connect 127.0.0.1",
            "ADDON server_connected 127.0.0.1",
            "ADDON server_disconnected",
            "ADDON client_disconnected",
        }, (kind, lines)


def test_logging(proxy: Start, origin: Origin) -> None:
    def scenario(p: ProxyProcess) -> Any:
        fetch(p, origin.url("/p"))
        p.wait_output("ADDON logging warning /p")
        return sorted(addon_lines(p.output()))

    out = both(proxy, "logging_ctx.py", scenario)
    assert out["ours"] == out["mitmdump"]
    assert len(out["ours"]) == 4


def test_flowfilter(proxy: Start, origin: Origin) -> None:
    def scenario(p: ProxyProcess) -> Any:
        origin.requests.clear()
        got = [
            fetch(p, origin.url("/form"), "-d", "a=1", "-H", "x-flag: on").view("x-answered", "x-q"),
            fetch(p, origin.url("/other")).view("x-answered", "x-q"),
        ]
        return got, seen(origin, "x-post-form", "x-flag-match", "x-answered-early")

    out = both(proxy, "filters.py", scenario)
    assert out["ours"] == out["mitmdump"]
    client, at_origin = out["ours"]
    assert client[0][2] == {"x-answered": "True", "x-q": "False"}
    assert at_origin[0][2] == {"x-post-form": "True", "x-flag-match": "True", "x-answered-early": "False"}
    assert at_origin[1][2] == {"x-post-form": "False", "x-flag-match": "False", "x-answered-early": "False"}


def test_async_and_concurrent_hooks(proxy: Start, origin: Origin) -> None:
    def scenario(p: ProxyProcess) -> Any:
        origin.requests.clear()
        return fetch(p, origin.url("/")).view("x-concurrent"), seen(origin, "x-async")

    out = both(proxy, "async_concurrent.py", scenario)
    assert out["ours"] == out["mitmdump"]
    assert out["ours"][0][2] == {"x-concurrent": "1"} and out["ours"][1][0][2] == {"x-async": "1"}


# -- concurrency --------------------------------------------------------------------------


def _slow_then_fast(p: ProxyProcess, origin: Origin) -> Tuple[float, float, List[int]]:
    """Starts ``/slow`` (its hook sleeps 1 s), then ``/fast`` once the slow one is
    in its hook (it logs so); returns how long each took and their statuses."""
    times: Dict[str, float] = {}
    statuses: List[int] = []

    def get(path: str) -> None:
        start = time.monotonic()
        statuses.append(fetch(p, origin.url(path)).status)
        times[path] = time.monotonic() - start

    slow = threading.Thread(target=get, args=("/slow",))
    slow.start()
    p.wait_output("ADDON slow hook sleeps")  # the slow request is in its hook
    get("/fast")
    slow.join()
    return times["/slow"], times["/fast"], statuses


@pytest.mark.parametrize("script", ["slow_sync.py", "async_concurrent.py", "async_slow.py"])
def test_a_blocking_hook_holds_up_only_its_flow(proxy: Start, origin: Origin, script: str) -> None:
    # mitmdump's figures are recorded, not asserted (a plain sync hook stalls its loop).
    recorded = proxy("mitmdump", script)
    try:
        slow, fast, _ = _slow_then_fast(recorded, origin)
        print(f"mitmdump, {script}: /slow {slow:.2f} s, /fast started while /slow's hook slept took {fast:.2f} s")
    finally:
        recorded.stop()
    p = proxy("ours", script)
    slow, fast, statuses = _slow_then_fast(p, origin)
    print(f"ours, {script}: /slow {slow:.2f} s, /fast started while /slow's hook slept took {fast:.2f} s")
    assert statuses == [200, 200]
    assert slow >= 1.0
    assert fast < 0.6, f"/fast took {fast:.2f} s while /slow's hook slept"


# -- hot reload ---------------------------------------------------------------------------

_VERSION = """\
def request(flow):
    flow.request.headers["x-version"] = "{v}"


def response(flow):
    flow.response.headers["x-version"] = "{v}"
"""


def test_hot_reload_while_traffic_flows(proxy: Start, origin: Origin, tmp_path: Path) -> None:
    script = tmp_path / "versioned.py"
    script.write_text(_VERSION.format(v=1))
    p = proxy("ours", script)
    results: List[Tuple[float, int, Optional[str]]] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            got = fetch(p, origin.url("/"))
            results.append((time.monotonic(), got.status, got.headers.get("x-version")))

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        wait_for("version 1", lambda: any(v == "1" for _, _, v in results))

        def changed_to(text: str, expect: Optional[str], log: Optional[str] = None) -> float:
            old = len(results)
            script.write_text(text)
            os.utime(script, (time.time() + 1, time.time() + 1))
            start = time.monotonic()
            wait_for(
                f"x-version {expect}",
                lambda: any(v == expect and t > start for t, _, v in results[old:]),
                timeout=PATIENCE,
            )
            if log:
                p.wait_output(log)
            return next(t for t, _, v in results[old:] if v == expect and t > start) - start

        took = changed_to(_VERSION.format(v=2), "2")
        assert took < 2.0, f"the new version showed after {took:.2f} s"
        changed_to("def request(flow):\n    return (\n", None, "SyntaxError")
        took = changed_to(_VERSION.format(v=3), "3")
        assert took < 2.0
    finally:
        stop.set()
        thread.join()
    assert results and all(status == 200 for _, status, _ in results), [r for r in results if r[1] != 200]
    assert "Reloading script" in p.output()


# -- ours only ----------------------------------------------------------------------------


def test_unsupported_api_raises_attribute_error_naming_it(proxy: Start, origin: Origin) -> None:
    p = proxy("ours", "unsupported.py")
    origin.requests.clear()
    fetch(p, origin.url("/"))
    assert seen(origin, "x-unsupported")[0][2]["x-unsupported"] == "AttributeError: backup"


# -- WebSocket ----------------------------------------------------------------------------


def test_websocket_hooks(proxy: Start) -> None:
    import socket

    from test_messages import EchoSocketOrigin, ws_frame, ws_read

    def scenario(p: ProxyProcess) -> Any:
        ws_origin = EchoSocketOrigin()
        with socket.create_connection(("127.0.0.1", p.port), timeout=PATIENCE) as s, s.makefile("rb") as f:
            s.sendall(
                f"GET http://127.0.0.1:{ws_origin.port}/chat HTTP/1.1\r\nHost: 127.0.0.1:{ws_origin.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
            )
            status = f.readline()
            assert status.startswith(b"HTTP/1.1 101"), status
            while f.readline() != b"\r\n":
                pass
            got = []
            for text in (b"hello", b"drop me", b"again"):
                s.sendall(ws_frame(text))
                if text != b"drop me":
                    got.append(ws_read(f)[1])
            s.sendall(ws_frame(b"\x03\xe8", opcode=8))
            assert ws_read(f)[0] == 8
        p.wait_output("ADDON websocket_end")
        return got, ws_origin.got, addon_lines(p.output())

    out = both(proxy, "websocket_hooks.py", scenario)
    assert out["ours"] == out["mitmdump"]
    got, at_origin, lines = out["ours"]
    assert got == [b"echo:HELLO!", b"echo:AGAIN!"] and at_origin == [b"HELLO", b"AGAIN"]
    assert lines[0] == "ADDON websocket_start /chat" and lines[-1] == "ADDON websocket_end 5"


# -- HTTPS --------------------------------------------------------------------------------


def test_https_flows(proxy: Start, tls_origin: Origin, test_ca: TestCA, tmp_path: Path) -> None:
    def scenario(kind: str, p: ProxyProcess) -> Any:
        ca = tmp_path / ("mitmdump-conf/mitmproxy-ca-cert.pem" if kind == "mitmdump" else "ours-ca/mitm.pem")
        wait_for(f"{kind}'s CA", ca.exists)
        tls_origin.requests.clear()
        url = f"https://localhost:{tls_origin.port}/secure?a=1"
        got = fetch(p, url, "--cacert", str(ca)).view("x-tls", "x-sni", "x-server-sni", "x-server")
        p.wait_output("ADDON http_connect")
        return got, seen(tls_origin, "x-scheme", "x-url"), addon_lines(p.output())

    out = each_kind(lambda kind: proxy(kind, "https_hooks.py", ca=test_ca.cert_path), scenario)
    assert out["ours"] == out["mitmdump"]
    got, at_origin, lines = out["ours"]
    assert got[1] == 200 and got[2]["x-tls"] == "True" and got[2]["x-sni"] == "localhost"
    assert at_origin[0][2] == {"x-scheme": "https", "x-url": f"https://localhost:{tls_origin.port}/secure?a=1"}
    assert lines == [f"ADDON http_connect CONNECT localhost {tls_origin.port}"]


def test_tls_clienthello_lets_a_connection_through(proxy: Start, tls_origin: Origin, test_ca: TestCA, tmp_path: Path) -> None:
    """A ClientHello naming "localhost" is let through (curl trusting only the origin's
    CA gets its page, the script sees no request); one without SNI (an IP address) is
    intercepted (curl trusting the proxy's CA, the script sees the request)."""

    def scenario(kind: str, p: ProxyProcess) -> Any:
        ca = tmp_path / ("mitmdump-conf/mitmproxy-ca-cert.pem" if kind == "mitmdump" else "ours-ca/mitm.pem")
        wait_for(f"{kind}'s CA", ca.exists)
        tls_origin.requests.clear()
        through = fetch(p, f"https://localhost:{tls_origin.port}/through", "--cacert", str(test_ca.cert_path))
        p.wait_output("ADDON tls_clienthello sni=localhost")
        seen_through = seen(tls_origin)
        tls_origin.requests.clear()
        opened = fetch(p, f"https://127.0.0.1:{tls_origin.port}/opened", "--cacert", str(ca))
        p.wait_output("ADDON request 127.0.0.1 /opened")
        return through.view(), seen_through, opened.view(), seen(tls_origin), addon_lines(p.output())

    out = each_kind(lambda kind: proxy(kind, "tls_clienthello.py", ca=test_ca.cert_path), scenario)
    assert out["ours"] == out["mitmdump"]
    through, at_origin_through, opened, at_origin_opened, lines = out["ours"]
    assert through[1] == 200 and [r[1] for r in at_origin_through] == ["/through"]
    assert opened[1] == 200 and [r[1] for r in at_origin_opened] == ["/opened"]
    assert lines[0].startswith(f"ADDON tls_clienthello sni=localhost server=('localhost', {tls_origin.port}) client=127.0.0.1")
    assert lines[1].startswith(f"ADDON tls_clienthello sni=None server=('127.0.0.1', {tls_origin.port})")
    assert lines[2] == "ADDON request 127.0.0.1 /opened"


READ_MARKS = """
import sys
from mitmproxy import io
with open(sys.argv[1], "rb") as f:
    for flow in io.FlowReader(f).stream():
        print(repr((flow.request.path, flow.marked, flow.comment)))
"""


def test_marks_and_comments_are_saved_with_the_flow(proxy: Start, origin: Origin, mitmdump: Tuple[Package, Path], tmp_path: Path) -> None:
    """A script's flow.marked and flow.comment reach the saved flows: both files, read
    by mitmproxy itself, say the same."""
    reader = mitmdump[0].python

    def scenario(kind: str, p: ProxyProcess) -> Any:
        got = [fetch(p, origin.url(path)).view() for path in ("/mark", "/plain")]
        p.wait_output("ADDON response /plain")
        p.interrupt()
        read = subprocess.run([reader, "-c", READ_MARKS, str(tmp_path / f"{kind}.flows")], capture_output=True, text=True, timeout=PATIENCE)
        assert read.returncode == 0, read.stderr
        return got, read.stdout.splitlines(), addon_lines(p.output())

    out = each_kind(lambda kind: proxy(kind, "marks.py", save=tmp_path / f"{kind}.flows"), scenario)
    assert out["ours"] == out["mitmdump"]
    got, saved, lines = out["ours"]
    assert [g[1] for g in got] == [200, 200]
    assert saved == ["('/mark', ':star:', 'seen by the script')", "('/plain', '', '')"]
    assert lines == ["ADDON response /mark marked=':star:' comment='seen by the script'", "ADDON response /plain marked='' comment=''"]


def with_web_ui(ours: Package, env: Dict[str, str], tmp_path: Path, script: str) -> Tuple[ProxyProcess, str, Dict[str, str]]:
    """The pip package's ``mitm -s script --web`` listening: the process, the web UI's
    address (``http://host:port``) and the headers that authorize its API."""
    command = Path(ours.python).parent / "mitm"
    args = ["--ca-dir", str(tmp_path / "ca"), "-p", "0", "--web", "--web-port", "0", "-s", str(ADDONS / script)]
    p = ProxyProcess(Package("mitm command", str(command)), args, env, tmp_path / "mitm-web.log")
    try:
        banner = wait_for("the banner", lambda: re.search(r"mitm listening on http://127\.0\.0\.1:(\d+)", p.output()))
        p.port = int(banner.group(1))
        ui = wait_for("the web UI's URL", lambda: re.search(r"web UI: (http://[^/\s]+)/\S*token=([\w-]+)", p.output()))
    except BaseException:
        p.stop()
        raise
    return p, ui.group(1), {"Authorization": f"Bearer {ui.group(2)}"}


def test_marks_and_comments_show_in_the_web_ui(ours: Package, proxy_env: Dict[str, str], origin: Origin, tmp_path: Path) -> None:
    """The pip package's ``mitm -s marks.py --web``: the web UI's flow list has the
    script's mark and comment."""
    p, ui, auth = with_web_ui(ours, proxy_env, tmp_path, "marks.py")
    try:
        fetch(p, origin.url("/mark"))
        fetch(p, origin.url("/plain"))
        p.wait_output("ADDON response /plain")

        def listed() -> "List[Any] | None":
            with urllib.request.urlopen(urllib.request.Request(f"{ui}/api/flows", headers=auth), timeout=PATIENCE) as r:
                flows = json.load(r)["flows"]
            done = [(f["path"], f["marked"], f["comment"]) for f in flows if not f["pending"]]
            return done if len(done) == 2 else None

        assert wait_for("both flows in the list", listed) == [("/mark", ":star:", "seen by the script"), ("/plain", "", "")]
    finally:
        p.stop()


def test_intercept_holds_a_flow_in_the_web_ui_until_resumed(ours: Package, proxy_env: Dict[str, str], origin: Origin, tmp_path: Path) -> None:
    """The pip package's ``mitm -s intercept.py --web``: a flow the script intercepts
    waits in the web UI (another one goes on meanwhile) until it is resumed there."""
    p, ui, auth = with_web_ui(ours, proxy_env, tmp_path, "intercept.py")
    try:
        origin.requests.clear()
        held: Dict[str, Any] = {}
        client = threading.Thread(target=lambda: held.update(got=fetch(p, origin.url("/hold"))))
        client.start()

        def waiting() -> "int | None":
            with urllib.request.urlopen(urllib.request.Request(f"{ui}/api/flows", headers=auth), timeout=PATIENCE) as r:
                flows = json.load(r)["flows"]
            return next((f["id"] for f in flows if f["path"] == "/hold" and f["intercepted"] == "request"), None)

        flow_id = wait_for("/hold waiting in the web UI", waiting)
        # Meanwhile another flow goes through, and the held one has not reached the origin.
        assert fetch(p, origin.url("/plain")).status == 200
        assert client.is_alive() and [r[1] for r in origin.requests] == ["/plain"]
        resume = urllib.request.Request(f"{ui}/api/flows/{flow_id}/resume", data=b"", method="POST", headers=auth)
        with urllib.request.urlopen(resume, timeout=PATIENCE) as r:
            assert r.status == 204
        client.join(PATIENCE)
        assert held["got"].status == 200 and [r[1] for r in origin.requests] == ["/plain", "/hold"]
        p.wait_output("ADDON response /hold intercepted=False")
        assert "ADDON held /hold True" in p.output()
    finally:
        p.stop()


def test_done_is_called_at_stop(proxy: Start, origin: Origin) -> None:
    def scenario(p: ProxyProcess) -> Any:
        fetch(p, origin.url("/"))
        p.interrupt()
        return addon_lines(p.output())

    out = both(proxy, "options_lifecycle.py", scenario)
    assert out["ours"] == out["mitmdump"] == ["ADDON running", "ADDON done"]


def test_more_blocking_hooks_than_engine_threads_still_leave_others_served(proxy: Start, origin: Origin) -> None:
    """Six /slow requests sleep in their hooks at once (the engine has a thread per
    core, at least two); a seventh request is still answered at once."""
    p = proxy("ours", "slow_sync.py")
    statuses: List[int] = []
    slow = [threading.Thread(target=lambda: statuses.append(fetch(p, origin.url("/slow")).status)) for _ in range(6)]
    for t in slow:
        t.start()
    wait_for("six hooks asleep", lambda: p.output().count("ADDON slow hook sleeps") >= 6)
    start = time.monotonic()
    fast = fetch(p, origin.url("/fast"))
    took = time.monotonic() - start
    for t in slow:
        t.join()
    assert fast.status == 200 and took < 0.6, f"/fast took {took:.2f} s"
    assert statuses == [200] * 6
