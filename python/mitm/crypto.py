"""The certificate authority: a root that signs a certificate for every intercepted
host, kept on disk as PEM files the original package and the ``mitm`` command read too.
"""

from __future__ import annotations

import collections
import os
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional, Tuple, Union

from mitm import _native

__all__ = ["CertificateAuthority", "LRU_MAX_SIZE", "new_RSA", "new_X509"]

LRU_MAX_SIZE = 1024
"""How many hosts' ``ssl.SSLContext`` :meth:`CertificateAuthority.new_context` keeps
(least recently used go first). The engine's own leaves are cached separately."""

PathLike = Union[Path, str]


def _openssl() -> Any:
    try:
        import OpenSSL.crypto  # type: ignore[import-not-found]
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this returns pyOpenSSL objects, as the original mitm did: "
            "pip install 'mitm[openssl]' (or pyOpenSSL)"
        ) from err
    return OpenSSL.crypto


def new_RSA(bits: int = 2048) -> Any:  # noqa: N802 - the original's name
    """A new RSA key, as a pyOpenSSL ``PKey`` (needs pyOpenSSL)."""
    crypto = _openssl()
    key = crypto.PKey()
    key.generate_key(crypto.TYPE_RSA, bits)
    return key


def new_X509(  # noqa: N802 - the original's name
    country_name: str = "US",
    state_or_province_name: str = "New York",
    locality: str = "New York",
    organization_name: str = "mitm",
    organization_unit_name: str = "mitm",
    common_name: str = "mitm",
    serial_number: Optional[int] = None,
    time_not_before: int = 0,
    time_not_after: int = 365 * 24 * 60 * 60,
) -> Any:
    """An unsigned pyOpenSSL ``X509`` with the given subject, valid for the given
    seconds from now (needs pyOpenSSL)."""
    import random

    crypto = _openssl()
    cert = crypto.X509()
    subject = cert.get_subject()
    subject.C = country_name
    subject.ST = state_or_province_name
    subject.L = locality
    subject.O = organization_name
    subject.OU = organization_unit_name
    subject.CN = common_name
    cert.set_serial_number(serial_number or random.randint(1, 2**63 - 1))
    cert.set_version(2)
    cert.gmtime_adj_notBefore(time_not_before)
    cert.gmtime_adj_notAfter(time_not_after)
    cert.set_issuer(subject)
    return cert


class CertificateAuthority:
    """A root certificate and key that sign a leaf for every intercepted host.

    ``CertificateAuthority()`` makes a new root in memory (ECDSA P-256); give
    ``key`` and ``cert`` (pyOpenSSL objects) to use an existing one.
    :meth:`init` keeps one in a directory across runs (``mitm.pem`` and ``mitm.key``,
    the original's names), :meth:`load` reads one from two PEM files (RSA, as the
    original makes them, or ECDSA), :meth:`save` writes one.

    Unlike the original, nothing is ever overwritten: :meth:`save` refuses to replace
    a file that holds anything else, and the key is written readable by you alone.
    """

    def __init__(self, key: Any = None, cert: Any = None) -> None:
        if key is None and cert is None:
            self._native = _native.Authority.generate()
        elif key is not None and cert is not None:
            crypto = _openssl()
            self._native = _native.Authority.from_pem(
                crypto.dump_certificate(crypto.FILETYPE_PEM, cert).decode(),
                crypto.dump_privatekey(crypto.FILETYPE_PEM, key).decode(),
            )
        else:
            raise ValueError("give both key and cert, or neither (to make a new root)")
        self._contexts: "collections.OrderedDict[str, ssl.SSLContext]" = collections.OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def _of(cls, native: Any) -> "CertificateAuthority":
        ca = cls.__new__(cls)
        ca._native = native
        ca._contexts = collections.OrderedDict()
        ca._lock = threading.Lock()
        return ca

    @classmethod
    def init(cls, path: PathLike) -> "CertificateAuthority":
        """The CA kept in the directory ``path`` (``mitm.pem``, ``mitm.key``): loaded,
        or made and saved there when neither file exists. A directory with only one of
        the two is an error: nothing is overwritten."""
        return cls._of(_native.Authority.init(Path(path)))

    @classmethod
    def load(cls, cert_path: PathLike, key_path: PathLike) -> "CertificateAuthority":
        """The CA in a PEM certificate file and a PEM key file (PKCS#1, PKCS#8 or
        SEC1; RSA, ECDSA or Ed25519)."""
        return cls._of(_native.Authority.load(Path(cert_path), Path(key_path)))

    def save(self, cert_path: PathLike, key_path: PathLike) -> None:
        """Writes the certificate and key as PEM (the key mode 0600). A file that
        already holds this CA's certificate or key is left as it is; one that holds
        anything else is never replaced (``FileExistsError``)."""
        cert_path, key_path = Path(cert_path), Path(key_path)
        same = _holds(cert_path, self.pem) and _holds(key_path, self._native.key_pem)
        if same:
            return
        for path in (cert_path, key_path):
            path.parent.mkdir(parents=True, exist_ok=True)
        self._native.save(cert_path, key_path)

    @property
    def pem(self) -> str:
        """The root certificate, PEM: what clients must trust."""
        return self._native.cert_pem

    @property
    def cert(self) -> Any:
        """The root certificate as a pyOpenSSL ``X509`` (needs pyOpenSSL)."""
        crypto = _openssl()
        return crypto.load_certificate(crypto.FILETYPE_PEM, self.pem.encode())

    @property
    def key(self) -> Any:
        """The root's key as a pyOpenSSL ``PKey`` (needs pyOpenSSL)."""
        crypto = _openssl()
        return crypto.load_privatekey(crypto.FILETYPE_PEM, self._native.key_pem.encode())

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the root certificate, hex."""
        return self._native.fingerprint

    def leaf_pem(self, host: str) -> Tuple[str, str]:
        """``(certificate PEM, key PEM)`` of a leaf for ``host``, signed by the root."""
        return self._native.leaf_pem(host), self._native.leaf_key_pem

    def new_X509(self, host: str) -> Tuple[Any, Any]:  # noqa: N802 - the original's name
        """A certificate for ``host`` (a name, or an IP address) signed by the root,
        and its key, as pyOpenSSL ``(X509, PKey)`` (needs pyOpenSSL). Its names are
        ``host`` and ``*.host`` (or the address), with the extensions browsers
        require."""
        crypto = _openssl()
        cert, key = self.leaf_pem(host)
        return (
            crypto.load_certificate(crypto.FILETYPE_PEM, cert.encode()),
            crypto.load_privatekey(crypto.FILETYPE_PEM, key.encode()),
        )

    def new_context(self, host: str) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` serving a leaf for ``host``, cached per host (at most
        ``LRU_MAX_SIZE``)."""
        with self._lock:
            context = self._contexts.get(host)
            if context is not None:
                self._contexts.move_to_end(host)
                return context
        cert, key = self.leaf_pem(host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # The ssl module loads a chain from files only: a private directory, emptied
        # at once.
        with tempfile.TemporaryDirectory(prefix="mitm-") as tmp:
            chain = os.path.join(tmp, "chain.pem")
            with open(os.open(chain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(cert + self.pem + key)
            context.load_cert_chain(chain)
        with self._lock:
            self._contexts[host] = context
            while len(self._contexts) > max(1, LRU_MAX_SIZE):
                self._contexts.popitem(last=False)
        return context

    def __repr__(self) -> str:
        return f"CertificateAuthority({self._native.subject}, sha256={self.fingerprint[:16]}…)"


def _holds(path: Path, text: str) -> bool:
    try:
        return path.read_text() == text
    except OSError:
        return False
