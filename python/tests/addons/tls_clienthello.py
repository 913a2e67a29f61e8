"""tls_clienthello: a connection whose ClientHello names "localhost" is let through
untouched (the client talks TLS with the origin); any other is intercepted."""

import logging

from mitmproxy import http, tls


def tls_clienthello(data: tls.ClientHelloData) -> None:
    hello = data.client_hello
    alpn = [p.decode() for p in hello.alpn_protocols]
    logging.info(
        "ADDON tls_clienthello sni=%s server=%s client=%s alpn=%s",
        hello.sni,
        data.context.server.address,
        data.context.client.peername[0],
        alpn,
    )
    if hello.sni == "localhost":
        data.ignore_connection = True


def request(flow: http.HTTPFlow) -> None:
    logging.info("ADDON request %s %s", flow.request.pretty_host, flow.request.path)
