"""``mitmproxy.http``: ``HTTPFlow``, ``Request``, ``Response`` and ``Headers`` as a
script sees them, thin wrappers over the engine's views (:mod:`mitm.http`): reading a
header copies no body, and what a hook changes reaches the wire.

Supported on ``Request``: ``method``, ``scheme``, ``host``, ``port``, ``path``,
``url``, ``pretty_url``, ``pretty_host``, ``host_header``, ``authority``,
``http_version``, ``headers``, ``query``, ``cookies``, ``content``,
``raw_content``, ``text``, ``get_text()``/``set_text()``,
``get_content()``/``set_content()``, ``json()``, ``urlencoded_form``,
``timestamp_start``, ``Request.make``. On ``Response``: ``status_code``,
``reason``, ``http_version``, ``headers``, ``cookies`` (read), the body accessors,
``timestamp_start``, ``Response.make``. On ``HTTPFlow``: ``request``, ``response``,
``error``, ``kill()``, ``killable``, ``id``, ``metadata``, ``marked``, ``comment``,
``client_conn``, ``server_conn``, ``websocket``, ``type``, ``live``,
``timestamp_created``. Anything else of mitmproxy's raises AttributeError naming it.
"""

from __future__ import annotations

import json as _json
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qsl, urlencode

from mitm.addons.compat._unsupported import Refusing, missing
from mitm.addons.compat.connection import Client, Server
from mitm.addons.compat.flow import Error
from mitm.addons.compat.websocket import WebSocketData
from mitm.http import Headers
from mitm.http import Request as _NativeRequest
from mitm.http import Response as _NativeResponse

__all__ = ["HTTPFlow", "Request", "Response", "Headers", "Message"]

_Pairs = List[Tuple[str, str]]
_DEFAULT_PORTS = {"http": 80, "https": 443}


class MultiDictView:
    """A multi-dict read from and written back to a part of a message (a query, the
    cookies, a form), as mitmproxy's: ``m[k]`` is the first value, ``get_all``,
    ``set_all``, ``add``, ``keys``, ``values``, ``items``, ``fields``."""

    def __init__(self, read: Callable[[], _Pairs], write: Callable[[_Pairs], None]) -> None:
        self._read = read
        self._write = write

    @property
    def fields(self) -> Tuple[Tuple[str, str], ...]:
        return tuple(self._read())

    def __getitem__(self, key: str) -> str:
        for k, v in self._read():
            if k == key:
                return v
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def get_all(self, key: str) -> List[str]:
        return [v for k, v in self._read() if k == key]

    def __setitem__(self, key: str, value: str) -> None:
        self.set_all(key, [value])

    def set_all(self, key: str, values: Sequence[str]) -> None:
        pairs = self._read()
        out: _Pairs = []
        values = list(values)
        for k, v in pairs:
            if k == key:
                if values:
                    out.append((k, values.pop(0)))
            else:
                out.append((k, v))
        out.extend((key, v) for v in values)
        self._write(out)

    def add(self, key: str, value: str) -> None:
        self._write(self._read() + [(key, value)])

    def __delitem__(self, key: str) -> None:
        pairs = self._read()
        if not any(k == key for k, _ in pairs):
            raise KeyError(key)
        self._write([(k, v) for k, v in pairs if k != key])

    def pop(self, key: str, *default: Any) -> Any:
        try:
            value = self[key]
        except KeyError:
            if default:
                return default[0]
            raise
        del self[key]
        return value

    def __contains__(self, key: object) -> bool:
        return any(k == key for k, _ in self._read())

    def __iter__(self) -> Iterator[str]:
        seen: List[str] = []
        for k, _ in self._read():
            if k not in seen:
                seen.append(k)
        return iter(seen)

    def __len__(self) -> int:
        return len(list(iter(self)))

    def keys(self) -> List[str]:
        return list(iter(self))

    def values(self) -> List[str]:
        return [self[k] for k in self]

    def items(self) -> List[Tuple[str, str]]:
        return [(k, self[k]) for k in self]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MultiDictView):
            return self.fields == other.fields
        if isinstance(other, dict):
            return dict(self.items()) == other
        return NotImplemented

    def __repr__(self) -> str:
        return f"MultiDictView({list(self.fields)!r})"


def _body(value: Union[str, bytes, None]) -> Optional[bytes]:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


