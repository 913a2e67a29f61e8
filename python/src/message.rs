//! HTTP requests and responses as Python objects (`mitm.http.Request`: [`PyRequest`],
//! `mitm.http.Response`: [`PyResponse`]).
//!
//! They are views, not copies: a `Request` holds the engine's [`mitm::Request`] behind
//! a mutex, and its `headers` and body are read from it when asked for (a body becomes
//! Python `bytes` only when `content` is read). The mutexes are held only for Rust
//! work, never while Python runs or while waiting for the GIL.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mitm::{Body, Headers};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::headers::{
    bytes_of, check_name, check_part, headers_from, lock, raw, text, HeadersOf, PyHeaders,
};

/// The most bytes `content` decodes a compressed body to (a guard against
/// decompression bombs); `raw_content` has the bytes as sent whatever their size.
const DECODE_LIMIT: usize = 64 << 20;

// -- bodies --------------------------------------------------------------------------

/// What requests and responses share: headers and a body.
trait Message {
    fn parts(&mut self) -> (&mut Headers, &mut Body);
}

impl Message for mitm::Request {
    fn parts(&mut self) -> (&mut Headers, &mut Body) {
        (&mut self.headers, &mut self.body)
    }
}

impl Message for mitm::Response {
    fn parts(&mut self) -> (&mut Headers, &mut Body) {
        (&mut self.headers, &mut self.body)
    }
}

/// The body as sent (`None` when it streams past), and its `Content-Encoding`.
fn body_of<M: Message>(m: &Mutex<M>) -> (Option<Bytes>, Option<String>) {
    let mut m = lock(m);
    let (headers, body) = m.parts();
    let encoding = headers
        .get("content-encoding")
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
        .map(str::to_owned);
    (body.bytes().cloned(), encoding)
}

fn raw_content<'py, M: Message>(py: Python<'py>, m: &Mutex<M>) -> Option<Bound<'py, PyBytes>> {
    let (body, _) = body_of(m);
    body.map(|b| PyBytes::new(py, &b))
}

fn set_raw_content<M: Message>(m: &Mutex<M>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let bytes = bytes_of(value, "raw_content")?;
    *lock(m).parts().1 = Body::Full(bytes);
    Ok(())
}

/// The body with its `Content-Encoding` undone.
fn content<'py, M: Message>(
    py: Python<'py>,
    m: &Mutex<M>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let (Some(body), encoding) = body_of(m) else {
        return Ok(None);
    };
    let Some(encoding) = encoding else {
        return Ok(Some(PyBytes::new(py, &body)));
    };
    let decoded = py
        .detach(|| mitm::decode::decode(&encoding, &body, DECODE_LIMIT))
        .map_err(|e| {
            PyValueError::new_err(format!(
                "cannot undo Content-Encoding {encoding:?}: {e} (raw_content has the body as sent)"
            ))
        })?;
    Ok(Some(PyBytes::new(py, &decoded)))
}

/// Sets the body to `value`, encoded with the message's `Content-Encoding` (if that is
/// one the engine can write; else the field is removed and the body sent as it is).
fn set_content<M: Message>(py: Python<'_>, m: &Mutex<M>, value: Bytes) {
    let (_, encoding) = body_of(m);
    let encoded = match &encoding {
        Some(e) => py.detach(|| mitm::decode::encode(e, &value)).ok(),
        None => None,
    };
    let mut m = lock(m);
    let (headers, body) = m.parts();
    match encoded {
        Some(bytes) => *body = Body::Full(Bytes::from(bytes)),
        None => {
            if encoding.is_some() {
                headers.remove("content-encoding");
            }
            *body = Body::Full(value);
        }
    }
}

/// The charset a `Content-Type` names, if any.
fn charset<M: Message>(m: &Mutex<M>) -> Option<String> {
    let mut m = lock(m);
    let ct = m.parts().0.get("content-type")?.to_owned();
    ct.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn text_content<'py, M: Message>(
    py: Python<'py>,
    m: &Mutex<M>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let Some(bytes) = content(py, m)? else {
        return Ok(None);
    };
    let errors = intern!(py, "surrogateescape");
    if let Some(cs) = charset(m) {
        if let Ok(s) = bytes.call_method1(intern!(py, "decode"), (cs.as_str(), errors)) {
            return Ok(Some(s));
        }
    }
    text(py, bytes.as_bytes()).map(Some)
}

