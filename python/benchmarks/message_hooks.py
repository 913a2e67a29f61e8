"""Requests/s through ``MITM`` with and without Python message hooks: plain HTTP
keep-alive, 8 connections, 100-byte responses. The client and the origin are Python
(asyncio) in processes of their own, so the proxy's GIL is the proxy's; they, not the
proxy, set the ceiling of the first line. Build the package with ``--release`` first.

    python python/benchmarks/message_hooks.py [seconds per run]
"""
import asyncio, multiprocessing as mp, sys, time
from mitm import MITM, Middleware, CertificateAuthority

BODY = b"x" * 100
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY

def origin_main(q):
    async def conn(reader, writer):
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(RESP)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
    async def main():
        srv = await asyncio.start_server(conn, "127.0.0.1", 0)
        q.put(srv.sockets[0].getsockname()[1])
        await asyncio.Event().wait()
    asyncio.run(main())

def client_main(port, oport, secs, conns, q):
    async def one(stop, counts):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        req = f"GET http://127.0.0.1:{oport}/ HTTP/1.1\r\nHost: 127.0.0.1:{oport}\r\n\r\n".encode()
        n = 0
        while time.monotonic() < stop:
            w.write(req)
            head = await r.readuntil(b"\r\n\r\n")
            await r.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
            n += 1
        counts.append(n); w.close()
    async def main():
        await asyncio.gather(*(one(time.monotonic() + 0.5, []) for _ in range(conns)))
        counts = []; start = time.monotonic()
        await asyncio.gather(*(one(start + secs, counts) for _ in range(conns)))
        q.put(sum(counts) / (time.monotonic() - start))
    asyncio.run(main())

class NoHooks(Middleware): pass
class InlineRequest(Middleware):
    async def request(self, flow):
        flow.request.headers["X-Seen"] = "1"
class InlineBoth(Middleware):
    async def request(self, flow):
        flow.request.headers["X-Seen"] = "1"
    async def response(self, flow):
        flow.response.headers["X-Resp"] = "1"
class AwaitingRequest(Middleware):
    async def request(self, flow):
        await asyncio.sleep(0)
        flow.request.headers["X-Seen"] = "1"

async def run(mw, oport, secs):
    m = MITM(host="127.0.0.1", port=0, middlewares=[mw], certificate_authority=CertificateAuthority())
    await m.start()
    q = mp.Queue()
    p = mp.Process(target=client_main, args=(m.addresses[0][1], oport, secs, 8, q)); p.start()
    rate = await asyncio.to_thread(q.get); p.join()
    await m.stop()
    return rate

async def main():
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 3
    q = mp.Queue(); o = mp.Process(target=origin_main, args=(q,), daemon=True); o.start(); oport = q.get()
    for mw in (NoHooks(), InlineRequest(), InlineBoth(), AwaitingRequest()):
        rates = sorted([await run(mw, oport, secs) for _ in range(3)])
        print(f"{type(mw).__name__:16} median {rates[1]:8.0f} req/s  (runs: {', '.join(f'{r:.0f}' for r in rates)})")
    o.terminate()
if __name__ == "__main__":
    asyncio.run(main())
