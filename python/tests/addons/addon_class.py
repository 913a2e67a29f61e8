"""addons = [...]: classes with hooks and state, one nested."""
from mitmproxy import http


class Inner:
    def response(self, flow: http.HTTPFlow) -> None:
        flow.response.headers["x-inner"] = "1"


class Counter:
    def __init__(self):
        self.count = 0
        self.addons = [Inner()]

    def request(self, flow: http.HTTPFlow) -> None:
        self.count += 1
        flow.metadata["n"] = self.count

    def response(self, flow: http.HTTPFlow) -> None:
        flow.response.headers["x-count"] = str(flow.metadata["n"])


addons = [Counter()]
