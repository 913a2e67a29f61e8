"""Protocols written in Python on the engine: tried in order with the built-in HTTP,
InvalidProtocol passing to the next, asyncio-like client streams, the middlewares'
hooks, exceptions ending one connection only, and no socket left open."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from typing import Any, Callable, List, Tuple

import pytest

from mitm import MITM, CertificateAuthority, Host, InvalidProtocol, Middleware, Protocol, protocol

WAIT = 10  # seconds any single step may take before the test fails


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


_CA = None


def ca() -> CertificateAuthority:
    global _CA
    if _CA is None:
        _CA = CertificateAuthority()
    return _CA


async def until(condition: Callable[[], bool]) -> None:
    """Waits (WAIT seconds at most) until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- local servers -------------------------------------------------------------------


class LineOrigin:
    """A line-echo origin: answers each line with ``echo: <line>``; counts the
    connections it has open."""

    def __init__(self) -> None:
        self.open = 0
        self.seen = 0
        self.closed = asyncio.Condition()
        self.server: Any = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.seen += 1
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                writer.write(b"echo: " + line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            async with self.closed:
                self.open -= 1
                self.closed.notify_all()

    async def __aenter__(self) -> "LineOrigin":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def all_closed(self) -> None:
        """Waits until every connection the proxy made here has ended."""
        async with self.closed:
            await asyncio.wait_for(self.closed.wait_for(lambda: self.open == 0), WAIT)


async def http_origin() -> Tuple[Any, int]:
    """A tiny HTTP/1.1 origin answering ``hello from origin``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b"hello from origin"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def proxy(protocols: List[Any], middlewares: List[Any] = ()) -> Tuple[MITM, int]:
    mitm = MITM(
        host="127.0.0.1", port=0, protocols=protocols, middlewares=list(middlewares), certificate_authority=ca()
    )
    await mitm.start()
    return mitm, mitm.addresses[0][1]


async def talk(port: int, send: bytes) -> bytes:
    """Sends ``send``, half-closes, and reads everything until the proxy closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(send)
    await writer.drain()
    writer.write_eof()
    out = await asyncio.wait_for(reader.read(), WAIT)
    writer.close()
    return out


async def exchange(port: int, lines: List[bytes]) -> List[bytes]:
    """Sends each line and reads one answer line for each; then closes and waits for
    the proxy's EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    for line in lines:
        writer.write(line)
        await writer.drain()
        answers.append(await asyncio.wait_for(reader.readline(), WAIT))
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    writer.close()
    return answers


# -- protocols -----------------------------------------------------------------------


def echo_protocol(origin_port: Callable[[], int]) -> type:
    class Echo(Protocol):
        """``ECHO ...`` lines, relayed to the line origin (default handle)."""

        bytes_needed = 5
        resolved = 0

        async def resolve(self, connection, data):
            type(self).resolved += 1
            if not data.startswith(b"ECHO "):
                raise InvalidProtocol
            return "127.0.0.1", origin_port(), False

        async def connect(self, connection, host, port, tls, data):
            reader, writer = await asyncio.open_connection(host, port)
            connection.server = Host(reader, writer)
            writer.write(data)
            await writer.drain()

    return Echo


class Never(Protocol):
    """Declines everything, counting what it was offered (after an ``await``: its
    resolve runs on the event loop, not inline)."""

    offered: List[bytes] = []

    async def resolve(self, connection, data):
        await asyncio.sleep(0)
        type(self).offered.append(data)
        raise InvalidProtocol

    async def connect(self, connection, host, port, tls, data):  # pragma: no cover
        raise AssertionError("never connects")


# -- tests ---------------------------------------------------------------------------


def test_echo_before_http_and_http_still_serves_curl() -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")

    async def main() -> None:
        async with LineOrigin() as origin:
            Echo = echo_protocol(lambda: origin.port)
            web, web_port = await http_origin()
            mitm, port = await proxy([Echo, protocol.HTTP])
            try:
                answers = await exchange(port, [b"ECHO hello\n", b"second line\n"])
                assert answers == [b"echo: ECHO hello\n", b"echo: second line\n"]
                # curl, through the same port: Echo declines, HTTP serves it.
                proc = await asyncio.create_subprocess_exec(
                    curl, "-sS", "--max-time", str(WAIT), "-x", f"http://127.0.0.1:{port}",
                    f"http://127.0.0.1:{web_port}/",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                )
                out, err = await proc.communicate()
                assert proc.returncode == 0, err
                assert out == b"hello from origin"
                assert Echo.resolved == 2
                await origin.all_closed()
                assert origin.seen == 1
            finally:
                await mitm.stop()
                web.close()

    run(main())


def test_invalid_protocol_passes_to_the_next() -> None:
    async def main() -> None:
        Never.offered = []
        async with LineOrigin() as origin:
            Echo = echo_protocol(lambda: origin.port)
            mitm, port = await proxy([Never, Echo])
            try:
                assert await exchange(port, [b"ECHO one\n"]) == [b"echo: ECHO one\n"]
                assert Never.offered == [b"ECHO one\n"]
                # Nobody takes it: the connection is closed, the server goes on.
                assert await talk(port, b"nothing\n") == b""
                assert await exchange(port, [b"ECHO two\n"]) == [b"echo: ECHO two\n"]
                await origin.all_closed()
            finally:
                await mitm.stop()

    run(main())


def test_after_http() -> None:
    async def main() -> None:
        async with LineOrigin() as origin:
            Echo = echo_protocol(lambda: origin.port)
            mitm, port = await proxy([protocol.HTTP, Echo])
            try:
                assert await exchange(port, [b"ECHO after\n"]) == [b"echo: ECHO after\n"]
            finally:
                await mitm.stop()

    run(main())


class Recorder(Middleware):
    def __init__(self) -> None:
        self.calls: List[Tuple[str, Any]] = []

    async def client_connected(self, connection):
        self.calls.append(("client_connected", str(connection.client)))

    async def server_connected(self, connection):
        self.calls.append(("server_connected", str(connection.server)))

    async def client_data(self, connection, data):
        self.calls.append(("client_data", data))
        return data.replace(b"hello", b"HELLO")

    async def server_data(self, connection, data):
        self.calls.append(("server_data", data))
        return data

    async def server_disconnected(self, connection):
        self.calls.append(("server_disconnected", None))

    async def client_disconnected(self, connection):
        self.calls.append(("client_disconnected", type(connection.protocol).__name__))


def test_middleware_hooks_around_a_python_protocol() -> None:
    async def main() -> None:
        recorder = Recorder()
        async with LineOrigin() as origin:
            Echo = echo_protocol(lambda: origin.port)
            mitm, port = await proxy([Echo], [recorder])
            try:
                answers = await exchange(port, [b"ECHO hello\n", b"hello again\n"])
                assert answers == [b"echo: ECHO HELLO\n", b"echo: HELLO again\n"]
                await origin.all_closed()
                await until(lambda: recorder.calls[-1:] == [("client_disconnected", "Echo")])
            finally:
                await mitm.stop()
        names = [name for name, _ in recorder.calls]
        assert names == [
            "client_connected",
            "client_data",
            "server_connected",
            "server_data",
            "client_data",
            "server_data",
            "server_disconnected",
            "client_disconnected",
        ], recorder.calls
        assert recorder.calls[1] == ("client_data", b"ECHO hello\n")
        assert recorder.calls[2] == ("server_connected", f"127.0.0.1:{origin.port}")

    run(main())


class Streams(Protocol):
    """Exercises the client reader's asyncio behaviours, and reports them."""

    close = False
    after_close: List[bytes] = []

    async def resolve(self, connection, data):
        if not data.startswith(b"STREAMS\n"):
            raise InvalidProtocol
        return "127.0.0.1", self.origin_port, False

    async def connect(self, connection, host, port, tls, data):
        reader, writer = await asyncio.open_connection(host, port)
        connection.server = Host(reader, writer)
        connection.client.writer.write(b"ready\n")
        await connection.client.writer.drain()

    async def handle(self, connection):
        reader, writer = connection.client.reader, connection.client.writer
        out = []
        out.append(await reader.readline())
        out.append(await reader.readexactly(3))
        out.append(await reader.readuntil(b";"))
        try:
            await reader.readexactly(10)
        except asyncio.IncompleteReadError as exc:
            out.append(b"incomplete:" + exc.partial)
        out.append(b"eof" if reader.at_eof() else b"not eof")
        out.append(b"read:" + await reader.read())
        peer = writer.get_extra_info("peername")
        client = connection.client
        out.append(b"peer:%s" % str(client).encode() if peer == (client.host, client.port) else b"peer?")
        writer.writelines([b"|".join(out), b"\n"])
        await writer.drain()
        if self.close:
            out = [b"closing" if writer.is_closing() else b"open"]
            writer.write(b"last words\n")
            writer.close()
            writer.write(b"ignored once closing\n")
            out.append(b"closing" if writer.is_closing() else b"open")
            await asyncio.wait_for(writer.wait_closed(), 5)
            out.append(b"closed")
            try:
                await writer.drain()
            except ConnectionResetError:
                out.append(b"drain refused")
            type(self).after_close = out
        # Else returns without closing: the engine closes the client.


@pytest.mark.parametrize("close", [False, True], ids=["left-open", "closed"])
def test_client_streams_behave_as_asyncio_streams(close: bool) -> None:
    async def main() -> None:
        async with LineOrigin() as origin:
            Streams.origin_port = origin.port
            Streams.close = close
            Streams.after_close = []
            mitm, port = await proxy([Streams])
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"STREAMS\n")
                assert await asyncio.wait_for(reader.readline(), WAIT) == b"ready\n"
                writer.write(b"line one\nabcxy;tail")
                await writer.drain()
                writer.write_eof()
                report = await asyncio.wait_for(reader.read(), WAIT)
                writer.close()
                if close:
                    assert report.endswith(b"\nlast words\n")
                    report = report[: -len(b"last words\n")]
                    # wait_closed's future is settled a moment after the EOF went out.
                    await until(lambda: len(Streams.after_close) == 4)
                    assert Streams.after_close == [b"open", b"closing", b"closed", b"drain refused"]
                local = writer.get_extra_info("sockname")
                assert report == b"|".join(
                    [
                        b"line one\n",
                        b"abc",
                        b"xy;",
                        b"incomplete:tail",
                        b"eof",
                        b"read:",
                        b"peer:%s:%d" % (local[0].encode(), local[1]),
                    ]
                ) + b"\n"
                await origin.all_closed()
            finally:
                await mitm.stop()

    run(main())


