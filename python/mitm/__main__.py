"""``python -m mitm`` and the ``mitm`` command: the Rust binary's command line (the
same options, subcommands and output), with mitmproxy's addon scripts (``-s FILE``).
See :mod:`mitm._cli`."""

import sys

from mitm._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
