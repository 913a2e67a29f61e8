"""Message hooks from Python: ``request``, ``response``, ``flow_finished`` and
``websocket_message`` on a Python middleware, the ``HttpFlow`` they get, and the
engine's log lines in Python's ``logging``.

Everything talks to loopback only: origins are started here, on port 0, and curl is the
client.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import socket
import ssl
import subprocess
import threading
import time
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

import pytest

from mitm import MITM, CertificateAuthority, Middleware, http
from mitm.http import Headers, HttpFlow, Response, WebSocketMessage

CA = CertificateAuthority()


# -- helpers ---------------------------------------------------------------------------


class Origin:
    """An HTTP origin on a port of its own that records what it gets and answers
    ``hello from <path>`` (or ``size`` bytes of ``x`` for ``/big?size``)."""

    def __init__(self, tls: Optional[ssl.SSLContext] = None) -> None:
        self.seen: List[Dict[str, Any]] = []
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                origin.seen.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                if self.path.startswith("/big?"):
                    out = b"x" * int(self.path.split("?")[1])
                else:
                    out = f"hello from {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.scheme = "https" if tls else "http"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin() -> Any:
    o = Origin()
    yield o
    o.close()


def curl(proxy_port: int, url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """curl through the proxy: ``-i`` (head and body on stdout), 10 s at most."""
    return subprocess.run(
        ["curl", "-s", "-i", "--max-time", "10", "-x", f"http://127.0.0.1:{proxy_port}", *args, url],
        capture_output=True,
    )


async def acurl(proxy_port: int, url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """:func:`curl` without blocking the event loop (hooks that await run on it)."""
    return await asyncio.to_thread(curl, proxy_port, url, *args)


@asynccontextmanager
async def proxy(*middlewares: Any, **options: Any) -> AsyncIterator[int]:
    """A proxy on a free port with these middlewares; yields its port."""
    mitm = MITM(host="127.0.0.1", port=0, middlewares=list(middlewares), certificate_authority=CA, **options)
    await mitm.start()
    try:
        yield mitm.addresses[0][1]
    finally:
        await mitm.stop()


def head_and_body(out: bytes) -> Tuple[bytes, bytes]:
    """The response's head and body in curl's ``-i`` output (after the answer to a
    ``CONNECT``, if any)."""
    head, _, body = out.partition(b"\r\n\r\n")
    if b"Connection established" in head.split(b"\r\n")[0]:
        return head_and_body(body)
    return head, body


# -- requests and responses --------------------------------------------------------------


class Rewrite(Middleware):
    """Adds a header and moves the path on the way in; rewrites the body and adds a
    header on the way out (awaiting, so it runs on the event loop)."""

    async def request(self, flow: HttpFlow) -> None:
        flow.request.headers["X-Added"] = "by-mitm"
        flow.request.path = flow.request.path.replace("/old", "/new")

    async def response(self, flow: HttpFlow) -> None:
        await asyncio.sleep(0)
        assert flow.response is not None and flow.response.content is not None
        flow.response.content = flow.response.content.replace(b"hello", b"HOWDY")
        flow.response.headers.add("X-Seen", "yes")


def test_request_and_response_rewritten_as_origin_and_client_see_them(origin: Origin) -> None:
    async def main() -> subprocess.CompletedProcess[bytes]:
        async with proxy(Rewrite()) as port:
            return await acurl(port, origin.url("/old/page"))

    out = asyncio.run(main())
    head, body = head_and_body(out.stdout)
    assert [s["path"] for s in origin.seen] == ["/new/page"]
    assert origin.seen[0]["headers"]["X-Added"] == "by-mitm"
    assert body == b"HOWDY from /new/page"
    assert b"\r\nX-Seen: yes" in head
    assert b"Content-Length: 20" in head


def test_https_messages_are_rewritten_inside_the_intercepted_tunnel(tmp_path: Any) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(CA.pem)
    tls_origin = Origin(tls=CA.new_context("127.0.0.1"))
    try:

        async def main() -> subprocess.CompletedProcess[bytes]:
            async with proxy(Rewrite(), ssl_insecure=True) as port:
                return await acurl(port, tls_origin.url("/old/tls"), "--cacert", str(ca_file))

        out = asyncio.run(main())
    finally:
        tls_origin.close()
    assert out.returncode == 0, out.stderr
    _, body = head_and_body(out.stdout)
    assert body == b"HOWDY from /new/tls"
    assert tls_origin.seen[0]["headers"]["X-Added"] == "by-mitm"


class Answer(Middleware):
    """Answers /local itself, two ways."""

    async def request(self, flow: HttpFlow) -> None:
        if flow.request.path == "/local":
            flow.response = Response(418, b"short and stout", {"Content-Type": "text/plain"})
        elif flow.request.path == "/respond":
            flow.respond(201, "made here", {"X-Local": "1"})


def test_an_answer_from_the_request_hook_never_reaches_the_origin(origin: Origin) -> None:
    async def main() -> List[subprocess.CompletedProcess[bytes]]:
        async with proxy(Answer()) as port:
            return [await acurl(port, origin.url(p)) for p in ("/local", "/respond", "/through")]

    local, respond, through = asyncio.run(main())
    assert local.stdout.startswith(b"HTTP/1.1 418 ")
    assert head_and_body(local.stdout)[1] == b"short and stout"
    assert respond.stdout.startswith(b"HTTP/1.1 201 Created")
    assert b"X-Local: 1" in head_and_body(respond.stdout)[0]
    assert head_and_body(respond.stdout)[1] == b"made here"
    assert head_and_body(through.stdout)[1] == b"hello from /through"
    assert [s["path"] for s in origin.seen] == ["/through"]


class Kill(Middleware):
    async def request(self, flow: HttpFlow) -> None:
        if flow.request.path == "/kill":
            flow.kill()


def test_kill_drops_the_client_without_an_answer(origin: Origin) -> None:
    async def main() -> List[subprocess.CompletedProcess[bytes]]:
        async with proxy(Kill()) as port:
            return [await acurl(port, origin.url("/kill")), await acurl(port, origin.url("/after"))]

    killed, after = asyncio.run(main())
    assert killed.returncode == 52, killed  # curl: empty reply from server
    assert killed.stdout == b""
    assert head_and_body(after.stdout)[1] == b"hello from /after"
    assert [s["path"] for s in origin.seen] == ["/after"]


class Raises(Middleware):
    async def request(self, flow: HttpFlow) -> None:
        if flow.request.path == "/boom":
            raise RuntimeError("the hook broke")

    async def response(self, flow: HttpFlow) -> None:
        if flow.request.path == "/late":
            raise KeyError("late")


def test_an_exception_in_a_message_hook_fails_that_flow_only(
    origin: Origin, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> List[subprocess.CompletedProcess[bytes]]:
        async with proxy(Raises()) as port:
            return [await acurl(port, origin.url(p)) for p in ("/boom", "/late", "/fine")]

    with caplog.at_level(logging.ERROR, logger="mitm"):
        boom, late, fine = asyncio.run(main())
    assert boom.stdout.startswith(b"HTTP/1.1 502 ")
    assert b"Raises.request raised" in boom.stdout
    assert late.stdout.startswith(b"HTTP/1.1 502 ")
    assert head_and_body(fine.stdout)[1] == b"hello from /fine"
    assert [s["path"] for s in origin.seen] == ["/late", "/fine"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage().split(":")[0] for r in errors] == [
        "Raises.request raised RuntimeError",
        "Raises.response raised KeyError",
    ]
    # With the traceback: the line of the hook that raised.
    assert errors[0].exc_info is not None
    text = logging.Formatter().formatException(errors[0].exc_info)
    assert 'raise RuntimeError("the hook broke")' in text


class Record(Middleware):
    """Keeps every hook call; checks that one flow object goes through all three."""

    def __init__(self) -> None:
        self.calls: List[Tuple[Any, ...]] = []

    def request(self, flow: HttpFlow) -> None:  # type: ignore[override]  # a plain function works too
        flow.metadata["seen"] = ["request"]
        self.calls.append(("request", flow.request.method, flow.request.url, flow.response))

    async def response(self, flow: HttpFlow) -> None:
        flow.metadata["seen"].append("response")
        assert flow.response is not None
        self.calls.append(("response", flow.response.status_code, flow.response.text))

    async def flow_finished(self, flow: HttpFlow) -> None:
        assert flow.response is not None
        self.calls.append(("finished", flow.metadata["seen"], flow.response.status_code, flow.error))


def test_one_flow_object_goes_through_request_response_and_flow_finished(origin: Origin) -> None:
    recorder = Record()

    async def main() -> None:
        async with proxy(recorder) as port:
            await acurl(port, origin.url("/a"), "-d", "posted")

    asyncio.run(main())
    assert recorder.calls == [
        ("request", "POST", origin.url("/a"), None),
        ("response", 200, "hello from /a"),
        ("finished", ["request", "response"], 200, None),
    ]
    assert origin.seen[0]["body"] == b"posted"


class Sizes(Middleware):
    body_limit = 100

    def __init__(self) -> None:
        self.contents: List[Optional[bytes]] = []
        self.sizes: List[Tuple[int, bool, bool]] = []

    async def response(self, flow: HttpFlow) -> None:
        assert flow.response is not None
        self.contents.append(flow.response.content)

    async def flow_finished(self, flow: HttpFlow) -> None:
        self.sizes.append((flow.response_body_size, flow.duration is not None, flow.timestamp_start > 0))


def test_bodies_over_body_limit_stream_past_and_read_as_none(origin: Origin) -> None:
    sizes = Sizes()

    async def main() -> List[subprocess.CompletedProcess[bytes]]:
        async with proxy(sizes) as port:
            return [await acurl(port, origin.url(p)) for p in ("/big?50", "/big?5000")]

    small, large = asyncio.run(main())
    assert sizes.contents == [b"x" * 50, None]
    # Streamed or not, flow_finished knows how much went through, and when.
    assert sizes.sizes == [(50, True, True), (5000, True, True)]
    assert head_and_body(large.stdout)[1] == b"x" * 5000


def test_an_error_page_of_the_proxy_tells_its_error() -> None:
    seen: List[Tuple[int, Optional[str]]] = []

    class Errors(Middleware):
        async def flow_finished(self, flow: HttpFlow) -> None:
            seen.append((flow.response.status_code if flow.response else 0, flow.error))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once closed

    async def main() -> subprocess.CompletedProcess[bytes]:
        async with proxy(Errors()) as port:
            return await acurl(port, f"http://127.0.0.1:{closed}/")

    out = asyncio.run(main())
    assert out.stdout.startswith(b"HTTP/1.1 502 ")
    assert len(seen) == 1 and seen[0][1] and str(closed) in seen[0][1]


# -- WebSocket -------------------------------------------------------------------------


def ws_frame(payload: bytes, opcode: int = 1, mask: bool = True) -> bytes:
    """One final WebSocket frame (RFC 6455 5.2), masked as a client sends it."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    else:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    if mask:
        key = os.urandom(4)
        head += key
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