class Boom(Protocol):
    """Fails in the step the client names."""

    async def resolve(self, connection, data):
        if data.startswith(b"BOOM resolve"):
            raise RuntimeError("resolve went boom")
        if not data.startswith(b"BOOM"):
            raise InvalidProtocol
        return "127.0.0.1", self.origin_port, False

    async def connect(self, connection, host, port, tls, data):
        if data.startswith(b"BOOM noserver"):
            return
        reader, writer = await asyncio.open_connection(host, port)
        connection.server = Host(reader, writer)
        if data.startswith(b"BOOM connect"):
            raise RuntimeError("connect went boom")
        if data.startswith(b"BOOM invalid"):
            raise InvalidProtocol("too late to decline")

    async def handle(self, connection):
        await connection.client.reader.readline()
        raise RuntimeError("handle went boom")


def test_exceptions_end_their_connection_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="mitm")

    async def main() -> None:
        async with LineOrigin() as origin:
            Boom.origin_port = origin.port
            Echo = echo_protocol(lambda: origin.port)
            mitm, port = await proxy([Boom, Echo])
            try:
                for step in ("resolve", "connect", "invalid", "noserver", "handle"):
                    assert await talk(port, b"BOOM %s\nmore\n" % step.encode()) == b""
                    assert await exchange(port, [b"ECHO still here\n"]) == [b"echo: ECHO still here\n"]
                await origin.all_closed()
            finally:
                await mitm.stop()

    run(main())
    text = caplog.text
    for step in ("resolve", "connect", "handle"):
        assert f"Boom.{step} raised RuntimeError: {step} went boom" in text, text
        assert f'in {step}\n    raise RuntimeError("{step} went boom")' in text
    assert "Boom.connect raised InvalidProtocol: too late to decline" in text
    assert "Boom.connect raised ValueError: Boom took the connection but connected no server" in text


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_no_socket_left_open() -> None:
    class Rude(Protocol):
        """Never closes anything itself."""

        async def resolve(self, connection, data):
            return "127.0.0.1", self.origin_port, False

        async def connect(self, connection, host, port, tls, data):
            reader, writer = await asyncio.open_connection(host, port)
            connection.server = Host(reader, writer)

        async def handle(self, connection):
            connection.client.writer.write(b"bye\n")

    async def main() -> None:
        async with LineOrigin() as origin:
            Rude.origin_port = origin.port
            mitm, port = await proxy([Rude])
            try:
                await talk(port, b"warm up\n")
                await origin.all_closed()
                before = _open_fds()
                for _ in range(20):
                    assert await talk(port, b"hi\n") == b"bye\n"
                await origin.all_closed()
                assert origin.seen == 21
                await until(lambda: _open_fds() <= before)
            finally:
                await mitm.stop()

    run(main())


