"""responseheaders + response: read and change what the client gets."""
import json

from mitmproxy import http


def responseheaders(flow: http.HTTPFlow) -> None:
    flow.response.headers["x-from-responseheaders"] = str(flow.response.status_code)


def response(flow: http.HTTPFlow) -> None:
    r = flow.response
    seen = {
        "status_code": r.status_code,
        "reason": r.reason,
        "http_version": r.http_version,
        "content_type": r.headers["content-type"],
        "text": r.text,
        "has_request": flow.request.path,
    }
    r.headers["x-seen"] = json.dumps(seen, sort_keys=True)
    r.headers["x-added"] = "1"
    if flow.request.path == "/status":
        r.status_code = 201
        r.reason = "Made"
    if flow.request.path == "/replace":
        flow.response = http.Response.make(418, b"replaced", {"x-replaced": "1"})
    else:
        r.text = r.text.replace("origin", "ORIGIN")
