//! Header fields as a Python object (`mitm.http.Headers`: [`PyHeaders`]), and the
//! conversions between Python values and the bytes of HTTP messages that
//! `message.rs` and `flow.rs` share.
//!
//! A `Headers` is a view: of a request's or response's fields (changing it changes the
//! message) or of its own. Its mutex is held only for Rust work, never while Python
//! runs or while waiting for the GIL.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use mitm::Headers;
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

/// Locks `m`, also after a panic elsewhere poisoned it: the data are plain values, and
/// a panic cannot leave them half-changed in a way that matters to Python.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// -- text and bytes ------------------------------------------------------------------

/// `raw` as a Python `str`: UTF-8, with bytes that are not valid UTF-8 kept as lone
/// surrogates (`surrogateescape`), so that writing the text back gives the same bytes.
pub(crate) fn text<'py>(py: Python<'py>, raw: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    match std::str::from_utf8(raw) {
        Ok(s) => Ok(PyString::new(py, s).into_any()),
        Err(_) => PyBytes::new(py, raw).call_method1(
            intern!(py, "decode"),
            (intern!(py, "utf-8"), intern!(py, "surrogateescape")),
        ),
    }
}

/// The bytes of a `str` (UTF-8, lone surrogates back to their bytes) or of a bytes-like
/// object; `what` names the value in the error.
pub(crate) fn raw(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Bytes> {
    let py = value.py();
    if let Ok(s) = value.cast::<PyString>() {
        if let Ok(s) = s.to_cow() {
            return Ok(Bytes::copy_from_slice(s.as_bytes()));
        }
        let b = s.call_method1(
            intern!(py, "encode"),
            (intern!(py, "utf-8"), intern!(py, "surrogateescape")),
        )?;
        return Ok(Bytes::copy_from_slice(b.cast::<PyBytes>()?.as_bytes()));
    }
    bytes_of(value, what)
}

/// The bytes of a bytes-like object (`bytes`, `bytearray`, `memoryview`).
pub(crate) fn bytes_of(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Bytes> {
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(b.as_bytes()));
    }
    if value.is_instance_of::<PyString>() || value.is_none() {
        return Err(PyTypeError::new_err(format!(
            "{what} takes bytes, not {}",
            type_name(value)
        )));
    }
    let py = value.py();
    let b = py
        .import(intern!(py, "builtins"))?
        .getattr(intern!(py, "bytes"))?
        .call1((value,))
        .map_err(|_| {
            PyTypeError::new_err(format!("{what} takes bytes, not {}", type_name(value)))
        })?;
    Ok(Bytes::copy_from_slice(b.cast::<PyBytes>()?.as_bytes()))
}

