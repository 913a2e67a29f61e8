"""Shared fixtures of the Python package's tests: origins, a test CA, proxies in
subprocesses, curl and Chromium.

Everything runs on loopback, with servers and certificates the tests make. A proxy is a
*script* run in a subprocess by one of two Pythons:

- ours: the Python running pytest, which has this package installed
  (``MITM_PYTHON`` overrides it);
- the original: ``MITM_ORIGINAL_PYTHON``, a virtual environment with
  ``pip install mitm==1.5.0`` (``scripts/py-venvs.sh`` makes both).

A program or tool that is missing skips the tests that need it, with the reason; with
``MITM_REQUIRE_TOOLS=1`` (as ``.ci/run`` sets) it fails them instead.

Fixtures and helpers others may use (import the helpers with
``from conftest import ...``):

- ``ours``, ``original``: :class:`Package` (a name and a Python); ``package``: both,
  one test run each.
- ``test_ca``: :class:`TestCA`, a root made here; ``origin``, ``origin80``,
  ``tls_origin``: :class:`Origin` HTTP(S) servers in threads (``origin80`` listens on
  port 80 of a loopback address of its own, where the original sends every plain
  request).
- ``proxy_env``: the environment for a proxy process (its own ``HOME``, the test CA as
  ``SSL_CERT_FILE`` so that both engines trust the HTTPS origin).
- ``spawn``: starts a script under a Python and returns a :class:`ProxyProcess` once it
  listens (its port found from the kernel's socket table, so a script may bind port 0
  and need not report it); stopped at the end of the test.
- :func:`curl`, :func:`chromium_get`, :func:`require_tool`, :func:`wait_for`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

import pytest

#: Where the scripts the tests run as proxies live.
PROGRAMS = Path(__file__).parent / "programs"

#: How long to wait for anything that should take well under a second.
PATIENCE = 30.0

REQUIRE_TOOLS = os.environ.get("MITM_REQUIRE_TOOLS") == "1"

T = TypeVar("T")


def require_tool(found: bool, what: str, how: str) -> None:
    """Skips the test when ``what`` is missing (``how`` says how to get it), or fails it
    when ``MITM_REQUIRE_TOOLS=1``."""
    if found:
        return
    message = f"{what} is missing: {how}"
    if REQUIRE_TOOLS:
        pytest.fail(message + " (MITM_REQUIRE_TOOLS=1 makes this a failure)", pytrace=False)
    pytest.skip(message)


def wait_for(what: str, check: Callable[[], Optional[T]], timeout: float = PATIENCE) -> T:
    """Polls ``check`` until it returns something truthy and returns that; fails with
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out ({timeout:.0f} s) waiting for {what}", pytrace=False)
        time.sleep(0.02)


