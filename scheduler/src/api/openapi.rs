//! The OpenAPI 3.1 document of the API, generated from the handlers'
//! annotations and served at `/api/v1/openapi.json` (behind the same auth).

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{models, read, write};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "trainyard ops API",
        description = "Cycles, jobs, organizations, models, workers and the audit trail of trainyard; \
                       operator writes. Errors are RFC 9457 problem documents."
    ),
    paths(
        super::health,
        super::ready,
        read::overview,
        read::cycles,
        read::cycle,
        read::matrix,
        read::jobs,
        read::job,
        read::epochs,
        read::orgs,
        read::org,
        read::versions,
        models::compare,
        models::forecast,
        models::anomalies,
        read::workers,
        read::audit,
        write::enqueue,
        write::create_cycle,
        write::retry,
        write::retry_failed,
        write::promote,
        write::rollback,
        document,
    ),
    modifiers(&Tokens),
    security(("bearer" = []), ("basic" = []))
)]
pub struct ApiDoc;

struct Tokens;

impl Modify for Tokens {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "read", summary = "This OpenAPI document",
    responses((status = 200, description = "the document", body = serde_json::Value)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
