"""The data hooks' fast path (python/src/hook.rs, middleware.rs, rt.rs): hooks that never
await run on the engine's threads, one GIL hold per chunk, the engine's own buffer sent
on when a hook returns the bytes it got; hooks that await run on the asyncio loop; an
exception still ends only its connection, with its traceback logged."""

import asyncio
import logging
import threading

import pytest

from mitm import MITM, CertificateAuthority, Middleware

BODY = b"hello " * 100


async def origin():
    """A keep-alive HTTP/1.1 origin on loopback answering every GET with BODY."""

    async def serve(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def get(reader, writer, port, path="/"):
    """One request through the proxy on an open connection: the response's body."""
    writer.write(f"GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    return await asyncio.wait_for(reader.readexactly(length), 10)


async def through(tmp_path, middleware, client):
    """Runs `client(proxy_port, origin_port)` against a MITM with `middleware`."""
    server, port = await origin()
    ca = CertificateAuthority.init(tmp_path)
    try:
        async with MITM(host="127.0.0.1", port=0, middlewares=[middleware], certificate_authority=ca) as mitm:
            return await client(mitm.addresses[0][1], port)
    finally:
        server.close()


class Count(Middleware):
    def __init__(self):
        self.sent = 0
        self.received = 0
        self.threads = set()

    async def client_data(self, connection, data):
        self.sent += len(data)
        self.threads.add(threading.get_ident())
        return data

    async def server_data(self, connection, data):
        self.received += len(data)
        self.threads.add(threading.get_ident())
        return data


def test_bytes_returned_unchanged_pass_on_inline(tmp_path):
    count = Count()

    async def client(proxy, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
        bodies = [await get(reader, writer, port) for _ in range(200)]
        writer.close()
        return bodies

    bodies = asyncio.run(through(tmp_path, count, client))
    assert bodies == [BODY] * 200
    assert count.sent > 200 * 30 and count.received > 200 * len(BODY)
    # Never awaits: run on the engine's threads, not the loop's.
    assert threading.get_ident() not in count.threads


class Rewrite(Middleware):
    async def server_data(self, connection, data):
        # A bytearray of the same length: Content-Length still holds.
        return bytearray(data.replace(b"hello", b"HELLO"))


def test_rewritten_bytes_are_sent(tmp_path):
    async def client(proxy, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
        bodies = [await get(reader, writer, port) for _ in range(3)]
        writer.close()
        return bodies

    assert asyncio.run(through(tmp_path, Rewrite(), client)) == [BODY.replace(b"hello", b"HELLO")] * 3


class Awaits(Middleware):
    def __init__(self):
        self.threads = set()

    async def server_data(self, connection, data):
        await asyncio.sleep(0)
        self.threads.add(threading.get_ident())
        return data


def test_hooks_that_await_run_on_the_loop(tmp_path):
    awaits = Awaits()

    async def client(proxy, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
        bodies = [await get(reader, writer, port) for _ in range(5)]
        writer.close()
        return bodies

    assert asyncio.run(through(tmp_path, awaits, client)) == [BODY] * 5
    assert awaits.threads == {threading.get_ident()}


class Fails(Middleware):
    async def client_data(self, connection, data):
        if b"/boom" in data:
            raise ValueError("boom")
        return data


def test_an_exception_ends_only_its_connection(tmp_path, caplog):
    async def client(proxy, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
        assert await get(reader, writer, port) == BODY
        writer.write(f"GET http://127.0.0.1:{port}/boom HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await writer.drain()
        # The proxy closes this connection without an answer ...
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        # ... and serves the next one.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
        body = await get(reader, writer, port)
        writer.close()
        return body

    with caplog.at_level(logging.ERROR, logger="mitm"):
        assert asyncio.run(through(tmp_path, Fails(), client)) == BODY
    errors = [r for r in caplog.records if "Fails.client_data" in r.getMessage()]
    assert errors and errors[0].exc_info and errors[0].exc_info[0] is ValueError


class ReturnsNone(Middleware):
    async def server_data(self, connection, data):
        return None


def test_a_data_hook_returning_none_is_reported_and_sends_nothing(tmp_path, caplog):
    async def client(proxy, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
        writer.write(f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await writer.drain()
        # The origin's answer never comes through: the connection ends, or the engine
        # answers with an error of its own first.
        got = await asyncio.wait_for(reader.read(1000), 10)
        writer.close()
        return got

    with caplog.at_level(logging.ERROR, logger="mitm"):
        got = asyncio.run(through(tmp_path, ReturnsNone(), client))
    assert BODY[:20] not in got and not got.startswith(b"HTTP/1.1 200")
    assert any("returned None" in r.getMessage() for r in caplog.records)
