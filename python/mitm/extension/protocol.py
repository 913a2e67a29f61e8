"""The original's ``mitm.extension.protocol``: the same as :mod:`mitm.protocol`."""

from mitm.protocol import *  # noqa: F401,F403
from mitm.protocol import HTTP, InvalidProtocol  # noqa: F401
from mitm.core import Connection, Flow, Host, Protocol  # noqa: F401 - the original's names here
