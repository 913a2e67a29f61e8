"""The addon scripts/addon-bench.sh measures (issue 23): a header added to every request,
every response's status read. Runs unchanged under mitmdump and under mitm -s."""

from mitmproxy import http

statuses: dict[int, int] = {}


def request(flow: http.HTTPFlow) -> None:
    flow.request.headers["x-bench"] = "1"


def response(flow: http.HTTPFlow) -> None:
    assert flow.response is not None
    status = flow.response.status_code
    statuses[status] = statuses.get(status, 0) + 1