def test_a_protocol_without_resolve_is_refused() -> None:
    class Half(Protocol):
        async def connect(self, connection, host, port, tls, data):
            pass

    class MyHTTP(protocol.HTTP):
        async def handle(self, connection):
            pass

    async def main() -> None:
        with pytest.raises(TypeError, match="Half does not define resolve"):
            await proxy([Half])
        with pytest.raises(TypeError, match=r"MyHTTP inherits resolve\(\) from a protocol the engine runs"):
            await proxy([MyHTTP])

    run(main())


def test_stopping_closes_a_connection_python_still_holds() -> None:
    """A handle that never returns: when the server stops (after its grace period),
    the client's socket and the server's are closed all the same."""

    class Hang(Protocol):
        # Held here, so that only the proxy can close the streams (not the GC).
        connections: List[Any] = []

        async def resolve(self, connection, data):
            return "127.0.0.1", self.origin_port, False

        async def connect(self, connection, host, port, tls, data):
            reader, writer = await asyncio.open_connection(host, port)
            connection.server = Host(reader, writer)
            connection.client.writer.write(b"ready\n")

        async def handle(self, connection):
            type(self).connections.append(connection)
            # The origin says nothing until asked: this waits until the server's
            # writer is closed under it.
            while await connection.server.reader.read(100):
                pass

    async def main() -> None:
        async with LineOrigin() as origin:
            Hang.origin_port = origin.port
            mitm, port = await proxy([Hang])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"HANG\n")
                assert await asyncio.wait_for(reader.readline(), WAIT) == b"ready\n"
                assert origin.open == 1
            finally:
                await asyncio.wait_for(mitm.stop(), WAIT)
            assert await asyncio.wait_for(reader.read(), WAIT) == b""
            writer.close()
            await origin.all_closed()

    run(main())


