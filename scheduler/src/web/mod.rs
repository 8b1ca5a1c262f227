//! The ops dashboard: server-rendered pages on the same server as the API,
//! for the same two roles. Each page reads its API twin in-process (the
//! `/api/v1` handler is called directly and its JSON read as
//! [`views`]), so pages and API cannot disagree. Templates are askama
//! (checked at compile time); htmx polls the Now page; uPlot draws charts;
//! sparklines are inline SVG. Every asset is embedded ([`assets`]) and the
//! Content-Security-Policy allows nothing from elsewhere and no inline
//! script. Pages read without JavaScript; writes are plain HTML forms,
//! checked on the server by the API's own write handlers.

pub mod assets;
pub mod charts;
pub mod fmt;
pub mod forms;
pub mod pages;
pub mod views;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::auth::{Caller, Role};
use crate::api::problem::Problem;
use crate::api::ApiState;

/// The policy of every response: our own scripts, styles and fetches only;
/// no inline script or style; forms post only here; never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// The page routes (authenticated by the caller of this function).
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/", get(pages::now))
        .route("/now/live", get(pages::now_live))
        .route("/cycles", get(pages::cycles))
        .route("/cycles/{id}", get(pages::cycle))
        .route("/cycles/{id}/retry-failed", post(forms::retry_failed))
        .route("/jobs", get(pages::jobs))
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/{id}/retry", post(forms::retry))
        .route("/orgs", get(pages::orgs))
        .route("/orgs/{id}", get(pages::org))
        .route("/orgs/{id}/models/{model_type}", get(pages::model))
        .route(
            "/orgs/{id}/models/{model_type}/promote",
            post(forms::promote),
        )
        .route(
            "/orgs/{id}/models/{model_type}/rollback",
            post(forms::rollback),
        )
        .route("/workers", get(pages::workers))
        .route("/audit", get(pages::audit))
}

/// Security headers on every response of the server (pages, API, assets).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// What the layout needs: where we are, who is looking.
#[derive(Debug, Clone)]
pub struct Nav {
    pub here: &'static str,
    pub role: &'static str,
    pub operator: bool,
    pub title: String,
    pub css: String,
    pub js: String,
    pub htmx: bool,
    pub charts: bool,
    pub search: String,
}

impl Nav {
    pub fn new(here: &'static str, title: impl Into<String>, caller: &Caller) -> Self {
        Self {
            here,
            role: caller.role.as_str(),
            operator: caller.role == Role::Operator,
            title: title.into(),
            css: assets::own("app", "css"),
            js: assets::own("app", "js"),
            htmx: false,
            charts: false,
            search: String::new(),
        }
    }
    pub fn with_htmx(mut self) -> Self {
        self.htmx = true;
        self
    }
    pub fn with_charts(mut self) -> Self {
        self.charts = true;
        self
    }
    pub fn htmx_src(&self) -> String {
        format!("/assets/{}", assets::HTMX)
    }
    pub fn uplot_src(&self) -> String {
        format!("/assets/{}", assets::UPLOT_JS)
    }
    pub fn uplot_css(&self) -> String {
        format!("/assets/{}", assets::UPLOT_CSS)
    }
    /// `class="here"` for the current section's link.
    pub fn class_of(&self, section: &str) -> &'static str {
        if self.here == section {
            "here"
        } else {
            ""
        }
    }
}

/// A page that could not be built: the API's problem, shown as a page with
/// the same status.
#[derive(Debug)]
pub struct PageError(pub Problem);

impl From<Problem> for PageError {
    fn from(p: Problem) -> Self {
        Self(p)
    }
}

impl From<sqlx::Error> for PageError {
    fn from(e: sqlx::Error) -> Self {
        Self(Problem::from(e))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        pages::error_page(&self.0)
    }
}
