"""Type stubs of ``mitm._native``, the package's compiled half (internal: use the
``mitm`` modules). The message classes are public as ``mitm.http.*``."""

import asyncio
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union, final

from mitm.core import Flow

__version__: str
__all__ = [
    "Authority",
    "Server",
    "start",
    "cli",
    "default_ca_dir",
    "at_exit",
    "__version__",
    "HttpFlow",
    "Request",
    "Response",
    "Headers",
    "WebSocketMessage",
    "Filter",
    "HookGate",
]

_HeaderText = Union[str, bytes]
_HeadersArg = Union["Headers", Mapping[_HeaderText, _HeaderText], Sequence[Tuple[_HeaderText, _HeaderText]], None]
_Body = Union[bytes, bytearray, memoryview, str, None]

def at_exit() -> None:
    """Registered with ``atexit`` by ``mitm``: the engine's threads leave Python
    before the interpreter finalizes (they wait at most two seconds)."""

def default_ca_dir() -> Optional[Path]:
    """The directory ``MITM()`` keeps its CA in unless given one, or None on a
    platform without one."""

def start(
    event_loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    protocols: List[Tuple[str, str, Any]],
    middlewares: List[Dict[str, Any]],
    ca: Authority,
    options: Optional[Dict[str, Any]] = None,
) -> Server:
    """Binds a server with the package's plan and starts serving on the engine's
    threads. ``options`` holds what ``MITM`` takes beyond the original's arguments
    (``mitm.http.engine_options``)."""

def cli(
    argv: Sequence[str],
    event_loop: asyncio.AbstractEventLoop,
    factory: Callable[[List[str], Dict[str, Any]], Any],
) -> int:
    """Runs the ``mitm`` command (the Rust binary's command line, ``argv`` with the
    program's name first) with the GIL released; returns its exit code. Hooks that
    await run on ``event_loop``; ``factory(scripts, options)`` makes the middleware of
    ``-s``'s addon scripts (see ``mitm._cli``)."""

@final
class Authority:
    """The engine's certificate authority."""

    @staticmethod
    def generate() -> Authority:
        """A new root, in memory."""
    @staticmethod
    def init(path: Union[str, os.PathLike[str]]) -> Authority:
        """The root kept in ``path``, made and saved there first if absent."""
    @staticmethod
    def load(cert_path: Union[str, os.PathLike[str]], key_path: Union[str, os.PathLike[str]]) -> Authority:
        """The root in these PEM files."""
    @staticmethod
    def from_pem(cert_pem: str, key_pem: str) -> Authority:
        """The root in these PEM texts."""
    def save(self, cert_path: Union[str, os.PathLike[str]], key_path: Union[str, os.PathLike[str]]) -> None:
        """Writes the root's certificate and key as PEM files."""
    @property
    def cert_pem(self) -> str: ...
    @property
    def key_pem(self) -> str: ...
    @property
    def leaf_key_pem(self) -> str: ...
    @property
    def cert_path(self) -> Optional[Path]: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def subject(self) -> str: ...
    def leaf_pem(self, host: str) -> str:
        """The PEM certificate of the leaf for ``host``."""

@final
class Server:
    """A server the engine runs."""

    @property
    def addresses(self) -> List[Tuple[str, int]]:
        """``(host, port)`` of every listener."""
    @property
    def authority(self) -> Authority: ...
    @property
    def stopped(self) -> bool: ...
    def stop(self) -> None:
        """Stops accepting; returns at once (``wait()`` tells when it is over)."""
    def wait(self) -> asyncio.Future[None]:
        """Done when the server has stopped."""

