"""request: read every request attribute and answer with them as JSON."""
import json

from mitmproxy import http


def request(flow: http.HTTPFlow) -> None:
    r = flow.request
    attrs = {
        "method": r.method,
        "scheme": r.scheme,
        "host": r.host,
        "port": r.port,
        "path": r.path,
        "url": r.url,
        "pretty_url": r.pretty_url,
        "pretty_host": r.pretty_host,
        "http_version": r.http_version,
        "host_header": r.host_header,
        "header_x_one": r.headers.get("X-ONE"),
        "header_all": r.headers.get_all("x-two"),
        "query": list(r.query.items()),
        "query_multi": r.query.get_all("a"),
        "cookies": sorted(r.cookies.items()),
        "content": r.content.decode(),
        "raw_content": r.raw_content.decode(),
        "text": r.text,
        "get_text": r.get_text(),
        "form": sorted(r.urlencoded_form.items()),
        "json": r.json() if r.headers.get("content-type") == "application/json" else None,
        "timestamp": isinstance(r.timestamp_start, float),
        "flow_id": isinstance(flow.id, str) and len(flow.id) > 10,
        "metadata": flow.metadata == {},
        "marked": bool(flow.marked),
        "client_peer": flow.client_conn.peername[0],
        "server_address": flow.server_conn.address,  # not connected yet: None
        "live": flow.live,
        "type": flow.type,
        "response": flow.response is None,
        "error": flow.error is None,
    }
    flow.response = http.Response.make(200, json.dumps(attrs), {"content-type": "application/json"})
