"""requestheaders + request: change what the origin gets (headers, query, cookies,
method, path, body)."""
from mitmproxy import http


def requestheaders(flow: http.HTTPFlow) -> None:
    flow.request.headers["x-from-requestheaders"] = "1"


def request(flow: http.HTTPFlow) -> None:
    r = flow.request
    r.headers["x-added"] = "yes"
    r.headers.add("x-multi", "a")
    r.headers.add("x-multi", "b")
    if "x-remove-me" in r.headers:
        del r.headers["x-remove-me"]
    r.query["added"] = "q"
    if "drop" in r.query:
        del r.query["drop"]
    r.cookies["c2"] = "two"
    if r.path.startswith("/rewrite"):
        r.path = "/rewritten" + r.path[len("/rewrite"):]
    if r.method == "POST" and r.urlencoded_form:
        form = r.urlencoded_form
        form["extra"] = "e"
    elif r.method == "PUT":
        r.text = r.text.upper()
