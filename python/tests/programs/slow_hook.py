"""A proxy (ours) whose middleware holds requests to ``/slow`` for 20 s in
``client_data``: ``block`` with ``time.sleep`` (a hook that never awaits, run inline on
an engine thread), ``await`` with ``asyncio.sleep`` (on the asyncio loop)."""

import asyncio
import sys
import time

from mitm import MITM, Middleware


class Blocking(Middleware):
    async def client_data(self, connection, data):
        if b"/slow" in data:
            print("holding /slow", flush=True)
            time.sleep(20)
        return data


class Awaiting(Middleware):
    async def client_data(self, connection, data):
        if b"/slow" in data:
            print("holding /slow", flush=True)
            await asyncio.sleep(20)
        return data


middleware = Blocking() if sys.argv[1] == "block" else Awaiting()
MITM(host="127.0.0.1", port=0, middlewares=[middleware]).run()
