"""mitm: a customizable man-in-the-middle proxy.

The original ``mitm`` package's API (:class:`MITM`, :class:`Middleware`,
:class:`Protocol`, :class:`CertificateAuthority`, ...) on a Rust engine::

    from mitm import MITM, middleware, protocol

    MITM(protocols=[protocol.HTTP], middlewares=[middleware.Log]).run()
"""

import atexit
import logging
import sys

from mitm import _native

__version__ = _native.__version__

# Before the interpreter finalizes, the engine's threads leave Python (rt.rs, at_exit).
atexit.register(_native.at_exit)

# As the original: log lines on stdout at INFO, unless the program set up logging.
logging.basicConfig(
    stream=sys.stdout,
    format="%(asctime)s %(levelname)-8s %(message)s",
    datefmt="%Y-%m-%d %H:%M:%S",
    level=logging.INFO,
)

from mitm import middleware, protocol  # noqa: E402
from mitm.core import Connection, Flow, Host, InvalidProtocol, Middleware, Protocol  # noqa: E402
from mitm.crypto import CertificateAuthority  # noqa: E402
from mitm.mitm import MITM, default_data_dir  # noqa: E402

# The original's top level also had what its modules star-imported.
from mitm.crypto import LRU_MAX_SIZE, new_RSA, new_X509  # noqa: E402,F401
from mitm.middleware import HTTPLog, Log  # noqa: E402,F401
from mitm.protocol import HTTP  # noqa: E402,F401

__data__ = default_data_dir()

__all__ = [
    "Host",
    "Connection",
    "Flow",
    "MITM",
    "Middleware",
    "Protocol",
    "InvalidProtocol",
    "CertificateAuthority",
]
