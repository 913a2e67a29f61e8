"""The proxy scripts/py-bench.sh measures: `MITM` with one Python middleware that counts
the bytes of both data hooks, unchanged whichever `mitm` package is installed (this
repository's, or the original mitm 1.5.0).

    python py-bench-proxy.py

Listens on 127.0.0.1, on a free port, and prints `mitm listening on http://ADDR` once it
accepts connections (what mitm-bench's --proxy-cmd waits for). Keeps its CA, and the
original's user data directory, in $MITM_BENCH_DIR (a temporary directory without it).
"""

import os
import socket
import sys
import tempfile
from pathlib import Path

data_dir = os.environ.get("MITM_BENCH_DIR") or tempfile.mkdtemp(prefix="py-bench-")
# The original saves its CA under the user data directory at every start: keep it here.
os.environ["XDG_DATA_HOME"] = data_dir

from mitm import MITM, CertificateAuthority, Middleware  # noqa: E402


class CountBytes(Middleware):
    """Counts the bytes both ways; every hook defined, as the original's abstract base
    wants."""

    def __init__(self):
        self.client_bytes = 0
        self.server_bytes = 0

    async def mitm_started(self, host, port):
        print(f"mitm listening on http://{host}:{port}", flush=True)

    async def client_connected(self, connection):
        pass

    async def server_connected(self, connection):
        pass

    async def client_data(self, connection, data):
        self.client_bytes += len(data)
        return data

    async def server_data(self, connection, data):
        self.server_bytes += len(data)
        return data

    async def client_disconnected(self, connection):
        pass

    async def server_disconnected(self, connection):
        pass


def free_port() -> int:
    # The original reports the port it was given, not the one it bound: pick one.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ca = CertificateAuthority.init(path=Path(data_dir))
    MITM(
        host="127.0.0.1",
        port=free_port(),
        middlewares=[CountBytes()],
        certificate_authority=ca,
    ).run()


if __name__ == "__main__":
    sys.exit(main())