/// The name of `value`'s type, for error messages.
fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Refuses a header name that is not an HTTP token (RFC 9110 5.1): a name with a space,
/// a colon or a line break would change the message's framing.
pub(crate) fn check_name(name: &[u8]) -> PyResult<()> {
    let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if name.is_empty() || !name.iter().all(tchar) {
        return Err(PyValueError::new_err(format!(
            "invalid header name {:?}: a name is letters, digits and !#$%&'*+-.^_`|~",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

/// Refuses a header value with a line break or NUL (which would smuggle in fields).
fn check_value(name: &[u8], value: &[u8]) -> PyResult<()> {
    if value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(PyValueError::new_err(format!(
            "invalid value for header {}: it may not hold CR, LF or NUL",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

/// Refuses a request-line or status-line part with whitespace or control characters
/// (or, if `spaces`, with control characters only).
pub(crate) fn check_part(what: &str, value: &str, spaces: bool) -> PyResult<()> {
    let bad = |c: char| c.is_control() || (!spaces && c.is_whitespace());
    if value.chars().any(bad) {
        let allowed = if spaces {
            "control characters"
        } else {
            "spaces or control characters"
        };
        return Err(PyValueError::new_err(format!(
            "invalid {what} {value:?}: it may not hold {allowed}"
        )));
    }
    Ok(())
}

// -- headers -------------------------------------------------------------------------

/// Where a `Headers` view keeps its fields.
#[derive(Debug, Clone)]
pub(crate) enum HeadersOf {
    /// Its own (made in Python).
    Own(Arc<Mutex<Headers>>),
    /// Those of a request.
    Request(Arc<Mutex<mitm::Request>>),
    /// Those of a response.
    Response(Arc<Mutex<mitm::Response>>),
}

impl HeadersOf {
    /// Runs `f` on the fields, locked.
    fn with<R>(&self, f: impl FnOnce(&mut Headers) -> R) -> R {
        match self {
            HeadersOf::Own(h) => f(&mut lock(h)),
            HeadersOf::Request(r) => f(&mut lock(r).headers),
            HeadersOf::Response(r) => f(&mut lock(r).headers),
        }
    }

    /// A copy of every field, in order (taken so that no lock is held while Python
    /// objects are made).
    fn fields(&self) -> Vec<(String, Bytes)> {
        self.with(|h| {
            h.iter()
                .map(|(n, v)| (n.to_owned(), Bytes::copy_from_slice(v)))
                .collect()
        })
    }
}

/// HTTP header fields: a multi-dict that keeps the fields' order and the names' case,
/// and ignores case when looking names up.
///
/// `headers[name]` is the first value of `name` (`KeyError` if none);
/// `headers[name] = value` replaces every field of that name by one (in the first one's
/// place, else at the end); `del headers[name]` removes them all; `add(name, value)`
/// appends one more; `get_all(name)` lists every value. `len()`, iteration, `keys()`,
/// `values()` and `items()` go over every field, repeated names included. Values are
/// `str` (bytes that are not UTF-8 kept by `surrogateescape`); `bytes` are accepted
/// when setting.
///
/// The headers of a request or response are a live view: changing them changes the
/// message.
#[pyclass(module = "mitm.http", name = "Headers", frozen)]
#[derive(Debug)]
pub(crate) struct PyHeaders {
    pub(crate) of: HeadersOf,
}

impl PyHeaders {
    /// Headers of their own.
    fn own(headers: Headers) -> Self {
        PyHeaders {
            of: HeadersOf::Own(Arc::new(Mutex::new(headers))),
        }
    }
}

/// The name given to a lookup, as bytes (`str` or `bytes`).
fn name_of(name: &Bound<'_, PyAny>) -> PyResult<String> {
    let b = raw(name, "a header name")?;
    String::from_utf8(b.to_vec())
        .map_err(|_| PyKeyError::new_err("header names are ASCII".to_string()))
}

/// A field for storing: name and value checked.
fn field(name: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<(Bytes, Bytes)> {
    let name = raw(name, "a header name")?;
    check_name(&name)?;
    let value = raw(value, "a header value")?;
    check_value(&name, &value)?;
    Ok((name, value))
}

/// Header fields from a `Headers`, a mapping (`{name: value}`), or an iterable of
/// `(name, value)` pairs; `None` is none.
pub(crate) fn headers_from(value: &Bound<'_, PyAny>) -> PyResult<Headers> {
    if value.is_none() {
        return Ok(Headers::new());
    }
    if let Ok(h) = value.cast::<PyHeaders>() {
        return Ok(h.get().of.with(|h| h.clone()));
    }
    let py = value.py();
    let pairs = if value.hasattr(intern!(py, "items"))? && !value.is_instance_of::<PyList>() {
        value.call_method0(intern!(py, "items"))?
    } else {
        value.clone()
    };
    let mut headers = Headers::new();
    let not_pairs = || {
        PyTypeError::new_err(format!(
            "headers are a Headers, a dict or (name, value) pairs, not {}",
            type_name(value)
        ))
    };
    for item in pairs.try_iter().map_err(|_| not_pairs())? {
        let item = item?;
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
            item.extract().map_err(|_| not_pairs())?;
        let (name, value) = field(&name, &value)?;
        headers.append(name, value);
    }
    Ok(headers)
}

#[pymethods]
impl PyHeaders {
    /// Headers from a mapping or `(name, value)` pairs, then keyword arguments
    /// (`content_type="text/plain"` is `Content-Type`: underscores become dashes).
    #[new]
    #[pyo3(signature = (fields = None, **kwargs))]
    fn py_new(
        fields: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let mut headers = match fields {
            Some(f) => headers_from(f)?,
            None => Headers::new(),
        };
        if let Some(kwargs) = kwargs {
            for (name, value) in kwargs.iter() {
                let name: String = name.extract()?;
                let dashed = PyString::new(value.py(), &name.replace('_', "-"));
                let (name, value) = field(dashed.as_any(), &value)?;
                headers.append(name, value);
            }
        }
        Ok(PyHeaders::own(headers))
    }

    /// The first value of `name`; `KeyError` if there is none.
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = name_of(name)?;
        match self
            .of
            .with(|h| h.get_bytes(&key).map(Bytes::copy_from_slice))
        {
            Some(v) => text(py, &v),
            None => Err(PyKeyError::new_err(key)),
        }
    }

    /// Sets `name` to `value` (the first field of that name keeps its place, the others
    /// go).
    fn __setitem__(&self, name: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let (name, value) = field(name, value)?;
        self.of.with(|h| h.insert(name, value));
        Ok(())
    }

    /// Removes every field named `name`; `KeyError` if there is none.
    fn __delitem__(&self, name: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = name_of(name)?;
        if self.of.with(|h| h.remove(&key)) == 0 {
            return Err(PyKeyError::new_err(key));
        }
        Ok(())
    }

    /// Whether a field named `name` is present.
    fn __contains__(&self, name: &Bound<'_, PyAny>) -> PyResult<bool> {
        if !(name.is_instance_of::<PyString>() || name.is_instance_of::<PyBytes>()) {
            return Ok(false);
        }
        let key = name_of(name)?;
        Ok(self.of.with(|h| h.contains(&key)))
    }

    /// How many fields there are (a repeated name counts each time).
    fn __len__(&self) -> usize {
        self.of.with(|h| h.len())
    }

    /// The name of every field, in order.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.keys(py)?.as_any().try_iter().map(Bound::into_any)
    }

    /// The value of `name` (the first), or `default`.
    #[pyo3(signature = (name, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = name_of(name)?;
        match self
            .of
            .with(|h| h.get_bytes(&key).map(Bytes::copy_from_slice))
        {
            Some(v) => text(py, &v),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    /// Every value of `name`, in order (empty if none).
    fn get_all<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let key = name_of(name)?;
        let values: Vec<Bytes> = self
            .of
            .with(|h| h.get_all(&key).map(Bytes::copy_from_slice).collect());
        values.iter().map(|v| text(py, v)).collect()
    }

    /// Replaces every field named `name` by one per value, at the end.
    fn set_all(&self, name: &Bound<'_, PyAny>, values: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut fields = Vec::new();
        for value in values.try_iter()? {
            fields.push(field(name, &value?)?);
        }
        let key = name_of(name)?;
        self.of.with(|h| {
            h.remove(&key);
            for (n, v) in fields {
                h.append(n, v);
            }
        });
        Ok(())
    }

    /// Appends a field, keeping those of the same name.
    fn add(&self, name: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let (name, value) = field(name, value)?;
        self.of.with(|h| h.append(name, value));
        Ok(())
    }

    /// Every field's name, in order.
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let names: Vec<String> = self.of.fields().into_iter().map(|(n, _)| n).collect();
        PyList::new(py, names)
    }

    /// Every field's value, in order.
    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let values = self
            .of
            .fields()
            .iter()
            .map(|(_, v)| text(py, v))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, values)
    }

    /// Every field as `(name, value)`, in order.
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self
            .of
            .fields()
            .iter()
            .map(|(n, v)| PyTuple::new(py, [PyString::new(py, n).into_any(), text(py, v)?]))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// A copy, not tied to any message.
    fn copy(&self) -> PyHeaders {
        PyHeaders::own(self.of.with(|h| h.clone()))
    }

    /// Equal to other `Headers` with the same fields in the same order (names compared
    /// ignoring case), or to a dict or list of pairs that makes such headers.
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(theirs) = headers_from(other) else {
            return Ok(false);
        };
        let ours = self.of.with(|h| h.clone());
        Ok(ours.len() == theirs.len()
            && ours
                .iter()
                .zip(theirs.iter())
                .all(|((n1, v1), (n2, v2))| n1.eq_ignore_ascii_case(n2) && v1 == v2))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("Headers({})", self.items(py)?.repr()?))
    }
}