def ws_read(f: Any) -> Tuple[int, bytes]:
    """One frame from the buffered reader ``f``: (opcode, payload); EOFError at the
    end of the stream."""
    first = f.read(2)
    if len(first) < 2:
        raise EOFError("the WebSocket's stream ended")
    b0, b1 = first
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(f.read(2), "big")
    elif n == 127:
        n = int.from_bytes(f.read(8), "big")
    key = f.read(4) if b1 & 0x80 else None
    data = f.read(n)
    if key:
        data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return b0 & 0x0F, data


class EchoSocketOrigin:
    """A WebSocket origin that answers each text message with ``echo:<message>``."""

    def __init__(self) -> None:
        self.got: List[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as f:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += f.readline()
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            while True:
                try:
                    opcode, data = ws_read(f)
                except (EOFError, OSError):
                    return  # the proxy closed it
                if opcode == 8:
                    conn.sendall(ws_frame(data, opcode=8, mask=False))
                    return
                self.got.append(data)
                conn.sendall(ws_frame(b"echo:" + data, mask=False))


class Shout(Middleware):
    """Upper-cases what the client sends, drops ``drop me``, marks what the server
    sends."""

    def __init__(self) -> None:
        self.seen: List[Tuple[bool, bytes, str]] = []

    async def websocket_message(self, flow: HttpFlow, message: WebSocketMessage) -> None:
        self.seen.append((message.from_client, message.content, flow.request.path))
        if message.from_client:
            if message.text == "drop me":
                message.drop()
            else:
                message.text = message.text.upper()
        else:
            message.content = message.content + b"!"


def test_websocket_messages_are_changed_and_dropped_by_the_hook() -> None:
    ws_origin = EchoSocketOrigin()
    shout = Shout()

    def client(port: int) -> List[bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s, s.makefile("rb") as f:
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
            return got

    async def main() -> List[bytes]:
        async with proxy(shout) as port:
            return await asyncio.to_thread(client, port)

    got = asyncio.run(main())
    assert got == [b"echo:HELLO!", b"echo:AGAIN!"]
    assert ws_origin.got == [b"HELLO", b"AGAIN"]
    assert shout.seen == [
        (True, b"hello", "/chat"),
        (False, b"echo:HELLO", "/chat"),
        (True, b"drop me", "/chat"),
        (True, b"again", "/chat"),
        (False, b"echo:AGAIN", "/chat"),
    ]


# -- the objects themselves ---------------------------------------------------------------


def test_headers_are_an_ordered_case_insensitive_multidict() -> None:
    h = Headers([("Content-Type", "text/plain"), ("Set-Cookie", "a=1")], x_trace="t")
    h.add("set-cookie", "b=2")
    assert h["content-type"] == "text/plain"
    assert h.get_all("SET-COOKIE") == ["a=1", "b=2"]
    assert h.keys() == ["Content-Type", "Set-Cookie", "x-trace", "set-cookie"]
    assert len(h) == 4 and "X-Trace" in h and "nope" not in h
    h["Set-Cookie"] = "c=3"  # replaces both, in the first one's place
    assert h.items() == [("Content-Type", "text/plain"), ("Set-Cookie", "c=3"), ("x-trace", "t")]
    del h["x-trace"]
    assert h == {"content-type": "text/plain", "set-cookie": "c=3"}
    assert h.get("missing") is None and h.get("missing", "d") == "d"
    with pytest.raises(KeyError):
        h["missing"]
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        h["X-Evil"] = "a\r\nInjected: 1"
    with pytest.raises(ValueError, match="invalid header name"):
        h["Bad Name"] = "x"
    h["X-Raw"] = b"\xff\xfe"  # not UTF-8: kept as it is
    assert h["x-raw"].encode("utf-8", "surrogateescape") == b"\xff\xfe"


def test_responses_and_requests_made_in_python() -> None:
    r = Response(404, "not here", {"Content-Type": "text/plain; charset=utf-8"})
    assert (r.status_code, r.reason, r.content, r.text) == (404, "Not Found", b"not here", "not here")
    r.text = "gone"
    assert r.raw_content == b"gone"
    with pytest.raises(ValueError, match="status code"):
        Response(42)
    q = http.Request("GET", "https://example.com/a?b=1")
    assert (q.scheme, q.host, q.port, q.path, q.headers["host"]) == ("https", "example.com", 443, "/a?b=1", "example.com")
    q.url = "http://example.org:8080/x"
    assert (q.scheme, q.host, q.port, q.path) == ("http", "example.org", 8080, "/x")
    assert q.headers["Host"] == "example.org:8080"  # follows the target
    with pytest.raises(ValueError, match="absolute"):
        q.url = "/relative"
    with pytest.raises(ValueError):
        q.method = "GET /x"


def test_content_is_decoded_and_encoded_by_content_encoding() -> None:
    import gzip

    r = Response(200, gzip.compress(b"plain words"), {"Content-Encoding": "gzip"})
    assert r.content == b"plain words"
    r.content = b"other words"
    assert gzip.decompress(r.raw_content or b"") == b"other words"
    assert r.headers["content-encoding"] == "gzip"


def test_a_middleware_without_message_hooks_adds_no_handler() -> None:
    from mitm.middleware import Log

    assert http.message_plan(Log(), Middleware) is None
    plan = http.message_plan(Sizes(), Middleware)
    assert plan is not None and plan["body_limit"] == 100 and plan["request"] is None
    bad = Sizes()
    bad.body_limit = -1
    with pytest.raises(ValueError, match="body_limit"):
        http.message_plan(bad, Middleware)


# -- the engine's log ----------------------------------------------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_engine_warnings_reach_the_python_logger() -> None:
    engine = logging.getLogger("mitm.engine")
    collect = Collect()
    engine.addHandler(collect)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]

    async def main() -> None:
        async with proxy() as port:
            await acurl(port, f"http://127.0.0.1:{closed}/nowhere")
            # The records come from the engine's log thread: wait for them, 10 s at most.
            deadline = time.monotonic() + 10
            while not any("request failed" in r.getMessage() for r in collect.records):
                assert time.monotonic() < deadline, [r.getMessage() for r in collect.records]
                await asyncio.sleep(0.01)

    try:
        asyncio.run(main())
    finally:
        engine.removeHandler(collect)
    failed = next(r for r in collect.records if "request failed" in r.getMessage())
    assert failed.levelno == logging.WARNING
    assert failed.engine_fields["url"] == f"http://127.0.0.1:{closed}/nowhere"  # type: ignore[attr-defined]
    assert failed.engine_target.startswith("mitm::")  # type: ignore[attr-defined]


def test_engine_debug_lines_follow_the_logger_level() -> None:
    engine = logging.getLogger("mitm.engine")
    collect = Collect()
    engine.addHandler(collect)
    before = engine.level
    try:
        engine.setLevel(logging.ERROR)

        async def quiet() -> None:
            async with proxy():
                pass

        asyncio.run(quiet())
        engine.setLevel(logging.INFO)

        async def loud() -> None:
            async with proxy():
                deadline = time.monotonic() + 10
                while not any("mitm listening" in r.getMessage() for r in collect.records):
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.01)

        asyncio.run(loud())
    finally:
        engine.setLevel(before)
        engine.removeHandler(collect)
    listening = [r for r in collect.records if "mitm listening" in r.getMessage()]
    assert len(listening) == 1 and listening[0].levelno == logging.INFO


