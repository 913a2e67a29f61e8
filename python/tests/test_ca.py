"""The CA files of the original and ours serve each other, and ours keeps and never
overwrites a CA."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from conftest import Origin, Package, curl


@pytest.mark.parametrize("how", ["init", "load"])
@pytest.mark.parametrize("maker", ["original", "ours"])
def test_a_ca_made_by_one_package_serves_https_on_the_other(
    request: pytest.FixtureRequest, maker: str, how: str, spawn, tmp_path: Path, tls_origin: Origin
) -> None:
    made_by: Package = request.getfixturevalue(maker)
    served_by: Package = request.getfixturevalue("ours" if maker == "original" else "original")
    directory = tmp_path / "ca"
    made_by.run(
        "import sys; from pathlib import Path; from mitm import CertificateAuthority\n"
        "CertificateAuthority.init(Path(sys.argv[1]))\n".replace("sys.argv[1]", repr(str(directory)))
    )
    pem = (directory / "mitm.pem").read_bytes()
    key = (directory / "mitm.key").read_bytes()
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----"), pem[:40]

    proxy = spawn(served_by, "serve_ca.py", how, str(directory))
    got = curl(tls_origin.url(f"/{maker}-ca"), proxy=proxy.address, cacert=directory / "mitm.pem", args=["--http1.1"])
    assert (got.exit, got.status, got.body) == (0, 200, Origin.body("GET", f"/{maker}-ca")), (
        f"curl trusting the CA {made_by} made, through {served_by}: {got}\n{proxy.output()}"
    )
    # Using a CA changes nothing in its files.
    assert (directory / "mitm.pem").read_bytes() == pem
    assert (directory / "mitm.key").read_bytes() == key


def test_mitm_keeps_its_ca_across_restarts(ours: Package, proxy_env: dict, tmp_path: Path) -> None:
    show = (
        "from mitm import MITM, __data__\n"
        "mitm = MITM(port=0)\n"
        "print(mitm.certificate_authority.fingerprint, __data__)\n"
    )
    first = ours.run(show, env=proxy_env).split()
    second = ours.run(show, env=proxy_env).split()
    assert first == second, "a second MITM() made a new CA instead of keeping the first"
    data = Path(first[1])
    assert data.is_relative_to(Path(proxy_env["HOME"])), f"the CA is kept in the user's data directory: {data}"
    key = data / "mitm.key"
    assert key.exists() and (data / "mitm.pem").exists(), sorted(p.name for p in data.iterdir())
    assert stat.S_IMODE(key.stat().st_mode) == 0o600, "the key is readable by its owner alone"


def test_save_never_overwrites_another_ca(ours: Package, tmp_path: Path) -> None:
    out = ours.run(
        f"""
from pathlib import Path
from mitm import CertificateAuthority
d = Path({str(tmp_path)!r})
a, b = CertificateAuthority(), CertificateAuthority()
a.save(d / "c.pem", d / "c.key")
before = ((d / "c.pem").read_bytes(), (d / "c.key").read_bytes())
a.save(d / "c.pem", d / "c.key")  # the same CA again: nothing to do, no error
try:
    b.save(d / "c.pem", d / "c.key")
except FileExistsError as err:
    print("refused:", err)
else:
    print("overwritten")
assert ((d / "c.pem").read_bytes(), (d / "c.key").read_bytes()) == before, "the files changed"
(d / "half").mkdir()
(d / "half" / "mitm.pem").write_text("mine")
try:
    CertificateAuthority.init(d / "half")
except Exception as err:
    print("init refused:", type(err).__name__, err)
assert (d / "half" / "mitm.pem").read_text() == "mine"
assert not (d / "half" / "mitm.key").exists()
"""
    )
    assert "refused:" in out and "overwritten" not in out, out
    assert "init refused:" in out, out