@final
class Headers:
    """HTTP header fields: a multi-dict that keeps the fields' order and the names'
    case, and ignores case when looking names up. ``len()``, iteration, ``keys()``,
    ``values()`` and ``items()`` go over every field, repeated names included. Values
    are ``str`` (bytes that are not UTF-8 kept by ``surrogateescape``); ``bytes`` are
    accepted when setting. A message's headers are a live view of it."""

    def __new__(cls, fields: _HeadersArg = None, **kwargs: _HeaderText) -> Headers:
        """Headers from a mapping or ``(name, value)`` pairs, then keyword arguments
        (underscores become dashes: ``content_type=`` is ``Content-Type``)."""
    def __getitem__(self, name: _HeaderText, /) -> str:
        """The first value of ``name``; ``KeyError`` if there is none."""
    def __setitem__(self, name: _HeaderText, value: _HeaderText, /) -> None:
        """Sets ``name`` to ``value``: one field, in the first one's place."""
    def __delitem__(self, name: _HeaderText, /) -> None:
        """Removes every field named ``name``; ``KeyError`` if there is none."""
    def __contains__(self, name: object, /) -> bool: ...
    def __len__(self) -> int:
        """How many fields there are (a repeated name counts each time)."""
    def __iter__(self) -> Iterator[str]:
        """The name of every field, in order."""
    def __eq__(self, other: object, /) -> bool: ...
    def get(self, name: _HeaderText, default: Optional[str] = None) -> Optional[str]:
        """The first value of ``name``, or ``default``."""
    def get_all(self, name: _HeaderText) -> List[str]:
        """Every value of ``name``, in order."""
    def set_all(self, name: _HeaderText, values: Sequence[_HeaderText]) -> None:
        """Replaces every field named ``name`` by one per value, at the end."""
    def add(self, name: _HeaderText, value: _HeaderText) -> None:
        """Appends a field, keeping those of the same name."""
    def keys(self) -> List[str]: ...
    def values(self) -> List[str]: ...
    def items(self) -> List[Tuple[str, str]]: ...
    def copy(self) -> Headers:
        """A copy, not tied to any message."""

@final
class Request:
    """An HTTP request. In a ``request`` hook, changes reach the origin; changing
    ``url``, ``host`` or ``port`` sends it elsewhere (and updates its ``Host``). A body
    larger than the middleware's ``body_limit`` streams past: its ``content`` is None."""

    def __new__(cls, method: str, url: str, content: _Body = None, headers: _HeadersArg = None) -> Request:
        """A request for an absolute ``http://`` or ``https://`` URL."""
    method: str
    scheme: str
    """``"http"`` or ``"https"``."""
    host: str
    port: int
    path: str
    """Path and query (for a ``CONNECT``, the ``host:port`` it asks for)."""
    url: str
    @property
    def http_version(self) -> str:
        """``"HTTP/1.0"``, ``"HTTP/1.1"`` or ``"HTTP/2"``."""
    @property
    def headers(self) -> Headers: ...
    @headers.setter
    def headers(self, value: _HeadersArg) -> None: ...
    @property
    def raw_content(self) -> Optional[bytes]:
        """The body as sent; None when it streams past."""
    @raw_content.setter
    def raw_content(self, value: Union[bytes, bytearray, memoryview]) -> None: ...
    @property
    def content(self) -> Optional[bytes]:
        """The body with its ``Content-Encoding`` undone; None when it streams past.
        Setting it encodes it the same way."""
    @content.setter
    def content(self, value: Union[bytes, bytearray, memoryview]) -> None: ...
    @property
    def text(self) -> Optional[str]:
        """``content`` decoded by its charset (else UTF-8)."""
    @text.setter
    def text(self, value: str) -> None: ...

@final
class Response:
    """An HTTP response: made in Python to answer a request, or the origin's in a
    ``response`` hook (changes reach the client)."""

    def __new__(
        cls, status_code: int = 200, content: _Body = None, headers: _HeadersArg = None, reason: Optional[str] = None
    ) -> Response:
        """A response with this status, body (``str`` is sent as UTF-8) and headers;
        ``reason`` defaults to the status's standard phrase."""
    @staticmethod
    def make(status_code: int = 200, content: _Body = None, headers: _HeadersArg = None) -> Response:
        """``Response(status_code, content, headers)`` (mitmproxy's name)."""
    status_code: int
    reason: str
    @property
    def http_version(self) -> str: ...
    @property
    def headers(self) -> Headers: ...
    @headers.setter
    def headers(self, value: _HeadersArg) -> None: ...
    @property
    def raw_content(self) -> Optional[bytes]: ...
    @raw_content.setter
    def raw_content(self, value: Union[bytes, bytearray, memoryview]) -> None: ...
    @property
    def content(self) -> Optional[bytes]: ...
    @content.setter
    def content(self, value: Union[bytes, bytearray, memoryview]) -> None: ...
    @property
    def text(self) -> Optional[str]: ...
    @text.setter
    def text(self, value: str) -> None: ...

