"""flow.intercept(): /hold is held in the web UI until resumed there; /plain goes on."""

import logging

from mitmproxy import http


def request(flow: http.HTTPFlow) -> None:
    if flow.request.path == "/hold":
        flow.intercept()
        logging.info("ADDON held %s %s", flow.request.path, flow.intercepted)


def response(flow: http.HTTPFlow) -> None:
    logging.info("ADDON response %s intercepted=%s", flow.request.path, flow.intercepted)
