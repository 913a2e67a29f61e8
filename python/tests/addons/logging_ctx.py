"""Logging through ctx.log and logging."""
import logging

from mitmproxy import ctx


def request(flow) -> None:
    ctx.log.info("ADDON ctx info " + flow.request.path)
    ctx.log.warn("ADDON ctx warn " + flow.request.path)
    ctx.log.error("ADDON ctx error " + flow.request.path)
    logging.warning("ADDON logging warning %s", flow.request.path)
