"""Requests/s through ``MITM`` with mitmproxy addon scripts (``mitm.addons.Addons``),
beside a plain ``Middleware`` doing the same, paired in one run: plain HTTP keep-alive,
8 connections, 100-byte responses (message_hooks.py's client and origin). The script
adds a header in ``request`` and reads the status in ``response``; "empty script" is
one with no hooks (with reload on, ``request``/``response`` are still planned, and the
figure shows what that costs). Build the package with ``--release`` first.

    python python/benchmarks/addons.py [seconds per run]

With ``MITM_TEST_VENV`` set to a venv with mitmproxy 11, mitmdump runs the same
script on the same load, in the same rounds.
"""
import asyncio
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from message_hooks import client_main, origin_main  # noqa: E402

from mitm import MITM, CertificateAuthority, Middleware  # noqa: E402
from mitm.addons import Addons  # noqa: E402

SCRIPT = """
from mitmproxy import http

def request(flow: http.HTTPFlow) -> None:
    flow.request.headers["x-seen"] = "1"

def response(flow: http.HTTPFlow) -> None:
    if flow.response.status_code != 200:
        raise RuntimeError("unexpected status")
"""


class NoHooks(Middleware):
    pass


class SameInPython(Middleware):
    def request(self, flow):
        flow.request.headers["x-seen"] = "1"

    def response(self, flow):
        if flow.response.status_code != 200:
            raise RuntimeError("unexpected status")


def inline(addons):
    """``addons`` with its hooks run inline on the engine's thread (not in
    ``block_in_place``): what the blocking kind costs, for comparison only (a blocking
    script hook would then hold up a worker thread)."""
    for name in ("request", "response", "mitm_started"):
        bound = getattr(addons, name)
        if bound is not None:
            setattr(addons, name, (lambda f: lambda *args: f(*args))(bound))
    return addons


async def run(mw, oport, secs):
    m = MITM(host="127.0.0.1", port=0, middlewares=[mw], certificate_authority=CertificateAuthority())
    await m.start()
    q = mp.Queue()
    p = mp.Process(target=client_main, args=(m.addresses[0][1], oport, secs, 8, q))
    p.start()
    rate = await asyncio.to_thread(q.get)
    p.join()
    await m.stop()
    return rate


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_mitmdump(script, oport, secs, confdir):
    port = free_port()
    binary = os.path.join(os.environ["MITM_TEST_VENV"], "bin", "mitmdump")
    proc = subprocess.Popen(
        [binary, "-q", "--set", f"confdir={confdir}", "--listen-host", "127.0.0.1", "--listen-port", str(port), "-s", script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("mitmdump did not start")
                await asyncio.sleep(0.05)
        q = mp.Queue()
        p = mp.Process(target=client_main, args=(port, oport, secs, 8, q))
        p.start()
        rate = await asyncio.to_thread(q.get)
        p.join()
        return rate
    finally:
        proc.terminate()
        proc.wait()


async def main():
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 3
    directory = tempfile.mkdtemp()
    script = os.path.join(directory, "header_status.py")
    empty = os.path.join(directory, "empty.py")
    with open(script, "w") as f:
        f.write(SCRIPT)
    with open(empty, "w") as f:
        f.write("# no hooks\n")
    q = mp.Queue()
    o = mp.Process(target=origin_main, args=(q,), daemon=True)
    o.start()
    oport = q.get()
    cases = [
        ("no hooks", lambda: NoHooks()),
        ("Middleware, same hooks", lambda: SameInPython()),
        ("Addons, empty script", lambda: Addons([empty])),
        ("Addons, script", lambda: Addons([script])),
        ("Addons, script, inline", lambda: inline(Addons([script]))),
    ]
    runs = {name: [] for name, _ in cases}
    with_mitmdump = bool(os.environ.get("MITM_TEST_VENV"))
    if with_mitmdump:
        runs["mitmdump, script"] = []
    for _ in range(5):  # paired: each round runs every case once
        for name, make in cases:
            runs[name].append(await run(make(), oport, secs))
        if with_mitmdump:
            runs["mitmdump, script"].append(await run_mitmdump(script, oport, secs, os.path.join(directory, "conf")))
    cases = list(cases) + ([("mitmdump, script", None)] if with_mitmdump else [])
    results = {}
    for name, _ in cases:
        rates = sorted(runs[name])
        results[name] = rates[len(rates) // 2]
        print(f"{name:26} median {results[name]:8.0f} req/s  (runs: {', '.join(f'{r:.0f}' for r in rates)})")
    base = results["no hooks"]
    for name in ("Addons, empty script", "Addons, script", "Addons, script, inline"):
        extra = 1 / results[name] - 1 / base
        # Two engine hooks per request (request, response).
        print(f"{name}: {extra * 1e6:.1f} us more per request than no hooks ({extra * 1e6 / 2:.1f} us per hook call)")
    print(f"Addons, script: {results['Addons, script'] / base:.0%} of no hooks")
    if with_mitmdump:
        print(f"Addons, script: {results['Addons, script'] / results['mitmdump, script']:.1f}x mitmdump with the same script")
    o.terminate()


if __name__ == "__main__":
    asyncio.run(main())
