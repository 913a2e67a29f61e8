"""websocket_start, websocket_message (flow.websocket.messages[-1]: change, drop),
websocket_end."""
import logging

from mitmproxy import http


def websocket_start(flow: http.HTTPFlow) -> None:
    logging.warning("ADDON websocket_start %s", flow.request.path)


def websocket_message(flow: http.HTTPFlow) -> None:
    message = flow.websocket.messages[-1]
    if message.from_client:
        if message.text == "drop me":
            message.drop()
        else:
            message.text = message.text.upper()
    else:
        message.content = message.content + b"!"
    logging.warning("ADDON websocket_message %s %s", message.from_client, message.is_text)


def websocket_end(flow: http.HTTPFlow) -> None:
    logging.warning("ADDON websocket_end %d", len(flow.websocket.messages))
