"""A proxy on port 0 with a given CA, written for the original's API (run under both
packages): ``serve_ca.py init DIR`` uses ``CertificateAuthority.init(DIR)``,
``serve_ca.py load DIR`` uses ``CertificateAuthority.load(DIR/mitm.pem, DIR/mitm.key)``.
"""

import sys
from pathlib import Path

from mitm import MITM, CertificateAuthority, middleware, protocol

how, directory = sys.argv[1], Path(sys.argv[2])
if how == "init":
    ca = CertificateAuthority.init(directory)
else:
    ca = CertificateAuthority.load(directory / "mitm.pem", directory / "mitm.key")
MITM(
    host="127.0.0.1",
    port=0,
    protocols=[protocol.HTTP],
    middlewares=[middleware.Log],
    certificate_authority=ca,
).run()
