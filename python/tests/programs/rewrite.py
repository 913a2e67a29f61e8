"""A proxy whose middleware rewrites the origin's bytes: ``hello from origin`` becomes
``HELLO FROM PYTHON`` (as long, so ``Content-Length`` stays true). Written for the
original's API, run under both packages."""

import sys
from pathlib import Path

from mitm import MITM, CertificateAuthority, Middleware, protocol


class Shout(Middleware):
    async def mitm_started(self, host, port):
        pass

    async def client_connected(self, connection):
        pass

    async def server_connected(self, connection):
        pass

    async def client_data(self, connection, data):
        return data

    async def server_data(self, connection, data):
        return data.replace(b"hello from origin", b"HELLO FROM PYTHON")

    async def client_disconnected(self, connection):
        pass

    async def server_disconnected(self, connection):
        pass


MITM(
    host="127.0.0.1",
    port=0,
    protocols=[protocol.HTTP],
    middlewares=[Shout],
    certificate_authority=CertificateAuthority.init(Path(sys.argv[1])),
).run()
