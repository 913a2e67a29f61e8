"""client_connected, server_connect(ed), server_disconnected, client_disconnected,
and the flow's client_conn/server_conn."""
import logging

from mitmproxy import http


def client_connected(client) -> None:
    logging.warning("ADDON client_connected %s", client.peername[0])


def server_connect(data) -> None:
    logging.warning("ADDON server_connect %s", data.server.address[0])


def server_connected(data) -> None:
    logging.warning("ADDON server_connected %s", data.server.peername[0])


def server_disconnected(data) -> None:
    logging.warning("ADDON server_disconnected")


def client_disconnected(client) -> None:
    logging.warning("ADDON client_disconnected")


def response(flow: http.HTTPFlow) -> None:
    flow.response.headers["x-client"] = flow.client_conn.peername[0]
    flow.response.headers["x-server"] = "%s:%d" % flow.server_conn.address
    flow.response.headers["x-tls"] = str(flow.client_conn.tls_established)
