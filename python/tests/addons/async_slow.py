"""An async def hook that awaits 1 s on /slow."""
import asyncio
import logging

from mitmproxy import http


async def request(flow: http.HTTPFlow) -> None:
    if flow.request.path == "/slow":
        logging.warning("ADDON slow hook sleeps")
        await asyncio.sleep(1)
    flow.request.headers["x-async-slow"] = "1"