fn set_text<M: Message>(py: Python<'_>, m: &Mutex<M>, value: &Bound<'_, PyString>) -> PyResult<()> {
    let errors = intern!(py, "surrogateescape");
    let encoded = charset(m).and_then(|cs| {
        value
            .call_method1(intern!(py, "encode"), (cs.as_str(), errors))
            .ok()
    });
    let bytes = match encoded {
        Some(b) => Bytes::copy_from_slice(b.cast::<PyBytes>()?.as_bytes()),
        None => raw(value.as_any(), "text")?,
    };
    set_content(py, m, bytes);
    Ok(())
}

/// A body given to a constructor: `bytes`, or `str` (UTF-8).
fn body_arg(value: Option<&Bound<'_, PyAny>>) -> PyResult<Body> {
    match value {
        None => Ok(Body::Empty),
        Some(v) if v.is_none() => Ok(Body::Empty),
        Some(v) => Ok(Body::Full(raw(v, "content")?)),
    }
}

/// The `Host` field's value for `host:port` (the port left out when it is the
/// scheme's default).
fn host_value(target: &mitm::Target) -> String {
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    let default = if target.tls { 443 } else { 80 };
    if target.port == default {
        host
    } else {
        format!("{host}:{}", target.port)
    }
}

/// After the target changed: a `Host` field, if the request has one, names the new one.
fn retarget_host(request: &mut mitm::Request) {
    if request.headers.contains("host") {
        let value = host_value(&request.target);
        request
            .headers
            .insert("Host", Bytes::from(value.into_bytes()));
    }
}

// -- requests ------------------------------------------------------------------------

/// An HTTP request: `method`, where it goes (`url`, or `scheme`, `host`, `port` and
/// `path`), `http_version`, `headers`, and its body (`content` decoded,
/// `raw_content` as sent, `text` as a string).
///
/// In a `request` hook, changes reach the origin. Changing `url`, `host` or `port`
/// sends the request elsewhere and updates its `Host` field (if it has one). A body
/// larger than the middleware's ``body_limit`` streams past instead of being held: its
/// `content` is None, and setting one replaces it.
#[pyclass(module = "mitm.http", name = "Request", frozen)]
#[derive(Debug)]
pub(crate) struct PyRequest(pub(crate) Arc<Mutex<mitm::Request>>);

#[pymethods]
impl PyRequest {
    /// A request for `url` (`http://…` or `https://…`), with these headers and body.
    #[new]
    #[pyo3(signature = (method, url, content = None, headers = None))]
    fn py_new(
        method: &str,
        url: &str,
        content: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        check_name(method.as_bytes())?;
        let mut request = mitm::Request::new(method, url).ok_or_else(|| {
            PyValueError::new_err(format!(
                "{url:?} is not an absolute http:// or https:// URL"
            ))
        })?;
        request.body = body_arg(content)?;
        if let Some(h) = headers {
            request.headers = headers_from(h)?;
        }
        if !request.headers.contains("host") {
            let value = host_value(&request.target);
            request
                .headers
                .insert("Host", Bytes::from(value.into_bytes()));
        }
        Ok(PyRequest(Arc::new(Mutex::new(request))))
    }

    /// The method, e.g. `"GET"`.
    #[getter]
    fn method(&self) -> String {
        lock(&self.0).method.clone()
    }

    #[setter]
    fn set_method(&self, method: &str) -> PyResult<()> {
        check_name(method.as_bytes()).map_err(|_| {
            PyValueError::new_err(format!("invalid method {method:?}: a method is a token"))
        })?;
        lock(&self.0).method = method.to_owned();
        Ok(())
    }