class BrokenSocketHook(Middleware):
    async def websocket_message(self, flow: HttpFlow, message: WebSocketMessage) -> None:
        raise ValueError("cannot read this")


def test_an_exception_in_websocket_message_closes_that_websocket(
    origin: Origin, caplog: pytest.LogCaptureFixture
) -> None:
    ws_origin = EchoSocketOrigin()

    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s, s.makefile("rb") as f:
            s.sendall(
                f"GET http://127.0.0.1:{ws_origin.port}/chat HTTP/1.1\r\nHost: 127.0.0.1:{ws_origin.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
            )
            assert f.readline().startswith(b"HTTP/1.1 101")
            while f.readline() != b"\r\n":
                pass
            s.sendall(ws_frame(b"hello"))
            return f.read()  # the proxy closes: whatever came, then EOF

    async def main() -> Tuple[bytes, subprocess.CompletedProcess[bytes]]:
        async with proxy(BrokenSocketHook()) as port:
            rest = await asyncio.to_thread(client, port)
            return rest, await acurl(port, origin.url("/still-fine"))

    with caplog.at_level(logging.ERROR, logger="mitm"):
        rest, after = asyncio.run(main())
    assert ws_origin.got == []  # the message never reached the origin
    assert b"hello" not in rest
    assert head_and_body(after.stdout)[1] == b"hello from /still-fine"
    assert any("BrokenSocketHook.websocket_message raised ValueError" in r.getMessage() for r in caplog.records)