class Message(Refusing):
    """What requests and responses share: headers and body."""

    __slots__ = ("_n", "_flow")

    def __init__(self, native: Any, flow: Optional["HTTPFlow"] = None) -> None:
        object.__setattr__(self, "_n", native)
        object.__setattr__(self, "_flow", flow)

    @property
    def http_version(self) -> str:
        version = self._n.http_version
        return "HTTP/2.0" if version == "HTTP/2" else version

    @property
    def is_http10(self) -> bool:
        return self._n.http_version == "HTTP/1.0"

    @property
    def is_http11(self) -> bool:
        return self._n.http_version == "HTTP/1.1"

    @property
    def is_http2(self) -> bool:
        return self._n.http_version == "HTTP/2"

    @property
    def headers(self) -> Headers:
        return self._n.headers

    @headers.setter
    def headers(self, value: Any) -> None:
        self._n.headers = value

    @property
    def raw_content(self) -> Optional[bytes]:
        return self._n.raw_content

    @raw_content.setter
    def raw_content(self, value: Optional[bytes]) -> None:
        self._n.raw_content = b"" if value is None else value

    @property
    def content(self) -> Optional[bytes]:
        return self._n.content

    @content.setter
    def content(self, value: Union[bytes, str, None]) -> None:
        body = _body(value)
        self._n.content = b"" if body is None else body

    def get_content(self, strict: bool = True) -> Optional[bytes]:
        return self._n.content

    def set_content(self, value: Optional[bytes]) -> None:
        self.content = value

    @property
    def text(self) -> Optional[str]:
        return self._n.text

    @text.setter
    def text(self, value: Optional[str]) -> None:
        self._n.text = "" if value is None else value

    def get_text(self, strict: bool = True) -> Optional[str]:
        return self._n.text

    def set_text(self, value: Optional[str]) -> None:
        self.text = value

    def json(self, **kwargs: Any) -> Any:
        """The body parsed as JSON (``json.loads`` keyword arguments pass through)."""
        content = self._n.content
        if content is None:
            raise ValueError("the body streamed past the hooks; it is not available to parse")
        return _json.loads(content, **kwargs)

    @property
    def timestamp_start(self) -> Optional[float]:
        return self._flow._n.timestamp_start if self._flow is not None else None

    def __setattr__(self, name: str, value: Any) -> None:
        if not hasattr(type(self), name):
            missing(type(self).__name__, name)
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and other._n is self._n

    __hash__ = object.__hash__


def _split_authority(text: str) -> Tuple[str, Optional[int]]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            host, port = text, ""
    return host, int(port) if port.isdigit() else None