# -- the two packages ------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """A Python with a ``mitm`` package: ``ours`` or the ``original``."""

    name: str
    python: str

    def run(self, code: str, env: Optional[Dict[str, str]] = None, timeout: float = PATIENCE) -> str:
        """Runs ``code`` with this Python; returns its stdout, fails the test with its
        output if it exits non-zero."""
        done = subprocess.run(
            [self.python, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            # Not the source tree: `python -c` imports from its working directory first.
            cwd="/",
        )
        if done.returncode != 0:
            pytest.fail(
                f"{self.name}'s Python exited {done.returncode}:\n{done.stdout}\n{done.stderr}",
                pytrace=False,
            )
        return done.stdout

    def __str__(self) -> str:
        return self.name


@pytest.fixture(scope="session")
def ours() -> Package:
    """This package, in the Python running the tests (or ``MITM_PYTHON``)."""
    python = os.environ.get("MITM_PYTHON") or sys.executable
    package = Package("ours", python)
    found = subprocess.run(
        [python, "-c", "import mitm._native"], capture_output=True, text=True, timeout=PATIENCE, cwd="/"
    )
    if found.returncode != 0:
        pytest.fail(f"{python} cannot import this package (pip install ./python):\n{found.stderr}")
    return package


@pytest.fixture(scope="session")
def original() -> Package:
    """The original package (mitm 1.5.0), in ``MITM_ORIGINAL_PYTHON``."""
    python = os.environ.get("MITM_ORIGINAL_PYTHON", "")
    require_tool(
        bool(python) and os.access(python, os.X_OK),
        "the original mitm 1.5.0 (MITM_ORIGINAL_PYTHON)",
        'export MITM_ORIGINAL_PYTHON="$(scripts/py-venvs.sh | sed -n 2p)"',
    )
    package = Package("original", python)
    version = package.run("import mitm; print(mitm.__version__)").strip()
    assert version == "1.5.0", f"MITM_ORIGINAL_PYTHON has mitm {version}, not the original 1.5.0"
    return package


@pytest.fixture(params=["ours", "original"])
def package(request: pytest.FixtureRequest) -> Package:
    """Each package in turn: the test runs once with ours, once with the original."""
    return request.getfixturevalue(request.param)


# -- certificates ------------------------------------------------------------------------


class TestCA:
    """A root CA made by the tests (with ``cryptography``), and leaves it signs.

    ``cert_path`` is its PEM certificate: give it to curl (``--cacert``) or as
    ``SSL_CERT_FILE`` to a proxy so that it trusts origins whose leaves this CA signed.
    """

    __test__ = False  # not a test class

    def __init__(self, directory: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._x509, self._hashes, self._ser, self._ec, self._oid = x509, hashes, serialization, ec, NameOID
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mitm tests' origin CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = directory / "origin-ca.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, names: Sequence[str]) -> Tuple[Path, Path]:
        """A leaf for ``names`` (DNS names or IP addresses): ``(cert PEM path, key PEM
        path)``."""
        x509, hashes, ser = self._x509, self._hashes, self._ser
        key = self._ec.generate_private_key(self._ec.SECP256R1())
        alt: List[x509.GeneralName] = []
        for n in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(self._oid.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        stem = self.directory / f"leaf-{len(list(self.directory.glob('leaf-*.pem')))}"
        cert_path, key_path = stem.with_suffix(".pem"), stem.with_suffix(".key")
        cert_path.write_bytes(cert.public_bytes(ser.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        )
        return cert_path, key_path


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """The root that signs the HTTPS origins' leaves."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        require_tool(False, "the cryptography package", "pip install './python[test,openssl]'")
    return TestCA(tmp_path_factory.mktemp("origin-ca"))


def spki_sha256(cert_pem: bytes) -> str:
    """Base64 of the SHA-256 of a certificate's SubjectPublicKeyInfo (what Chromium's
    ``--ignore-certificate-errors-spki-list`` takes)."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


# -- origins -----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Answers every request with ``hello from origin: METHOD PATH``, HTTP/1.0 style:
    ``Content-Length``, then ``Connection: close`` and a close. (The original relays
    until one side closes or 15 s pass: an origin that keeps the connection open would
    hold each of its connections for that long.)"""

    protocol_version = "HTTP/1.0"
    server: "_Server"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body_in = self.rfile.read(length) if length else b""
        # A server must take the absolute form too (RFC 9112, 3.2.2): the original
        # sends on a proxy request's target as the client wrote it.
        path = self.path
        if "://" in path:
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        self.server.origin.requests.append((self.command, path, dict(self.headers), body_in))
        body = self.server.origin.body(self.command, path)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    origin: "Origin"


@dataclass
class Origin:
    """An HTTP(S) server in a thread of the test process.

    Every request gets ``200`` with the body ``hello from origin: METHOD PATH`` (an HTML
    page Chromium shows as that text). ``requests`` records ``(method, path, headers,
    body)`` of each.
    """

    host: str
    port: int
    scheme: str
    requests: List[Tuple[str, str, Dict[str, str], bytes]] = field(default_factory=list)

    @staticmethod
    def body(method: str, path: str) -> bytes:
        """The body it answers ``method path`` with."""
        return f"hello from origin: {method} {path}".encode()

    @property
    def netloc(self) -> str:
        """``host:port``, or ``host`` alone on the scheme's default port."""
        default = {"http": 80, "https": 443}[self.scheme]
        return self.host if self.port == default else f"{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        """The URL of ``path`` on this origin."""
        return f"{self.scheme}://{self.netloc}{path}"


def _serve(host: str, port: int, context: Optional[ssl.SSLContext] = None) -> Iterator[Origin]:
    server = _Server((host, port), _Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    origin = Origin(host, server.server_address[1], "https" if context else "http")
    server.origin = origin
    thread = threading.Thread(target=server.serve_forever, name=f"origin {origin.url()}", daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def origin() -> Iterator[Origin]:
    """A plain HTTP origin on ``127.0.0.1`` and a port of its own."""
    yield from _serve("127.0.0.1", 0)


@pytest.fixture(scope="session")
def origin80() -> Iterator[Origin]:
    """A plain HTTP origin on port 80 of a random ``127.x.y.z`` (all of 127/8 is
    loopback on Linux), for tests that the original must pass too: it sends every plain
    request to port 80 of the ``Host`` header's host (a defect we do not copy, but the
    traffic must be the same for both). Binding port 80 needs root (or
    ``CAP_NET_BIND_SERVICE``)."""
    last: Optional[OSError] = None
    for _ in range(20):
        host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        try:
            yield from _serve(host, 80)
            return
        except PermissionError as err:
            require_tool(False, "permission to bind port 80", f"run as root ({err})")
        except OSError as err:  # that address is taken: another one
            last = err
    pytest.fail(f"no loopback address with port 80 free: {last}")


@pytest.fixture(scope="session")
def tls_origin(test_ca: TestCA) -> Iterator[Origin]:
    """An HTTPS origin on ``127.0.0.1``, its leaf (for ``127.0.0.1`` and ``localhost``)
    signed by ``test_ca``."""
    cert, key = test_ca.issue(["127.0.0.1", "localhost"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    yield from _serve("127.0.0.1", 0, context)


# -- proxies in subprocesses ------------------------------------------------------------


@pytest.fixture
def proxy_env(tmp_path: Path, test_ca: TestCA) -> Dict[str, str]:
    """The environment of a proxy process: a ``HOME`` of its own (where ``MITM()``
    keeps its CA), ``SSL_CERT_FILE`` the test CA (Python's default ``ssl`` context, the
    original's upstream check, and rustls-native-certs, our engine's, both read it), no
    proxy variables, unbuffered output."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
        and k not in ("XDG_DATA_HOME", "SSL_CERT_DIR", "PYTHONPATH")
    }
    env.update(HOME=str(home), SSL_CERT_FILE=str(test_ca.cert_path), PYTHONUNBUFFERED="1")
    return env


def _socket_inodes(pid: int) -> set:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def listening_ports(pid: int) -> List[int]:
    """The TCP ports process ``pid`` listens on (from ``/proc``: Linux)."""
    inodes = _socket_inodes(pid)
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                ports.append(int(cols[1].rsplit(":", 1)[1], 16))
    return sorted(set(ports))


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` can be bound (nothing listens there any more)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class ProxyProcess:
    """A script running under a package's Python, its output (stdout and stderr) in
    ``log_path``. ``port`` is the port it listens on."""

    def __init__(self, package: Package, argv: List[str], env: Dict[str, str], log_path: Path) -> None:
        self.package = package
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [package.python, *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(log_path.parent),
        )
        self.port = 0

    @property
    def address(self) -> str:
        """``127.0.0.1:port``, for ``curl -x``."""
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        """What it printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, timeout: float = PATIENCE) -> int:
        """Waits until it listens (failing with its output if it exits first)."""

        def check() -> Optional[int]:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"{self.package} proxy exited ({self.proc.returncode}) before listening:\n{self.output()}",
                    pytrace=False,
                )
            ports = listening_ports(self.proc.pid)
            return ports[0] if ports else None

        self.port = wait_for(f"{self.package} proxy to listen", check, timeout)
        return self.port

    def wait_output(self, text: str, timeout: float = PATIENCE) -> str:
        """Waits until its output contains ``text``; returns the output."""
        return wait_for(f"{text!r} in the {self.package} proxy's output", lambda: text in self.output() and self.output(), timeout)

    def interrupt(self, timeout: float = PATIENCE) -> int:
        """Sends ``SIGINT`` (Ctrl-C) and waits for the exit; returns its status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{self.package} proxy did not exit {timeout:.0f} s after SIGINT:\n{self.output()}")

    def stop(self) -> None:
        """Kills it if it runs (the original cannot always be stopped cleanly)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def spawn(tmp_path: Path, proxy_env: Dict[str, str]) -> Iterator[Callable[..., ProxyProcess]]:
    """``spawn(package, script, *args, env=None, listen=True)`` runs ``script`` (a path,
    or a name in ``programs/``) under ``package``'s Python with ``proxy_env`` (updated
    with ``env``), waits until it listens unless ``listen`` is false, and kills it after
    the test if it still runs."""
    started: List[ProxyProcess] = []

    def start(
        package: Package,
        script: "str | Path",
        *args: str,
        env: Optional[Dict[str, str]] = None,
        listen: bool = True,
    ) -> ProxyProcess:
        path = Path(script) if os.sep in str(script) else PROGRAMS / script
        log = tmp_path / f"{package.name}-{Path(path).stem}-{len(started)}.log"
        proc = ProxyProcess(package, [str(path), *args], {**proxy_env, **(env or {})}, log)
        started.append(proc)
        if listen:
            proc.wait_listening()
        return proc

    yield start
    for proc in started:
        proc.stop()


# -- clients ----------------------------------------------------------------------------


@dataclass
class CurlResult:
    """What :func:`curl` saw: its exit status, the HTTP status, the body, its
    stderr."""

    exit: int
    status: int
    body: bytes
    stderr: str


def curl(
    url: str,
    proxy: Optional[str] = None,
    cacert: Optional[Path] = None,
    args: Sequence[str] = (),
    timeout: float = PATIENCE,
) -> CurlResult:
    """Fetches ``url`` with curl, through ``proxy`` (``host:port``) if given, trusting
    only ``cacert`` for HTTPS if given."""
    require_tool(shutil.which("curl") is not None, "curl", "apt-get install curl")
    cmd = ["curl", "-sS", "--max-time", str(int(timeout)), "-o", "-", "-w", "\n%{http_code}"]
    if proxy:
        cmd += ["--proxy", f"http://{proxy}"]
    if cacert:
        cmd += ["--cacert", str(cacert)]
    cmd += [*args, url]
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout + 10)
    body, _, status = done.stdout.rpartition(b"\n")
    return CurlResult(done.returncode, int(status or 0), body, done.stderr.decode(errors="replace"))


def find_chromium() -> Optional[str]:
    """Chromium's binary, if there is one."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_get(url: str, proxy: str, ca_pem: Optional[str], home: Path, timeout: float = 3 * PATIENCE) -> str:
    """Loads ``url`` in headless Chromium through ``proxy`` and returns the page's DOM.
    Chromium trusts ``ca_pem`` (a root's PEM) as its only added anchor, through an NSS
    database in its own ``home`` (``certutil``), as a user would install it."""
    chromium = find_chromium()
    require_tool(chromium is not None, "Chromium", "apt-get install chromium")
    home.mkdir(parents=True, exist_ok=True)
    if ca_pem is not None:
        require_tool(shutil.which("certutil") is not None, "certutil", "apt-get install libnss3-tools")
        db = home / ".pki" / "nssdb"
        db.mkdir(parents=True, exist_ok=True)
        (home / "ca.pem").write_text(ca_pem)
        for args in (["-N", "--empty-password"], ["-A", "-t", "C,,", "-n", "mitm-test", "-i", str(home / "ca.pem")]):
            subprocess.run(["certutil", "-d", f"sql:{db}", *args], check=True, capture_output=True)
    dom, log = home / "dom.html", home / "chromium.log"
    env = {**os.environ, "HOME": str(home)}
    with open(dom, "wb") as out, open(log, "wb") as err:
        try:
            subprocess.run(
                [
                    str(chromium),
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    # Chromium goes around proxies for loopback unless told not to.
                    "--proxy-bypass-list=<-loopback>",
                    f"--proxy-server=http://{proxy}",
                    f"--user-data-dir={home / 'profile'}",
                    "--dump-dom",
                    url,
                ],
                stdin=subprocess.DEVNULL,
                # Files, not pipes: Chromium's helpers may keep a pipe open after it exits.
                stdout=out,
                stderr=err,
                env=env,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"Chromium took over {timeout:.0f} s on {url}; its log:\n{log.read_text(errors='replace')}")
    text = dom.read_text(errors="replace")
    if not text:
        text = "(no DOM)\n" + log.read_text(errors="replace")[-4000:]
    return text
