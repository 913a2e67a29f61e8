"""The original's ``mitm.extension`` package: the built-in middlewares and protocols."""

from mitm import middleware, protocol
from mitm.middleware import *  # noqa: F401,F403
from mitm.protocol import *  # noqa: F401,F403
from mitm.core import Connection, Flow, Host, Middleware, Protocol  # noqa: F401 - the original's names here
