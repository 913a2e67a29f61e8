"""flowfilter.parse and matching, in request and response."""
from mitmproxy import flowfilter, http

POST_TO_FORM = flowfilter.parse("~m POST & ~u /form")
HEADER = flowfilter.parse("~h 'x-flag: on'")
ANSWERED = flowfilter.parse("~s & ~c 200")


def request(flow: http.HTTPFlow) -> None:
    flow.request.headers["x-post-form"] = str(POST_TO_FORM(flow))
    flow.request.headers["x-flag-match"] = str(HEADER(flow))
    flow.request.headers["x-answered-early"] = str(ANSWERED(flow))


def response(flow: http.HTTPFlow) -> None:
    flow.response.headers["x-answered"] = str(ANSWERED(flow))
    flow.response.headers["x-q"] = str(bool(flowfilter.match("~q", flow)))
