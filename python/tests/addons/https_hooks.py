"""http_connect, and an intercepted HTTPS flow's scheme, client_conn and server_conn."""
import logging

from mitmproxy import http


def http_connect(flow: http.HTTPFlow) -> None:
    logging.warning("ADDON http_connect %s %s %s", flow.request.method, flow.request.host, flow.request.port)


def request(flow: http.HTTPFlow) -> None:
    flow.request.headers["x-scheme"] = flow.request.scheme
    flow.request.headers["x-url"] = flow.request.url


def response(flow: http.HTTPFlow) -> None:
    flow.response.headers["x-tls"] = str(flow.client_conn.tls_established)
    flow.response.headers["x-sni"] = str(flow.client_conn.sni)
    flow.response.headers["x-server-sni"] = str(flow.server_conn.sni)
    flow.response.headers["x-server"] = "%s:%d" % flow.server_conn.address
