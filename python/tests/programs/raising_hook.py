"""A proxy (ours) whose middleware raises in a hook for requests to ``/boom``:
``client_data`` inline (it never awaits) with ``raise-inline``, ``server_data`` on the
asyncio loop (it awaits first) with ``raise-awaiting``."""

import asyncio
import sys

from mitm import MITM, Middleware


class Inline(Middleware):
    async def client_data(self, connection, data):
        if b"/boom" in data:
            raise RuntimeError("boom in client_data")
        return data


class Awaiting(Middleware):
    def __init__(self):
        self.boom = set()

    async def client_data(self, connection, data):
        await asyncio.sleep(0)
        if b"/boom" in data:
            self.boom.add(id(connection))
        return data

    async def server_data(self, connection, data):
        await asyncio.sleep(0)
        if id(connection) in self.boom:
            # Forgotten first: a later connection may get the same id once this one
            # is freed.
            self.boom.discard(id(connection))
            raise RuntimeError("boom in server_data")
        return data


middleware = Inline() if sys.argv[1] == "raise-inline" else Awaiting()
MITM(host="127.0.0.1", port=0, middlewares=[middleware]).run()
