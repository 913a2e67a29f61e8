"""request: answer locally, kill a flow; response sees the local answer too."""
from mitmproxy import http


def request(flow: http.HTTPFlow) -> None:
    if flow.request.path == "/local":
        flow.response = http.Response.make(203, b"from the script", {"x-local": "1"})
    elif flow.request.path == "/kill":
        flow.kill()


def response(flow: http.HTTPFlow) -> None:
    flow.response.headers["x-response-hook"] = flow.request.path
