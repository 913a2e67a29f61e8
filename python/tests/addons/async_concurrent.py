"""async def hooks and @concurrent."""
import asyncio
import logging
import time

from mitmproxy import http
from mitmproxy.script import concurrent


async def request(flow: http.HTTPFlow) -> None:
    await asyncio.sleep(0.01)
    flow.request.headers["x-async"] = "1"


@concurrent
def response(flow: http.HTTPFlow) -> None:
    if flow.request.path == "/slow":
        logging.warning("ADDON slow hook sleeps")
        time.sleep(1)
    flow.response.headers["x-concurrent"] = "1"
