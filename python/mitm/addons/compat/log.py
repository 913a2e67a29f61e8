"""mitmproxy's ``log`` module: the ALERT level; scripts log with ``logging``."""

import logging

#: mitmproxy's level above WARNING for messages shown prominently.
ALERT = logging.WARNING + 5
logging.addLevelName(ALERT, "ALERT")