class Request(Message):
    """An HTTP request (see the module's docs for what is supported)."""

    __slots__ = ()

    @classmethod
    def make(
        cls,
        method: str,
        url: str,
        content: Union[bytes, str] = b"",
        headers: Any = (),
    ) -> "Request":
        """A request for ``url`` (mitmproxy's ``Request.make``)."""
        headers = None if headers == () else headers
        return cls(_NativeRequest(method, url, content, headers))

    method = property(lambda self: self._n.method, lambda self, v: setattr(self._n, "method", v))
    scheme = property(lambda self: self._n.scheme, lambda self, v: setattr(self._n, "scheme", v))
    host = property(lambda self: self._n.host, lambda self, v: setattr(self._n, "host", v))
    port = property(lambda self: self._n.port, lambda self, v: setattr(self._n, "port", v))
    path = property(lambda self: self._n.path, lambda self, v: setattr(self._n, "path", v))
    url = property(lambda self: self._n.url, lambda self, v: setattr(self._n, "url", v))

    @property
    def authority(self) -> str:
        """``host:port`` a CONNECT asks for, else the ``Host`` field (mitmproxy's
        ``authority`` for HTTP/1)."""
        if self._n.method == "CONNECT":
            return self._n.path
        return self._n.headers.get("host", "") or ""

    @property
    def host_header(self) -> Optional[str]:
        return self._n.headers.get("host")

    @host_header.setter
    def host_header(self, value: Optional[str]) -> None:
        if value is None:
            if "host" in self._n.headers:
                del self._n.headers["host"]
        else:
            self._n.headers["host"] = value

    @property
    def pretty_host(self) -> str:
        """The ``Host`` field's host if there is one, else ``host``."""
        header = self._n.headers.get("host")
        if header:
            return _split_authority(header)[0]
        return self._n.host

    @property
    def pretty_url(self) -> str:
        """The URL with the ``Host`` field's host and port (as the client meant it)."""
        if self._n.method == "CONNECT":
            return self._n.path
        header = self._n.headers.get("host")
        if not header:
            return self._n.url
        scheme = self._n.scheme
        host, port = _split_authority(header)
        if port is None:
            port = _DEFAULT_PORTS.get(scheme, self._n.port)
        if ":" in host:
            host = f"[{host}]"
        shown = "" if _DEFAULT_PORTS.get(scheme) == port else f":{port}"
        return f"{scheme}://{host}{shown}{self._n.path}"

    def _query_pairs(self) -> _Pairs:
        _, _, query = self._n.path.partition("?")
        return parse_qsl(query, keep_blank_values=True)

    def _set_query(self, pairs: _Pairs) -> None:
        base = self._n.path.partition("?")[0]
        self._n.path = f"{base}?{urlencode(pairs)}" if pairs else base

    @property
    def query(self) -> MultiDictView:
        """The URL's query as a multi-dict; changes rewrite ``path``."""
        return MultiDictView(self._query_pairs, self._set_query)

    @query.setter
    def query(self, value: Any) -> None:
        self._set_query(list(value.items() if hasattr(value, "items") else value))

    def _cookie_pairs(self) -> _Pairs:
        pairs: _Pairs = []
        for header in self._n.headers.get_all("cookie"):
            for part in header.split(";"):
                name, sep, value = part.strip().partition("=")
                if name or sep:
                    pairs.append((name, value))
        return pairs

    def _set_cookies(self, pairs: _Pairs) -> None:
        if pairs:
            self._n.headers["cookie"] = "; ".join(f"{k}={v}" for k, v in pairs)
        elif "cookie" in self._n.headers:
            del self._n.headers["cookie"]

    @property
    def cookies(self) -> MultiDictView:
        """The ``Cookie`` fields as a multi-dict; changes rewrite the field."""
        return MultiDictView(self._cookie_pairs, self._set_cookies)

    @cookies.setter
    def cookies(self, value: Any) -> None:
        self._set_cookies(list(value.items() if hasattr(value, "items") else value))

    def _form_pairs(self) -> _Pairs:
        kind = self._n.headers.get("content-type", "") or ""
        if "application/x-www-form-urlencoded" not in kind.lower():
            return []
        return parse_qsl((self._n.content or b"").decode("utf-8", "replace"), keep_blank_values=True)

    def _set_form(self, pairs: _Pairs) -> None:
        self._n.headers["content-type"] = "application/x-www-form-urlencoded"
        self._n.content = urlencode(pairs).encode("ascii")

    @property
    def urlencoded_form(self) -> MultiDictView:
        """An ``application/x-www-form-urlencoded`` body as a multi-dict (empty for
        other bodies); changes rewrite the body."""
        return MultiDictView(self._form_pairs, self._set_form)

    @urlencoded_form.setter
    def urlencoded_form(self, value: Any) -> None:
        self._set_form(list(value.items() if hasattr(value, "items") else value))

    def __repr__(self) -> str:
        return f"Request({self._n.method} {self._n.url})"


class Response(Message):
    """An HTTP response (see the module's docs for what is supported)."""

    __slots__ = ()

    @classmethod
    def make(
        cls,
        status_code: int = 200,
        content: Union[bytes, str] = b"",
        headers: Any = (),
    ) -> "Response":
        """A response to answer with (mitmproxy's ``Response.make``)."""
        if isinstance(headers, dict):
            headers = list(headers.items())
        headers = None if headers == () else headers
        return cls(_NativeResponse(status_code, content, headers))

    status_code = property(lambda self: self._n.status_code, lambda self, v: setattr(self._n, "status_code", v))
    reason = property(lambda self: self._n.reason, lambda self, v: setattr(self._n, "reason", v))

    @property
    def cookies(self) -> Dict[str, Tuple[str, Dict[str, str]]]:
        """The ``Set-Cookie`` fields, read only: ``{name: (value, attributes)}``."""
        out: Dict[str, Tuple[str, Dict[str, str]]] = {}
        for header in self._n.headers.get_all("set-cookie"):
            parts = [p.strip() for p in header.split(";")]
            name, _, value = parts[0].partition("=")
            attrs = {}
            for p in parts[1:]:
                k, _, v = p.partition("=")
                attrs[k] = v
            out[name] = (value, attrs)
        return out

    def __repr__(self) -> str:
        return f"Response({self._n.status_code} {self._n.reason})"


