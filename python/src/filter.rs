//! The engine's filter language (mitmproxy's, [`mitm::filter`]) for Python:
//! `mitm._native.Filter`, which `mitmproxy.flowfilter.parse` of the addon host wraps.

use std::net::SocketAddr;

use mitm::filter::{Filter, RequestView, ResponseView, Subject};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::flow::PyFlow;

/// A parsed filter expression (mitmproxy's filter language: `~d example\.com & ~m
/// POST`, `~c 404`, `!~s`, ...). ``Filter(text)`` raises ``ValueError`` saying where
/// the text is wrong.
#[pyclass(module = "mitm._native", name = "Filter", frozen)]
#[derive(Debug)]
pub(crate) struct PyFilter(Filter);

/// A flow as the filter sees it: the view's request and response as the hooks left
/// them, and what the caller knows of the rest.
struct Snapshot {
    request: mitm::Request,
    response: Option<mitm::Response>,
    failed: bool,
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    marked: String,
    comment: String,
    websocket: bool,
}

impl Subject for Snapshot {
    fn request(&self) -> RequestView<'_> {
        RequestView::from(&self.request)
    }

    fn response(&self) -> Option<ResponseView<'_>> {
        self.response.as_ref().map(ResponseView::from)
    }

    fn failed(&self) -> bool {
        self.failed
    }

    fn client(&self) -> Option<SocketAddr> {
        self.client
    }

    fn server(&self) -> Option<SocketAddr> {
        self.server
    }

    fn marked(&self) -> &str {
        &self.marked
    }

    fn comment(&self) -> &str {
        &self.comment
    }

    fn is_websocket(&self) -> bool {
        self.websocket
    }
}

/// `"ip:port"` as an address, or None.
fn address(text: Option<String>) -> Option<SocketAddr> {
    text.and_then(|t| t.parse().ok())
}

#[pymethods]
impl PyFilter {
    #[new]
    fn new(text: &str) -> PyResult<Self> {
        Filter::parse(text)
            .map(PyFilter)
            .map_err(|e| PyValueError::new_err(format!("invalid filter {text:?}: {e}")))
    }

    /// Whether `flow` (a `mitm.http.HttpFlow`) matches. The view has no client or
    /// server address, mark, comment or error of its own: the caller gives them
    /// (addresses as `"ip:port"`, `[ip]:port` for IPv6).
    #[pyo3(signature = (flow, *, failed = false, client = None, server = None, marked = None, comment = None))]
    fn matches(
        &self,
        flow: &Bound<'_, PyFlow>,
        failed: bool,
        client: Option<String>,
        server: Option<String>,
        marked: Option<String>,
        comment: Option<String>,
    ) -> bool {
        let view = flow.get();
        let response = view.response_now();
        let websocket = response
            .as_ref()
            .is_some_and(|s| s.status == 101 && s.headers.has_token("upgrade", "websocket"));
        let snapshot = Snapshot {
            request: view.request_now(),
            response,
            failed,
            client: address(client),
            server: address(server),
            marked: marked.unwrap_or_default(),
            comment: comment.unwrap_or_default(),
            websocket,
        };
        self.0.matches(&snapshot)
    }

    /// Whether matching needs bodies (`~b`, `~bq`, `~bs`).
    fn needs_bodies(&self) -> bool {
        self.0.needs_bodies()
    }

    fn __str__(&self) -> String {
        self.0.as_str().to_string()
    }

    fn __repr__(&self) -> String {
        format!("Filter({:?})", self.0.as_str())
    }
}
