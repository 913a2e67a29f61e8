//! The page, embedded in the binary: `index.html`, `app.js` and `app.css`; and the
//! proxy's CA certificate, to download and trust.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{error, Shared};
use crate::web::json::ApiError;

fn asset(content_type: &'static str, text: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

pub(super) async fn page() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("../assets/index.html"),
    )
}

pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("../assets/app.css"))
}

pub(super) async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../assets/app.js"),
    )
}

/// The proxy's CA certificate, to download and trust.
pub(super) async fn ca_pem(State(app): Shared) -> Response {
    let Some(ca) = &app.ca else {
        return error(
            StatusCode::NOT_FOUND,
            ApiError::new("this UI has no CA to offer"),
        );
    };
    (
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"mitm-ca.pem\"",
            ),
        ],
        ca.cert_pem().to_string(),
    )
        .into_response()
}
