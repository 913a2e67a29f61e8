"""Behaviour at the seams: a middleware rewriting bytes, an exception in a hook, a
hook that blocks or awaits long, Ctrl-C."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import PATIENCE, Origin, Package, curl, port_is_free, wait_for


def test_a_python_middleware_rewrites_the_response_bytes(
    package: Package, spawn, tmp_path: Path, origin80: Origin, tls_origin: Origin
) -> None:
    ca = tmp_path / "ca"
    proxy = spawn(package, "rewrite.py", str(ca))
    got = curl(origin80.url("/plain"), proxy=proxy.address)
    assert (got.status, got.body) == (200, b"HELLO FROM PYTHON: GET /plain"), (got, proxy.output())
    got = curl(tls_origin.url("/tls"), proxy=proxy.address, cacert=ca / "mitm.pem", args=["--http1.1"])
    assert (got.status, got.body) == (200, b"HELLO FROM PYTHON: GET /tls"), (got, proxy.output())


@pytest.mark.parametrize("where", ["raise-inline", "raise-awaiting"])
def test_an_exception_in_a_hook_ends_only_its_connection(
    ours: Package, spawn, origin: Origin, where: str
) -> None:
    proxy = spawn(ours, "raising_hook.py", where)
    got = curl(origin.url("/boom"), proxy=proxy.address)
    assert got.body != Origin.body("GET", "/boom"), f"the raising hook's connection went on: {got}"
    expected = "boom in client_data" if where == "raise-inline" else "boom in server_data"
    log = proxy.wait_output(f"RuntimeError: {expected}")
    assert "Traceback (most recent call last)" in log, f"no traceback logged:\n{log}"
    assert f'in {"client_data" if where == "raise-inline" else "server_data"}' in log, (
        f"the traceback names the hook:\n{log}"
    )
    # The server goes on: the next connection is served.
    got = curl(origin.url("/next"), proxy=proxy.address)
    assert (got.exit, got.status, got.body) == (0, 200, Origin.body("GET", "/next")), (got, proxy.output())
    assert proxy.proc.poll() is None


BLOCKING_HOOK_HOLDS_ALL = pytest.mark.xfail(
    strict=True,
    reason="a hook that blocks its engine thread (time.sleep inline) holds up every other "
    "connection until it returns: the engine's other worker does not take them over",
)


@pytest.mark.parametrize("how", [pytest.param("block", marks=BLOCKING_HOOK_HOLDS_ALL), "await"])
def test_a_slow_hook_holds_up_only_its_own_connection(ours: Package, spawn, origin: Origin, how: str) -> None:
    proxy = spawn(ours, "slow_hook.py", how)
    slow = subprocess.Popen(
        ["curl", "-sS", "--max-time", "60", "--proxy", f"http://{proxy.address}", origin.url("/slow")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        proxy.wait_output("holding /slow")
        # Several at once, more than the engine has threads.
        start = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: curl(origin.url(f"/fast{i}"), proxy=proxy.address), range(4)))
        for i, got in enumerate(results):
            assert (got.status, got.body) == (200, Origin.body("GET", f"/fast{i}")), (got, proxy.output())
        assert time.monotonic() - start < 5, "the other connections waited for /slow's hook"
        assert slow.poll() is None, "/slow was not held"
    finally:
        slow.kill()
        slow.wait()


def test_ctrl_c_stops_the_server_cleanly(ours: Package, spawn, origin: Origin) -> None:
    proxy = spawn(ours, "run_until_sigint.py")
    proxy.wait_output("MITM server started on")
    got = curl(origin.url("/before"), proxy=proxy.address)
    assert got.status == 200, (got, proxy.output())
    start = time.monotonic()
    status = proxy.interrupt(timeout=PATIENCE)
    took = time.monotonic() - start
    log = proxy.output()
    assert status == 0, f"exit status {status} after SIGINT:\n{log}"
    assert "Traceback" not in log, f"a traceback at Ctrl-C:\n{log}"
    assert took < 10, f"{took:.1f} s to stop"
    wait_for("the port to be free", lambda: port_is_free(proxy.port), timeout=5)
