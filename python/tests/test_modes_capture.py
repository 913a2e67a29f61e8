"""``MITM``'s options beyond the original's: ``modes`` (listeners in mitmproxy's
syntax), ``save`` (capture files) and limits. Loopback only: origins are started here
on port 0, curl is the client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, List

import pytest

from mitm import MITM, CertificateAuthority

CA = CertificateAuthority()


class Origin:
    """An HTTP origin answering ``hello from <path>`` (``/big?N``: N bytes of ``x``)."""

    def __init__(self) -> None:
        self.paths: List[str] = []
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                origin.paths.append(self.path)
                if self.path.startswith("/big?"):
                    out = b"x" * int(self.path.split("?")[1])
                else:
                    out = f"hello from {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def origin() -> Any:
    o = Origin()
    yield o
    o.server.shutdown()
    o.server.server_close()


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    """curl, 10 s at most, the body on stdout."""
    return subprocess.run(["curl", "-s", "--max-time", "10", *args], capture_output=True)


async def acurl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await asyncio.to_thread(curl, *args)


def test_save_writes_a_har_listing_the_flows(origin: Origin, tmp_path: Path) -> None:
    har = tmp_path / "flows.har"

    async def main() -> None:
        mitm = MITM(host="127.0.0.1", port=0, middlewares=[], certificate_authority=CA, save=har)
        async with mitm:
            port = mitm.addresses[0][1]
            for path in ("/one", "/two"):
                out = await acurl("-x", f"http://127.0.0.1:{port}", origin.url(path))
                assert out.stdout == f"hello from {path}".encode()

    asyncio.run(main())
    # Complete once stop() returned.
    entries = json.loads(har.read_text())["log"]["entries"]
    assert [e["request"]["url"] for e in entries] == [origin.url("/one"), origin.url("/two")]
    assert [e["response"]["status"] for e in entries] == [200, 200]
    assert entries[0]["response"]["content"]["text"] == "hello from /one"


def test_save_never_overwrites_a_file(tmp_path: Path) -> None:
    taken = tmp_path / "taken.har"
    taken.write_text("keep me")

    async def main() -> None:
        await MITM(host="127.0.0.1", port=0, middlewares=[], certificate_authority=CA, save=str(taken)).start()

    with pytest.raises(FileExistsError, match="never overwrites"):
        asyncio.run(main())
    assert taken.read_text() == "keep me"


def test_a_socks5_mode_serves_curl(origin: Origin) -> None:
    async def main() -> subprocess.CompletedProcess[bytes]:
        mitm = MITM(host="127.0.0.1", port=0, middlewares=[], certificate_authority=CA, modes=["socks5"])
        async with mitm:
            port = mitm.addresses[0][1]
            return await acurl("--socks5-hostname", f"127.0.0.1:{port}", origin.url("/via-socks"))

    out = asyncio.run(main())
    assert out.stdout == b"hello from /via-socks", out
    assert origin.paths == ["/via-socks"]


def test_several_modes_listen_side_by_side(origin: Origin) -> None:
    async def main() -> List[bytes]:
        mitm = MITM(
            host="127.0.0.1",
            port=0,
            middlewares=[],
            certificate_authority=CA,
            modes=["regular@0", "socks5@0", f"reverse:http://127.0.0.1:{origin.port}@0"],
        )
        async with mitm:
            (_, regular), (_, socks), (_, reverse) = mitm.addresses
            outs = [
                await acurl("-x", f"http://127.0.0.1:{regular}", origin.url("/regular")),
                await acurl("--socks5-hostname", f"127.0.0.1:{socks}", origin.url("/socks")),
                await acurl(f"http://127.0.0.1:{reverse}/reverse"),
            ]
            return [o.stdout for o in outs]

    assert asyncio.run(main()) == [b"hello from /regular", b"hello from /socks", b"hello from /reverse"]


def test_a_bad_mode_is_a_clear_error() -> None:
    async def main() -> None:
        await MITM(host="127.0.0.1", port=0, middlewares=[], certificate_authority=CA, modes=["sock5@1080"]).start()

    with pytest.raises(ValueError, match="sock5"):
        asyncio.run(main())
    with pytest.raises(ValueError, match="mode specs"):
        MITM(modes=[1080], middlewares=[], certificate_authority=CA)  # type: ignore[list-item]


def test_body_size_limit_refuses_larger_bodies(origin: Origin) -> None:
    async def main() -> List[str]:
        mitm = MITM(host="127.0.0.1", port=0, middlewares=[], certificate_authority=CA, body_size_limit=100)
        async with mitm:
            proxy = f"http://127.0.0.1:{mitm.addresses[0][1]}"
            outs = [
                await acurl("-o", "/dev/null", "-w", "%{http_code}", "-x", proxy, origin.url("/big?50")),
                await acurl("-o", "/dev/null", "-w", "%{http_code}", "-x", proxy, origin.url("/big?500")),
                await acurl("-o", "/dev/null", "-w", "%{http_code}", "-x", proxy, "-d", "y" * 500, origin.url("/up")),
            ]
            return [o.stdout.decode() for o in outs]

    assert asyncio.run(main()) == ["200", "502", "413"]
    assert "/up" not in origin.paths


def test_options_are_checked_when_given() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        MITM(max_connections=1, middlewares=[], certificate_authority=CA)
    with pytest.raises(ValueError, match="timeout"):
        MITM(timeout=-1, middlewares=[], certificate_authority=CA)
    with pytest.raises(ValueError, match="user:password"):
        MITM(proxy_auth="nocolon", middlewares=[], certificate_authority=CA)
    with pytest.raises(ValueError, match="user:password"):
        MITM(proxy_auth=("a", "b", "c"), middlewares=[], certificate_authority=CA)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="save"):
        MITM(save=3, middlewares=[], certificate_authority=CA)  # type: ignore[arg-type]


def test_proxy_auth_asks_clients_for_credentials(origin: Origin) -> None:
    async def main() -> List[str]:
        mitm = MITM(host="127.0.0.1", port=0, middlewares=[], certificate_authority=CA, proxy_auth="u:p")
        async with mitm:
            proxy = f"http://127.0.0.1:{mitm.addresses[0][1]}"
            outs = [
                await acurl("-o", "/dev/null", "-w", "%{http_code}", "-x", proxy, origin.url("/a")),
                await acurl("-o", "/dev/null", "-w", "%{http_code}", "-x", proxy, "-U", "u:p", origin.url("/b")),
            ]
            return [o.stdout.decode() for o in outs]

    assert asyncio.run(main()) == ["407", "200"]


def test_save_writes_every_format_given(origin: Origin, tmp_path: Path) -> None:
    import sqlite3
    from contextlib import closing

    files = [tmp_path / "all.har", tmp_path / "all.flows", tmp_path / "all.sqlite"]

    async def main() -> None:
        mitm = MITM(host="127.0.0.1", port=0, middlewares=[], certificate_authority=CA, save=files)
        async with mitm:
            out = await acurl("-x", f"http://127.0.0.1:{mitm.addresses[0][1]}", origin.url("/saved"))
            assert out.stdout == b"hello from /saved"

    asyncio.run(main())
    har, flows, db = files
    assert [e["request"]["url"] for e in json.loads(har.read_text())["log"]["entries"]] == [origin.url("/saved")]
    assert b"/saved" in flows.read_bytes()  # mitmproxy's tnetstrings
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT method, path, status FROM flows").fetchall() == [("GET", "/saved", 200)]


def test_an_upstream_mode_sends_traffic_through_the_next_proxy(origin: Origin) -> None:
    from mitm import Middleware
    from mitm.http import HttpFlow

    through: List[str] = []

    class Seen(Middleware):
        async def request(self, flow: HttpFlow) -> None:
            through.append(flow.request.url)

    async def main() -> bytes:
        upstream = MITM(host="127.0.0.1", port=0, middlewares=[Seen()], certificate_authority=CA)
        async with upstream:
            next_proxy = f"http://127.0.0.1:{upstream.addresses[0][1]}"
            front = MITM(
                host="127.0.0.1", port=0, middlewares=[], certificate_authority=CA, modes=[f"upstream:{next_proxy}"]
            )
            async with front:
                out = await acurl("-x", f"http://127.0.0.1:{front.addresses[0][1]}", origin.url("/chained"))
                return out.stdout

    assert asyncio.run(main()) == b"hello from /chained"
    assert through == [origin.url("/chained")]


def test_a_server_that_cannot_bind_leaves_no_capture_file(tmp_path: Path) -> None:
    import socket

    har = tmp_path / "flows.har"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def main() -> None:
            await MITM(host="127.0.0.1", port=port, middlewares=[], certificate_authority=CA, save=har).start()

        with pytest.raises(OSError):
            asyncio.run(main())
    assert not har.exists()  # so that the same save= works next time


def test_max_connections_refuses_clients_past_the_limit(origin: Origin) -> None:
    import socket
    import time

    async def main() -> List[int]:
        # 2: room for one client and its upstream connection.
        mitm = MITM(host="127.0.0.1", port=0, middlewares=[], certificate_authority=CA, max_connections=2)
        async with mitm:
            port = mitm.addresses[0][1]
            proxy = f"http://127.0.0.1:{port}"
            with socket.create_connection(("127.0.0.1", port)) as held:
                held.sendall(b"GET ")  # a client that takes its time: it holds the room
                crowded = await acurl("-x", proxy, origin.url("/crowded"))
            # Once it is gone there is room again (as soon as the proxy sees it close).
            deadline = time.monotonic() + 10
            while (after := await acurl("-x", proxy, origin.url("/after"))).returncode != 0:
                assert time.monotonic() < deadline, after
            return [crowded.returncode, after.returncode]

    crowded, after = asyncio.run(main())
    assert crowded != 0  # closed at once: curl gets no answer
    assert after == 0
    assert "/crowded" not in origin.paths and "/after" in origin.paths