class StartTLS(Protocol):
    """``STARTTLS``: answers ``GO``, then TLS with the client (the proxy's
    certificate), relaying the decrypted lines to the line origin."""

    wait_for_hello = False

    async def resolve(self, connection, data):
        if data != b"STARTTLS\n":
            raise InvalidProtocol
        return "127.0.0.1", self.origin_port, False

    async def connect(self, connection, host, port, tls, data):
        writer = connection.client.writer
        writer.write(b"GO\n")
        await writer.drain()
        if self.wait_for_hello:
            # The ClientHello is in the reader's buffer before the upgrade starts:
            # it must be read again by TLS.
            await until(lambda: len(connection.client.reader._buffer) > 0)
        await writer.start_tls(server_hostname="localhost")
        reader, server = await asyncio.open_connection(host, port)
        connection.server = Host(reader, server)


def _tls_client(port: int, cadata: str, lines: List[bytes]) -> List[bytes]:
    """A blocking client: STARTTLS, then each line over TLS, one answer each."""
    import socket
    import ssl

    context = ssl.create_default_context(cadata=cadata)
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        raw.sendall(b"STARTTLS\n")
        assert raw.recv(3) == b"GO\n"
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            answers = []
            files = tls.makefile("rb")
            for line in lines:
                tls.sendall(line)
                answers.append(files.readline())
            return answers


@pytest.mark.parametrize("wait_for_hello", [False, True], ids=["at-once", "hello-buffered"])
def test_start_tls_on_the_client_stream(wait_for_hello: bool) -> None:
    async def main() -> None:
        async with LineOrigin() as origin:
            StartTLS.origin_port = origin.port
            StartTLS.wait_for_hello = wait_for_hello
            mitm, port = await proxy([StartTLS])
            try:
                lines = [b"secret one\n", b"secret two\n"]
                answers = await asyncio.get_running_loop().run_in_executor(
                    None, _tls_client, port, ca().pem, lines
                )
                assert answers == [b"echo: " + line for line in lines]
                await origin.all_closed()
            finally:
                await mitm.stop()

    run(main())


def test_a_data_hook_returning_none_ends_the_relay_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    class Forgetful(Middleware):
        async def server_data(self, connection, data):
            pass  # forgot to return data

    async def main() -> None:
        async with LineOrigin() as origin:
            Echo = echo_protocol(lambda: origin.port)
            mitm, port = await proxy([Echo], [Forgetful()])
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"ECHO hello\n")
                # The origin's answer goes through the hook, which fails: the proxy
                # closes the connection without sending anything.
                assert await asyncio.wait_for(reader.read(), WAIT) == b""
                writer.close()
                await origin.all_closed()
            finally:
                await mitm.stop()

    run(main())
    assert "Forgetful.server_data returned NoneType: a data hook returns the bytes" in caplog.text
