"""flow.marked and flow.comment: set in request, read back in response; saved with the
flow (and shown in the web UI)."""

import logging

from mitmproxy import http


def request(flow: http.HTTPFlow) -> None:
    if flow.request.path.startswith("/mark"):
        flow.marked = ":star:"
        flow.comment = "seen by the script"


def response(flow: http.HTTPFlow) -> None:
    logging.info("ADDON response %s marked=%r comment=%r", flow.request.path, flow.marked, flow.comment)