@final
class HttpFlow:
    """One HTTP exchange; the same object goes to ``request``, ``response`` and
    ``flow_finished`` (and ``websocket_message``) of every middleware."""

    @property
    def id(self) -> int:
        """Unique among the flows of one connection, from 1."""
    @property
    def connection(self) -> Any:
        """The ``mitm.core.Connection`` the exchange came on."""
    @property
    def metadata(self) -> Dict[Any, Any]:
        """Middlewares' own data, kept for the flow's life."""
    request: Request
    @property
    def response(self) -> Optional[Response]:
        """None in a ``request`` hook until one is set there (which answers the
        client without contacting the origin)."""
    @response.setter
    def response(self, value: Optional[Response]) -> None: ...
    def respond(self, status_code: int = 200, content: _Body = None, headers: _HeadersArg = None) -> None:
        """Answers the client with this response."""
    @property
    def marked(self) -> str: ...
    @marked.setter
    def marked(self, marked: str) -> None: ...
    @property
    def comment(self) -> str: ...
    @comment.setter
    def comment(self, comment: str) -> None: ...
    def intercept(self) -> None:
        """Holds the flow for the user in the web UI after this hook."""
    def resume(self) -> None:
        """Takes back ``intercept()``."""
    @property
    def intercepted(self) -> bool: ...
    def kill(self) -> None:
        """Drops the client at once (in ``websocket_message``: closes the WebSocket)."""
    @property
    def killed(self) -> bool: ...
    @property
    def error(self) -> Optional[str]:
        """What went wrong, when the exchange failed."""
    @property
    def timestamp_start(self) -> float:
        """When the request head was complete (seconds since the epoch)."""
    @property
    def duration(self) -> Optional[float]:
        """Seconds from the request to the end of the response (in ``flow_finished``)."""
    @property
    def request_body_size(self) -> int:
        """Request body bytes sent on so far (all of them in ``flow_finished``)."""
    @property
    def response_body_size(self) -> int:
        """Response body bytes passed on so far (all of them in ``flow_finished``)."""

@final
class WebSocketMessage:
    """One WebSocket data message on its way."""

    @property
    def from_client(self) -> bool: ...
    @property
    def direction(self) -> Flow: ...
    is_text: bool
    @property
    def content(self) -> bytes: ...
    @content.setter
    def content(self, value: Union[bytes, bytearray, memoryview]) -> None: ...
    @property
    def text(self) -> str: ...
    @text.setter
    def text(self, value: str) -> None: ...
    def drop(self) -> None:
        """Does not send the message on."""
    @property
    def dropped(self) -> bool: ...

@final
class Filter:
    """A parsed filter expression (mitmproxy's filter language, as the engine
    implements it); ``ValueError`` says where the text is wrong."""

    def __new__(cls, text: str) -> Filter: ...
    def matches(
        self,
        flow: HttpFlow,
        *,
        failed: bool = False,
        client: Optional[str] = None,
        server: Optional[str] = None,
        marked: Optional[str] = None,
        comment: Optional[str] = None,
    ) -> bool:
        """Whether ``flow`` matches; the view has no addresses, mark, comment or error
        of its own: the caller gives them (addresses as ``"ip:port"``)."""
    def needs_bodies(self) -> bool: ...

@final
class HookGate:
    """Two switches a hook's plan may carry, read by the engine before each call:
    ``active`` (False: not called) and ``blocking`` (True: run where blocking holds up
    only its own flow)."""

    def __new__(cls, active: bool = True, blocking: bool = True) -> HookGate: ...
    def set(self, active: bool, blocking: bool) -> None: ...
    @property
    def active(self) -> bool: ...
    @property
    def blocking(self) -> bool: ...
