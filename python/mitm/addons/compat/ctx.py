"""``mitmproxy.ctx``: ``ctx.options`` (the options scripts declared), ``ctx.log``
(``info``, ``warn``, ``error``, ``debug``, ``alert``, to the ``mitm.addons`` logger)
and ``ctx.master`` (``shutdown()`` only)."""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from mitm.addons._options import Options
from mitm.addons.compat._unsupported import Refusing

_logger = logging.getLogger("mitm.addons")


class Log(Refusing):
    """mitmproxy's ``ctx.log``: messages go to the ``mitm.addons`` logger."""

    __slots__ = ()

    def debug(self, txt: Any) -> None:
        _logger.debug("%s", txt)

    def info(self, txt: Any) -> None:
        _logger.info("%s", txt)

    def alert(self, txt: Any) -> None:
        _logger.log(logging.WARNING + 5, "%s", txt)

    def warn(self, txt: Any) -> None:
        _logger.warning("%s", txt)

    warning = warn

    def error(self, txt: Any) -> None:
        _logger.error("%s", txt)

    def __call__(self, txt: Any, level: str = "info") -> None:
        getattr(self, level)(txt)


class Master(Refusing):
    """``ctx.master``: ``shutdown()`` stops the server the scripts run in."""

    __slots__ = ("_shutdown",)

    def __init__(self, shutdown: Optional[Callable[[], None]] = None) -> None:
        self._shutdown = shutdown

    @property
    def options(self) -> Options:
        return options

    def shutdown(self) -> None:
        """Stops the server (when the host knows how)."""
        if self._shutdown is None:
            raise AttributeError("ctx.master.shutdown: this addon host was not given a way to stop its server")
        self._shutdown()


#: The options of the running addon host.
options: Options = Options()
#: Logging.
log = Log()
#: The running proxy (minimal).
master = Master()
