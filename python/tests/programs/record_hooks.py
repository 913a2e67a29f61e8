"""A proxy whose one middleware records every hook call, as JSON lines in the file
``$MITM_TEST_RECORD``. Written for the original package's API and run unchanged under
both packages (test_hook_order.py compares what they record).

Each line: ``{"hook": name, "conn": n, "server": bool(connection.server), "client":
str(connection.client), "size": len(data)}`` (``conn`` numbers connections in the order
they are first seen; ``mitm_started`` has ``host`` and ``port`` instead).

``MITM_TEST_AWAIT=1`` makes every hook await (``asyncio.sleep(0)``) before it records:
on our package such hooks run on the asyncio loop instead of inline on the engine's
thread, and must be called in the same order. The CA is kept in ``$MITM_TEST_CA_DIR``.
"""

import asyncio
import json
import os
from pathlib import Path

from mitm import MITM, CertificateAuthority, Middleware, protocol

RECORD = os.environ["MITM_TEST_RECORD"]


class Recorder(Middleware):
    """Records each hook call; changes nothing."""

    def __init__(self):
        # id(connection) -> (connection, number); the connection is kept so that its
        # id is not reused by another.
        self.seen = {}

    def note(self, hook, connection=None, data=None, **extra):
        event = {"hook": hook, **extra}
        if connection is not None:
            key = id(connection)
            if key not in self.seen:
                self.seen[key] = (connection, len(self.seen))
            event["conn"] = self.seen[key][1]
            event["server"] = bool(connection.server)
            event["client"] = str(connection.client)
        if data is not None:
            event["size"] = len(data)
        with open(RECORD, "a") as f:
            f.write(json.dumps(event) + "\n")

    async def mitm_started(self, host, port):
        self.note("mitm_started", host=host, port=port)

    async def client_connected(self, connection):
        self.note("client_connected", connection)

    async def server_connected(self, connection):
        self.note("server_connected", connection)

    async def client_data(self, connection, data):
        self.note("client_data", connection, data)
        return data

    async def server_data(self, connection, data):
        self.note("server_data", connection, data)
        return data

    async def client_disconnected(self, connection):
        self.note("client_disconnected", connection)

    async def server_disconnected(self, connection):
        self.note("server_disconnected", connection)


class AwaitingRecorder(Recorder):
    """The same, each hook awaiting first."""

    async def mitm_started(self, host, port):
        await asyncio.sleep(0)
        await super().mitm_started(host, port)

    async def client_connected(self, connection):
        await asyncio.sleep(0)
        await super().client_connected(connection)

    async def server_connected(self, connection):
        await asyncio.sleep(0)
        await super().server_connected(connection)

    async def client_data(self, connection, data):
        await asyncio.sleep(0)
        return await super().client_data(connection, data)

    async def server_data(self, connection, data):
        await asyncio.sleep(0)
        return await super().server_data(connection, data)

    async def client_disconnected(self, connection):
        await asyncio.sleep(0)
        await super().client_disconnected(connection)

    async def server_disconnected(self, connection):
        await asyncio.sleep(0)
        await super().server_disconnected(connection)


if __name__ == "__main__":
    recorder = AwaitingRecorder() if os.environ.get("MITM_TEST_AWAIT") == "1" else Recorder()
    MITM(
        host="127.0.0.1",
        port=0,
        protocols=[protocol.HTTP],
        middlewares=[recorder],
        certificate_authority=CertificateAuthority.init(Path(os.environ["MITM_TEST_CA_DIR"])),
    ).run()
