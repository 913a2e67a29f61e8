//! What `MITM(...)` takes beyond the original's arguments (`modes`, `save`, limits,
//! upstream TLS, the message hooks), as `_native.start(..., options)` gets them: a dict
//! that `mitm.http.engine_options` builds. [`Options::apply`] sets them on the server's
//! builder; [`Finish`] writes out the capture when the server has stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mitm::server::mode::ModeSpec;
use mitm::{Http, MitmBuilder};
use pyo3::exceptions::{PyFileExistsError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::ca::chain;

/// The options of one server.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// Listeners by mode spec; none: the one of `host`, `port` and `protocols`.
    modes: Vec<ModeSpec>,
    /// A reverse proxy keeps the client's `Host` field.
    keep_host_header: bool,
    /// Capture files to write.
    save: Vec<PathBuf>,
    max_connections: Option<usize>,
    /// The HTTP settings (limits, timeouts) of every listener.
    http: Http,
    ssl_insecure: bool,
    upstream_ca: Vec<PathBuf>,
    proxy_auth: Option<(String, String)>,
    /// The message hooks' plans (`mitm.http.message_plan`).
    handlers: Option<Py<PyList>>,
}

/// A duration in seconds from Python (`int` or `float`, at least 0).
fn seconds(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let secs: f64 = value
        .extract()
        .map_err(|_| PyValueError::new_err(format!("{name} is a number of seconds")))?;
    Duration::try_from_secs_f64(secs).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} is a number of seconds, at least 0, not {secs}"
        ))
    })
}

/// An error of the engine's as the Python exception that fits it.
fn capture_error(path: &std::path::Path, e: mitm::Error) -> PyErr {
    let text = format!("save={}: {}", path.display(), chain(&e));
    match &e {
        mitm::Error::CaptureIo { source, .. }
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            PyFileExistsError::new_err(format!(
                "{text} (a capture never overwrites a file: remove it or choose another name)"
            ))
        }
        mitm::Error::CaptureIo { .. } => PyOSError::new_err(text),
        _ => PyValueError::new_err(text),
    }
}

impl Options {
    /// Reads the dict `options` (None: none). Unknown keys are refused.
    pub(crate) fn from_py(options: Option<&Bound<'_, PyDict>>) -> PyResult<Options> {
        let mut o = Options::default();
        let Some(options) = options else {
            return Ok(o);
        };
        let mut http = Http::new();
        for (key, value) in options.iter() {
            let key: String = key.extract()?;
            if value.is_none() {
                continue;
            }
            match key.as_str() {
                "modes" => {
                    for spec in value.try_iter()? {
                        let spec: String = spec?.extract()?;
                        let parsed = spec
                            .parse::<ModeSpec>()
                            .map_err(|e| PyValueError::new_err(chain(&e)))?;
                        o.modes.push(parsed);
                    }
                }
                "keep_host_header" => o.keep_host_header = value.extract()?,
                "save" => {
                    for path in value.try_iter()? {
                        o.save.push(path?.extract()?);
                    }
                }
                "max_connections" => o.max_connections = Some(value.extract()?),
                "body_size_limit" => http = http.max_body(Some(value.extract()?)),
                "timeout" => http = http.timeout(seconds(&key, &value)?),
                "connect_timeout" => http = http.connect_timeout(seconds(&key, &value)?),
                "response_timeout" => http = http.response_timeout(seconds(&key, &value)?),
                "idle_timeout" => http = http.idle_timeout(seconds(&key, &value)?),
                "ssl_insecure" => o.ssl_insecure = value.extract()?,
                "upstream_ca" => {
                    for path in value.try_iter()? {
                        o.upstream_ca.push(path?.extract()?);
                    }
                }
                "proxy_auth" => o.proxy_auth = Some(value.extract()?),
                "handlers" => o.handlers = Some(value.cast::<PyList>()?.clone().unbind()),
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "unknown server option {key:?}"
                    )))
                }
            }
        }
        o.http = http;
        Ok(o)
    }

    /// The HTTP settings for the server's own listener's `HTTP` protocol.
    pub(crate) fn http(&self) -> Http {
        self.http.clone()
    }

    /// The message hooks' plans (for `EngineHooks`, added before `apply`).
    pub(crate) fn handlers<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyList>> {
        self.handlers.as_ref().map(|h| h.bind(py).clone())
    }

    /// Sets the options on `builder` (after its hooks): the capture (so that it saves
    /// flows as the hooks left them), the listeners of `modes`, the limits and upstream
    /// TLS. Reads the engine log's level again.
    pub(crate) fn apply(
        self,
        py: Python<'_>,
        mut builder: MitmBuilder,
    ) -> PyResult<(MitmBuilder, Finish)> {
        crate::log::refresh(py);
        let mut finish = Finish {
            capture: None,
            files: Vec::new(),
            ran: false,
        };
        if !self.save.is_empty() {
            let mut capture = mitm::capture::Capture::builder();
            for path in &self.save {
                let sink = mitm::capture::create_with(path, mitm::capture::SaveOptions::default())
                    .map_err(|e| capture_error(path, e))?;
                capture = capture.sink(sink);
                finish.files.push(path.clone());
            }
            let capture = Arc::new(capture.start());
            builder = builder.http_handler(capture.clone());
            finish.capture = Some(capture);
        }
        for spec in &self.modes {
            let listener = spec
                .listener(&self.http, self.keep_host_header)
                .map_err(|e| PyValueError::new_err(format!("mode {spec}: {}", chain(&e))))?;
            builder = builder.listener(listener);
        }
        if let Some(max) = self.max_connections {
            builder = builder.max_connections(max);
        }
        for file in &self.upstream_ca {
            builder = builder.upstream_ca_file(file);
        }
        if let Some((user, password)) = self.proxy_auth {
            builder = builder.proxy_auth(user, password);
        }
        builder = builder.dangerous_accept_invalid_upstream_certs(self.ssl_insecure);
        Ok((builder, finish))
    }
}

/// What is left to do when a server has stopped: write out its capture. Dropped
/// without [`run`](Self::run) (the server could not bind), it removes the capture files
/// it made, empty: trying again with the same `save=` then works.
#[derive(Debug)]
pub(crate) struct Finish {
    capture: Option<Arc<mitm::capture::Capture>>,
    /// The files the capture made.
    files: Vec<PathBuf>,
    /// Whether the server ran (and the files hold what it saw).
    ran: bool,
}

impl Finish {
    /// Waits (off the engine's threads) until the capture has written every flow it
    /// took, and says how many in the engine's log.
    pub(crate) async fn run(mut self) {
        self.ran = true;
        let Some(capture) = self.capture.take() else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || {
            let (written, dropped) = capture.finish();
            tracing::info!(written, dropped, "capture written");
        })
        .await;
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if self.ran {
            return;
        }
        if let Some(capture) = self.capture.take() {
            // Its writer thread lets go of the files.
            capture.finish();
        }
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}
