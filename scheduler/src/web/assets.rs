//! The dashboard's static files, embedded in the binary: the vendored
//! libraries (`assets/vendor/README.md` gives their origin and licence) and
//! our own script and stylesheet. Names carry a version, so browsers cache
//! them for a year; `app.css` and `app.js` carry the crate version.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::problem::Problem;

/// The version in the URL of our own assets (changes with each release).
pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");

pub const HTMX: &str = "htmx-2.0.11.min.js";
pub const UPLOT_JS: &str = "uPlot-1.6.32.iife.min.js";
pub const UPLOT_CSS: &str = "uPlot-1.6.32.min.css";

struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

const FILES: &[Asset] = &[
    Asset {
        name: HTMX,
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/vendor/htmx-2.0.11.min.js"),
    },
    Asset {
        name: UPLOT_JS,
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/vendor/uPlot-1.6.32.iife.min.js"),
    },
    Asset {
        name: UPLOT_CSS,
        mime: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/vendor/uPlot-1.6.32.min.css"),
    },
    Asset {
        name: "app.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/app.js"),
    },
    Asset {
        name: "app.css",
        mime: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/app.css"),
    },
];

/// `GET /assets/{file}`. Our own files are addressed only as
/// `app-<version>.js` / `app-<version>.css`; vendored ones by their name.
pub async fn serve(Path(file): Path<String>) -> Response {
    let name = if file == own_name("app", "js") {
        "app.js"
    } else if file == own_name("app", "css") {
        "app.css"
    } else if file.starts_with("app") {
        ""
    } else {
        file.as_str()
    };
    match FILES.iter().find(|a| a.name == name) {
        Some(a) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(a.mime)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
            ],
            a.body,
        )
            .into_response(),
        None => Problem::not_found("no such asset").into_response(),
    }
}

fn own_name(stem: &str, ext: &str) -> String {
    format!("{stem}-{APP_VERSION}.{ext}")
}

/// The URL of one of our own files.
pub fn own(stem: &str, ext: &str) -> String {
    format!("/assets/{}", own_name(stem, ext))
}
