//! The page, embedded in the binary: `index.html`, `app.css`, and the JavaScript as ES
//! modules the browser loads as they are (no build step) from `/js/`; and the proxy's
//! CA certificate, to download and trust.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{error, Shared};
use crate::web::json::ApiError;

/// The page's modules, by the name `/js/NAME` serves them under: `main.js` is the one
/// the page loads, which imports the others by relative URL (`./list.js`).
const MODULES: [(&str, &str); 13] = [
    ("main.js", include_str!("../assets/js/main.js")),
    ("state.js", include_str!("../assets/js/state.js")),
    ("dom.js", include_str!("../assets/js/dom.js")),
    ("format.js", include_str!("../assets/js/format.js")),
    ("api.js", include_str!("../assets/js/api.js")),
    ("list.js", include_str!("../assets/js/list.js")),
    ("filter.js", include_str!("../assets/js/filter.js")),
    ("views.js", include_str!("../assets/js/views.js")),
    ("edit.js", include_str!("../assets/js/edit.js")),
    ("intercept.js", include_str!("../assets/js/intercept.js")),
    ("detail.js", include_str!("../assets/js/detail.js")),
    ("live.js", include_str!("../assets/js/live.js")),
    ("keys.js", include_str!("../assets/js/keys.js")),
];

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

/// A module of the page's JavaScript. Module scripts must come as JavaScript (the
/// browser refuses any other type, and `nosniff` forbids guessing).
pub(super) async fn module(Path(name): Path<String>) -> Response {
    match MODULES.iter().find(|(n, _)| *n == name) {
        Some((_, text)) => asset("text/javascript; charset=utf-8", text),
        None => error(
            StatusCode::NOT_FOUND,
            ApiError::new(format!("the page has no module {name:?}")),
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The `./NAME.js` modules `text` imports.
    fn imports(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| l.starts_with("import ") || l.starts_with("} from "))
            .filter_map(|l| l.split("from \"./").nth(1)?.split('"').next())
            .collect()
    }

    #[test]
    fn the_page_loads_main_and_every_module_imported_is_served() {
        let html = include_str!("../assets/index.html");
        assert!(
            html.contains(r#"<script type="module" src="/js/main.js"></script>"#),
            "{html}"
        );
        let served: Vec<&str> = MODULES.iter().map(|(n, _)| *n).collect();
        let mut reached = vec!["main.js"];
        let mut i = 0;
        while let Some(name) = reached.get(i).copied() {
            let (_, text) = MODULES.iter().find(|(n, _)| *n == name).unwrap();
            for import in imports(text) {
                assert!(
                    served.contains(&import),
                    "{name} imports {import}, not served"
                );
                if !reached.contains(&import) {
                    reached.push(import);
                }
            }
            i += 1;
        }
        reached.sort_unstable();
        let mut all = served.clone();
        all.sort_unstable();
        assert_eq!(reached, all, "modules served that main.js never imports");
        // Every file of the folder is served.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web/assets/js");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort_unstable();
        assert_eq!(files, all);
    }
}