def test_middlewares_run_in_order_and_an_answer_stops_the_rest(origin: Origin) -> None:
    calls: List[str] = []

    class First(Middleware):
        async def request(self, flow: HttpFlow) -> None:
            calls.append("first")
            flow.request.headers["X-Order"] = "first"
            if flow.request.path == "/answered":
                flow.respond(200, b"by first")

    class Second(Middleware):
        async def request(self, flow: HttpFlow) -> None:
            calls.append("second:" + flow.request.headers["X-Order"])
            flow.request.headers["X-Order"] += ",second"

    async def main() -> List[bytes]:
        async with proxy(First(), Second()) as port:
            outs = [await acurl(port, origin.url(p)) for p in ("/both", "/answered")]
            return [head_and_body(o.stdout)[1] for o in outs]

    assert asyncio.run(main()) == [b"hello from /both", b"by first"]
    assert calls == ["first", "second:first", "first"]
    assert origin.seen[0]["headers"]["X-Order"] == "first,second"


def test_the_connection_goes_on_after_a_hook_raised(origin: Origin) -> None:
    async def main() -> subprocess.CompletedProcess[bytes]:
        async with proxy(Raises()) as port:
            # One curl, two URLs: the second reuses the connection if it is still open.
            return await acurl(
                port, origin.url("/fine"), "-o", "/dev/null", "-w", "\\n%{http_code} %{num_connects}\\n", origin.url("/boom")
            )

    out = asyncio.run(main())
    lines = out.stdout.decode().split("\n")
    codes = [line.split()[-2:] for line in lines if line.strip() and line[0].isdigit()]
    assert codes == [["502", "1"], ["200", "0"]], out.stdout


def test_flow_connection_is_the_connection_the_connection_hooks_get(origin: Origin) -> None:
    from mitm import Connection

    seen: List[bool] = []

    class Both(Middleware):
        async def client_connected(self, connection: Connection) -> None:
            connection.tag = "mine"  # type: ignore[attr-defined]

        async def request(self, flow: HttpFlow) -> None:
            seen.append(getattr(flow.connection, "tag", None) == "mine")
            seen.append(str(flow.connection.client).startswith("127.0.0.1:"))

    async def main() -> None:
        async with proxy(Both()) as port:
            await acurl(port, origin.url("/c"))

    asyncio.run(main())
    assert seen == [True, True]
