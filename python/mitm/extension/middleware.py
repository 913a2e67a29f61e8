"""The original's ``mitm.extension.middleware``: the same as :mod:`mitm.middleware`."""

from mitm.middleware import *  # noqa: F401,F403
from mitm.middleware import HTTPLog, Log  # noqa: F401
from mitm.core import Connection, Middleware  # noqa: F401 - the original's names here
