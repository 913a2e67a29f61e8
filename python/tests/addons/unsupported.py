"""What the compat layer does not support raises AttributeError naming it."""
from mitmproxy import http


def request(flow: http.HTTPFlow) -> None:
    try:
        flow.backup()
        outcome = "no error"
    except AttributeError as e:
        outcome = "AttributeError: " + ("backup" if "backup" in str(e) else str(e))
    flow.request.headers["x-unsupported"] = outcome