    /// `"http"` or `"https"`: whether the origin is spoken to over TLS.
    #[getter]
    fn scheme(&self) -> &'static str {
        if lock(&self.0).target.tls {
            "https"
        } else {
            "http"
        }
    }

    #[setter]
    fn set_scheme(&self, scheme: &str) -> PyResult<()> {
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "unsupported scheme {scheme:?}: http or https"
                )))
            }
        };
        lock(&self.0).target.tls = tls;
        Ok(())
    }

    /// The origin's host name or IP address (IPv6 without brackets).
    #[getter]
    fn host(&self) -> String {
        lock(&self.0).target.host.clone()
    }

    #[setter]
    fn set_host(&self, host: &str) -> PyResult<()> {
        check_part("host", host, false)?;
        if host.is_empty() || host.contains('/') {
            return Err(PyValueError::new_err(format!("invalid host {host:?}")));
        }
        let mut r = lock(&self.0);
        r.target.host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        retarget_host(&mut r);
        Ok(())
    }

    /// The origin's port.
    #[getter]
    fn port(&self) -> u16 {
        lock(&self.0).target.port
    }

    #[setter]
    fn set_port(&self, port: u16) -> PyResult<()> {
        if port == 0 {
            return Err(PyValueError::new_err("port 0 is not a port to connect to"));
        }
        let mut r = lock(&self.0);
        r.target.port = port;
        retarget_host(&mut r);
        Ok(())
    }

    /// The path and query, e.g. `"/search?q=1"` (for a `CONNECT`, the `host:port` it
    /// asks for).
    #[getter]
    fn path(&self) -> String {
        lock(&self.0).path.clone()
    }

    #[setter]
    fn set_path(&self, path: &str) -> PyResult<()> {
        check_part("path", path, false)?;
        let mut r = lock(&self.0);
        if !(path.starts_with('/') || path == "*" || r.is_connect()) {
            return Err(PyValueError::new_err(format!(
                "invalid path {path:?}: a path starts with /"
            )));
        }
        r.path = path.to_owned();
        Ok(())
    }

    /// The full URL (for a `CONNECT`, the `host:port` it asks for). Setting it sends
    /// the request to that URL.
    #[getter]
    fn url(&self) -> String {
        lock(&self.0).url()
    }

    #[setter]
    fn set_url(&self, url: &str) -> PyResult<()> {
        check_part("URL", url, false)?;
        let mut r = lock(&self.0);
        let parsed = mitm::Request::new(&r.method, url)
            .filter(|p| !p.target.host.is_empty())
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "{url:?} is not an absolute http:// or https:// URL"
                ))
            })?;
        r.target = parsed.target;
        r.path = parsed.path;
        retarget_host(&mut r);
        Ok(())
    }

    /// The version the client spoke: `"HTTP/1.0"`, `"HTTP/1.1"` or `"HTTP/2"`.
    #[getter]
    fn http_version(&self) -> &'static str {
        lock(&self.0).version.as_str()
    }

    /// The header fields (a live view). Assign a `Headers`, a dict or pairs to replace
    /// them all.
    #[getter]
    fn headers(&self) -> PyHeaders {
        PyHeaders {
            of: HeadersOf::Request(self.0.clone()),
        }
    }

    #[setter]
    fn set_headers(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let headers = headers_from(value)?;
        lock(&self.0).headers = headers;
        Ok(())
    }

    /// The body as sent, or None when it streams past (larger than ``body_limit``).
    #[getter]
    fn raw_content<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        raw_content(py, &self.0)
    }

    #[setter]
    fn set_raw_content(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        set_raw_content(&self.0, value)
    }

    /// The body with its `Content-Encoding` (gzip, deflate, br, zstd) undone, or None
    /// when it streams past. Setting it encodes it the same way.
    #[getter]
    fn content<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        content(py, &self.0)
    }

    #[setter]
    fn set_content(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = bytes_of(value, "content")?;
        set_content(py, &self.0, bytes);
        Ok(())
    }

    /// `content` as text, by the charset its `Content-Type` names (else UTF-8), or
    /// None when the body streams past.
    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        text_content(py, &self.0)
    }

    #[setter]
    fn set_text(&self, py: Python<'_>, value: &Bound<'_, PyString>) -> PyResult<()> {
        set_text(py, &self.0, value)
    }

    fn __repr__(&self) -> String {
        let r = lock(&self.0);
        format!("Request({} {})", r.method, r.url())
    }
}

// -- responses -----------------------------------------------------------------------

/// An HTTP response: `status_code`, `reason`, `http_version`, `headers`, and its body
/// (`content` decoded, `raw_content` as sent, `text` as a string).
///
/// Made in Python (``Response(404, b"not here", {"Content-Type": "text/plain"})``) to
/// answer a request without contacting its origin; in a `response` hook, the origin's
/// response, whose changes reach the client. The engine sets `Content-Length` for a
/// body a hook set.
#[pyclass(module = "mitm.http", name = "Response", frozen)]
#[derive(Debug)]
pub(crate) struct PyResponse(pub(crate) Arc<Mutex<mitm::Response>>);

