"""Our engine calls a Python middleware's hooks in the original's order.

One recorder (programs/record_hooks.py, written for the original's API) runs under
each package; the same curl traffic goes through each: a plain HTTP GET, then an
HTTPS GET through ``CONNECT``. The sequences of hook calls, per connection, must be
equal: names, order, and for the data hooks whether ``connection.server`` was set
(``client_data`` before a server is connected is the original's "client to mitm").

Consecutive calls of the same data hook are collapsed into one: how a stream is cut
into chunks depends on socket timing and buffer sizes (the original reads 8192 bytes at
a time, our engine hands on what each read gave), so the number of calls legitimately
differs; their order relative to the other hooks does not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from conftest import Origin, Package, curl, wait_for

DATA_HOOKS = ("client_data", "server_data")

#: What the original does for each request (its mitm.py and protocol.HTTP): the first
#: client bytes (the request, or the CONNECT) go through client_data before any server
#: is connected; the request head is sent on by the protocol itself; at the end the
#: server is closed and reported before the client.
EXPECTED = {
    "plain": [
        ("client_connected", None),
        ("client_data", False),
        ("server_connected", None),
        ("server_data", True),
        ("server_disconnected", None),
        ("client_disconnected", None),
    ],
    "https": [
        ("client_connected", None),
        ("client_data", False),
        ("server_connected", None),
        ("client_data", True),
        ("server_data", True),
        ("server_disconnected", None),
        ("client_disconnected", None),
    ],
}


def read_events(path: Path) -> List[Dict]:
    """The recorded events (none when the file is not there yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sequence(events: List[Dict], conn: int) -> List[Tuple[str, object]]:
    """Connection ``conn``'s hooks, data hooks with whether a server was set, runs of
    the same data hook collapsed."""
    out: List[Tuple[str, object]] = []
    for e in events:
        if e.get("conn") != conn:
            continue
        step = (e["hook"], e["server"] if e["hook"] in DATA_HOOKS else None)
        if out and step == out[-1] and step[0] in DATA_HOOKS:
            continue
        out.append(step)
    return out


def record(
    package: Package,
    spawn,
    tmp_path: Path,
    awaiting: bool,
    origin80: Origin,
    tls_origin: Origin,
    http1: bool = True,
) -> List[Dict]:
    """Runs the recorder under ``package``, sends the traffic, returns what it recorded."""
    path = tmp_path / f"{package}.jsonl"
    ca_dir = tmp_path / f"{package}-ca"
    proxy = spawn(
        package,
        "record_hooks.py",
        env={
            "MITM_TEST_RECORD": str(path),
            "MITM_TEST_CA_DIR": str(ca_dir),
            "MITM_TEST_AWAIT": "1" if awaiting else "0",
        },
    )

    def ended(n: int):
        return lambda: sum(e["hook"] == "client_disconnected" for e in read_events(path)) >= n

    got = curl(origin80.url("/plain"), proxy=proxy.address)
    assert (got.exit, got.status, got.body) == (0, 200, Origin.body("GET", "/plain")), (got, proxy.output())
    wait_for(f"{package}'s first connection to end", ended(1))

    # HTTP/1.1, as the original speaks (it offers no ALPN): offered HTTP/2, our engine
    # speaks it and the data hooks see none of its bytes (test_data_hooks_see_http2).
    got = curl(tls_origin.url("/secure"), proxy=proxy.address, cacert=ca_dir / "mitm.pem", args=["--http1.1"] if http1 else [])
    assert (got.exit, got.status, got.body) == (0, 200, Origin.body("GET", "/secure")), (got, proxy.output())
    wait_for(f"{package}'s second connection to end", ended(2))
    proxy.stop()
    return read_events(path)


@pytest.mark.parametrize("awaiting", [False, True], ids=["inline-hooks", "awaiting-hooks"])
def test_hooks_are_called_in_the_originals_order(
    ours: Package, original: Package, spawn, tmp_path: Path, awaiting: bool, origin80: Origin, tls_origin: Origin
) -> None:
    theirs = record(original, spawn, tmp_path, awaiting, origin80, tls_origin)
    mine = record(ours, spawn, tmp_path, awaiting, origin80, tls_origin)

    for name, events in (("original", theirs), ("ours", mine)):
        assert events[0]["hook"] == "mitm_started", f"{name}: {events[:3]}"
        assert sum(e["hook"] == "mitm_started" for e in events) == 1, name
        assert {e["conn"] for e in events[1:]} == {0, 1}, f"{name}: one connection per curl: {events}"
        for e in events[1:]:
            ip, _, port = e["client"].rpartition(":")
            assert ip == "127.0.0.1" and port.isdigit(), f"{name}: a client prints as ip:port: {e}"

    for conn, traffic in enumerate(["plain", "https"]):
        expected = EXPECTED[traffic]
        assert sequence(theirs, conn) == expected, (
            f"the original's hooks for {traffic} traffic are not what this test expects of it"
        )
        assert sequence(mine, conn) == expected, (
            f"{traffic} traffic: ours called\n  {sequence(mine, conn)}\nthe original\n  {expected}"
        )


@pytest.mark.xfail(
    strict=True,
    reason="the engine speaks HTTP/2 with a client that offers it after CONNECT, and HTTP/2 "
    "bytes never reach the data hooks (src/middleware/mod.rs); the original offers no ALPN, "
    "so its clients always speak HTTP/1.1 and its data hooks see every request",
)
def test_data_hooks_see_https_requests_of_a_client_offering_http2(
    ours: Package, spawn, tmp_path: Path, origin80: Origin, tls_origin: Origin
) -> None:
    mine = record(ours, spawn, tmp_path, False, origin80, tls_origin, http1=False)
    assert sequence(mine, 1) == EXPECTED["https"]