def _native_response(value: Any) -> Any:
    if value is None or isinstance(value, _NativeResponse):
        return value
    if isinstance(value, Response):
        return value._n
    raise TypeError(f"flow.response takes an http.Response or None, not {type(value).__name__}")


class HTTPFlow(Refusing):
    """One HTTP exchange as a script sees it; the same object goes to every hook of
    the exchange (see the module's docs for what is supported)."""

    __slots__ = (
        "_n",
        "_request",
        "_id",
        "_server",
        "metadata",
        "_client",
        "websocket",
        "timestamp_created",
        "_error",
        "is_replay",
        "__dict__",
    )

    type = "http"
    live = True

    def __init__(self, native: Any, client: Callable[[], Client]) -> None:
        self._n = native
        self._request = Request(native.request, self)
        self._id: Optional[str] = None
        self.metadata: Dict[Any, Any] = {}
        self._client: Any = client  # a function giving the Client, until first read
        self._server: Optional[Server] = None
        self.websocket: Optional[WebSocketData] = None
        self.timestamp_created = time.time()
        self._error: Optional[Error] = None
        self.is_replay: Optional[str] = None

    @property
    def client_conn(self) -> Client:
        """The client (one object per connection, the one ``client_connected`` got)."""
        client = self._client
        if not isinstance(client, Client):
            client = self._client = client()
            request = self._request._n
            if request.scheme == "https":
                client.tls_established = True
                if client.sni is None:
                    client.sni = request.host
        return client

    @property
    def id(self) -> str:
        """A UUID, made when first read."""
        if self._id is None:
            self._id = str(uuid.uuid4())
        return self._id

    @property
    def marked(self) -> str:
        """The flow's mark (``""``: none; ``":default:"`` or another emoji name, or
        any text): saved with the flow and shown in the web UI."""
        return self._n.marked

    @marked.setter
    def marked(self, value: Any) -> None:
        # mitmproxy before 9 had a bool here; its scripts still set True/False.
        self._n.marked = ":default:" if value is True else "" if value is False else str(value)

    def intercept(self) -> None:
        """Holds the flow in the web UI (``mitm --web``) after this hook, until the
        user resumes or kills it there; without a web UI the flow goes on."""
        self._n.intercept()

    def resume(self) -> None:
        """Takes back ``intercept()`` (a flow held in the web UI is resumed there)."""
        self._n.resume()

    @property
    def intercepted(self) -> bool:
        return self._n.intercepted

    @property
    def comment(self) -> str:
        """A comment on the flow (``""``: none), kept as ``marked`` is."""
        return self._n.comment

    @comment.setter
    def comment(self, value: str) -> None:
        self._n.comment = str(value)

    @property
    def server_conn(self) -> Server:
        """The server; as in mitmproxy, its ``address`` is known once it is connected
        to (from ``responseheaders`` on), None before and for a local answer."""
        if self._server is None:
            request = self._request._n
            self._server = Server(self._n.connection, None, self)
            if request.scheme == "https":
                self._server.sni = request.host
        return self._server

    @property
    def request(self) -> Request:
        return self._request

    @request.setter
    def request(self, value: Request) -> None:
        if not isinstance(value, Request):
            raise TypeError(f"flow.request takes an http.Request, not {type(value).__name__}")
        self._n.request = value._n
        self._request = Request(self._n.request, self)

    @property
    def response(self) -> Optional[Response]:
        """None in ``request`` until a script sets one (which answers locally)."""
        native = self._n.response
        return None if native is None else Response(native, self)

    @response.setter
    def response(self, value: Optional[Response]) -> None:
        self._n.response = _native_response(value)

    @property
    def error(self) -> Optional[Error]:
        if self._error is None and self._n.error is not None:
            self._error = Error(self._n.error)
        return self._error

    @error.setter
    def error(self, value: Optional[Error]) -> None:
        self._error = value

    @property
    def killable(self) -> bool:
        return not self._n.killed

    def kill(self) -> None:
        """Drops the client's connection (mitmproxy's ``kill``)."""
        self._n.kill()

    def __repr__(self) -> str:
        return f"<HTTPFlow {self._request!r}>"
