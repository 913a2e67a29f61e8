"""A hook that raises: logged with its traceback, the flow goes on. error(flow) for a
failed upstream."""
import logging

from mitmproxy import http


def request(flow: http.HTTPFlow) -> None:
    if flow.request.path == "/raise":
        raise RuntimeError("boom in request")
    flow.request.headers["x-after"] = "1"


def response(flow: http.HTTPFlow) -> None:
    if flow.request.path == "/raise":
        raise ValueError("boom in response")
    flow.response.headers["x-response"] = "1"


def error(flow: http.HTTPFlow) -> None:
    logging.warning("ADDON error hook: %s %s", flow.request.path, bool(flow.error and flow.error.msg))
