"""A plain sync hook that blocks 1 s on /slow."""
import logging
import time

from mitmproxy import http


def request(flow: http.HTTPFlow) -> None:
    if flow.request.path == "/slow":
        logging.warning("ADDON slow hook sleeps")
        time.sleep(1)
    flow.request.headers["x-slow-script"] = "1"
