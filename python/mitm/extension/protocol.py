"""The original's ``mitm.extension.protocol``: the same as :mod:`mitm.protocol`."""

from mitm.protocol import *  # noqa: F401,F403
from mitm.protocol import HTTP, InvalidProtocol  # noqa: F401
