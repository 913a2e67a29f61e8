"""load(loader.add_option), configure(updated), running(), options read in a hook."""
import logging
import typing

from mitmproxy import ctx, http

events = []


def load(loader):
    loader.add_option("greeting", str, "hello", "a greeting")
    loader.add_option("times", int, 1, "repeat")
    loader.add_option("shout", bool, False, "upper case")
    loader.add_option("maybe", typing.Optional[str], None, "optional")
    events.append("load")


def configure(updated):
    events.append("configure:" + ",".join(sorted(n for n in updated if n in ("greeting", "times", "shout", "maybe"))))


def running():
    events.append("running")
    logging.info("ADDON running")


def request(flow: http.HTTPFlow) -> None:
    text = ctx.options.greeting * ctx.options.times
    if ctx.options.shout:
        text = text.upper()
    flow.response = http.Response.make(
        200, text, {"x-events": " ".join(events), "x-maybe": repr(ctx.options.maybe)}
    )


def done():
    logging.warning("ADDON done")