/// A response from Python arguments.
pub(crate) fn response(
    status_code: u16,
    content: Option<&Bound<'_, PyAny>>,
    headers: Option<&Bound<'_, PyAny>>,
    reason: Option<&str>,
) -> PyResult<mitm::Response> {
    if !(100..=999).contains(&status_code) {
        return Err(PyValueError::new_err(format!(
            "invalid status code {status_code}: 100 to 999"
        )));
    }
    let mut response = mitm::Response::new(status_code);
    if let Some(reason) = reason {
        check_part("reason", reason, true)?;
        response.reason = reason.to_owned();
    }
    response.body = body_arg(content)?;
    if let Some(h) = headers {
        response.headers = headers_from(h)?;
    }
    Ok(response)
}

#[pymethods]
impl PyResponse {
    /// A response with this status, body (`bytes`, or `str` sent as UTF-8) and
    /// headers; `reason` defaults to the status's standard phrase.
    #[new]
    #[pyo3(signature = (status_code = 200, content = None, headers = None, reason = None))]
    fn py_new(
        status_code: u16,
        content: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        reason: Option<&str>,
    ) -> PyResult<Self> {
        let r = response(status_code, content, headers, reason)?;
        Ok(PyResponse(Arc::new(Mutex::new(r))))
    }

    /// The same as `Response(status_code, content, headers)` (mitmproxy's name).
    #[staticmethod]
    #[pyo3(signature = (status_code = 200, content = None, headers = None))]
    fn make(
        status_code: u16,
        content: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        Self::py_new(status_code, content, headers, None)
    }

    /// The status code, e.g. 200.
    #[getter]
    fn status_code(&self) -> u16 {
        lock(&self.0).status
    }

    #[setter]
    fn set_status_code(&self, status: u16) -> PyResult<()> {
        if !(100..=999).contains(&status) {
            return Err(PyValueError::new_err(format!(
                "invalid status code {status}: 100 to 999"
            )));
        }
        lock(&self.0).status = status;
        Ok(())
    }

    /// The reason phrase, e.g. `"OK"` (HTTP/2 sends none).
    #[getter]
    fn reason(&self) -> String {
        lock(&self.0).reason.clone()
    }

    #[setter]
    fn set_reason(&self, reason: &str) -> PyResult<()> {
        check_part("reason", reason, true)?;
        lock(&self.0).reason = reason.to_owned();
        Ok(())
    }

    /// The version the origin spoke.
    #[getter]
    fn http_version(&self) -> &'static str {
        lock(&self.0).version.as_str()
    }

    /// The header fields (a live view). Assign a `Headers`, a dict or pairs to replace
    /// them all.
    #[getter]
    fn headers(&self) -> PyHeaders {
        PyHeaders {
            of: HeadersOf::Response(self.0.clone()),
        }
    }

    #[setter]
    fn set_headers(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let headers = headers_from(value)?;
        lock(&self.0).headers = headers;
        Ok(())
    }

    /// The body as sent, or None when it streams past (larger than ``body_limit``).
    #[getter]
    fn raw_content<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        raw_content(py, &self.0)
    }

    #[setter]
    fn set_raw_content(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        set_raw_content(&self.0, value)
    }

    /// The body with its `Content-Encoding` (gzip, deflate, br, zstd) undone, or None
    /// when it streams past. Setting it encodes it the same way.
    #[getter]
    fn content<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        content(py, &self.0)
    }

    #[setter]
    fn set_content(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = bytes_of(value, "content")?;
        set_content(py, &self.0, bytes);
        Ok(())
    }

    /// `content` as text, by the charset its `Content-Type` names (else UTF-8), or
    /// None when the body streams past.
    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        text_content(py, &self.0)
    }

    #[setter]
    fn set_text(&self, py: Python<'_>, value: &Bound<'_, PyString>) -> PyResult<()> {
        set_text(py, &self.0, value)
    }

    fn __repr__(&self) -> String {
        let r = lock(&self.0);
        let size = match &r.body {
            Body::Empty => "no body".to_string(),
            Body::Full(b) => format!("{} bytes", b.len()),
            _ => "streamed body".to_string(),
        };
        format!("Response({} {}, {size})", r.status, r.reason)
    }
}
