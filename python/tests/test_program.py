"""A program written for the original (programs/original_program.py: ``MITM``,
``middleware.Log``, ``protocol.HTTP``, ``CertificateAuthority.init(path)``) serves curl
and headless Chromium, for HTTP and HTTPS, unchanged under both packages."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import Origin, Package, chromium_get, curl


def test_the_originals_program_serves_curl(
    package: Package, spawn, tmp_path: Path, origin80: Origin, tls_origin: Origin
) -> None:
    ca = tmp_path / "ca"
    proxy = spawn(package, "original_program.py", str(ca))
    got = curl(origin80.url("/curl"), proxy=proxy.address)
    assert (got.exit, got.status, got.body) == (0, 200, Origin.body("GET", "/curl")), (got, proxy.output())
    got = curl(tls_origin.url("/curl-tls"), proxy=proxy.address, cacert=ca / "mitm.pem")
    assert (got.exit, got.status, got.body) == (0, 200, Origin.body("GET", "/curl-tls")), (got, proxy.output())
    # middleware.Log's lines, as the original writes them (it bolds addresses with
    # terminal escapes even in a file; ours only on a terminal).
    log = re.sub(r"\x1b\[[0-9;]*m", "", proxy.wait_output("has disconnected."))
    assert "MITM server started on" in log, log
    assert re.search(r"Client 127\.0\.0\.1:\d+ has connected\.", log), log


def test_the_originals_program_serves_chromium(
    package: Package, spawn, tmp_path: Path, origin80: Origin, tls_origin: Origin
) -> None:
    ca = tmp_path / "ca"
    proxy = spawn(package, "original_program.py", str(ca))
    dom = chromium_get(origin80.url("/page"), proxy.address, None, tmp_path / "chromium-http")
    assert "hello from origin: GET /page" in dom, f"{dom}\n{proxy.output()[-3000:]}"
    dom = chromium_get(
        tls_origin.url("/tls-page"), proxy.address, (ca / "mitm.pem").read_text(), tmp_path / "chromium-https"
    )
    assert "hello from origin: GET /tls-page" in dom, f"{dom}\n{proxy.output()[-3000:]}"
