"""A program written for the original mitm package, as its documentation shows one:
run unchanged under both packages by test_program.py.

    python original_program.py CA_DIR [PORT]
"""

import sys
from pathlib import Path

from mitm import MITM, CertificateAuthority, middleware, protocol

certificate_authority = CertificateAuthority.init(path=Path(sys.argv[1]))

mitm = MITM(
    host="127.0.0.1",
    port=int(sys.argv[2]) if len(sys.argv) > 2 else 0,
    protocols=[protocol.HTTP],
    middlewares=[middleware.Log],
    certificate_authority=certificate_authority,
)
mitm.run()
