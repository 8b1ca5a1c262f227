//! Who is calling: a reader or an operator, from a token in the environment.
//! Bearer for API clients, HTTP Basic (any user, the token as password) for
//! browsers; tokens are compared in constant time (on their SHA-256, so
//! their length does not show either) and never logged. Non-GET requests
//! from another site (Fetch Metadata or a foreign `Origin`) are refused.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::problem::Problem;
use super::ApiState;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Reader,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
        }
    }
}

/// The tokens of the two roles (their digests only are kept).
#[derive(Clone, Default)]
pub struct Tokens {
    reader: Option<[u8; 32]>,
    operator: Option<[u8; 32]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("reader", &self.reader.is_some())
            .field("operator", &self.operator.is_some())
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Empty tokens count as unset.
    pub fn new(reader: Option<&str>, operator: Option<&str>) -> Self {
        let keep = |t: Option<&str>| t.filter(|t| !t.is_empty()).map(digest);
        Self {
            reader: keep(reader),
            operator: keep(operator),
        }
    }

    pub fn any(&self) -> bool {
        self.reader.is_some() || self.operator.is_some()
    }

    pub fn has_operator(&self) -> bool {
        self.operator.is_some()
    }

    /// The role of a presented token, comparing against both in constant time.
    fn role_of(&self, presented: &str) -> Option<Role> {
        let d = digest(presented);
        let is = |t: &Option<[u8; 32]>| t.map(|t| bool::from(t.ct_eq(&d))).unwrap_or(false);
        let (op, rd) = (is(&self.operator), is(&self.reader));
        if op {
            Some(Role::Operator)
        } else if rd {
            Some(Role::Reader)
        } else {
            None
        }
    }
}

/// The caller of one request, put in the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    /// The Basic user name when one was given (unverified, for the audit),
    /// else how the token came.
    pub actor: String,
    pub request_id: String,
}

/// The token and the user name of an `Authorization` header.
fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some((rest.to_string(), "bearer".to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        let user: String = user
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-_.@".contains(*c))
            .take(64)
            .collect();
        let actor = if user.is_empty() {
            "basic".to_string()
        } else {
            format!("basic:{user}")
        };
        return Some((password.to_string(), actor));
    }
    None
}

/// A request id from `X-Request-Id` when it is short and plain, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// A non-GET request sent by another site: `Sec-Fetch-Site` other than
/// same-origin or none, or an `Origin` whose host is not this `Host`.
fn cross_site(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("cross-site");
        if site != "same-origin" && site != "none" {
            return true;
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        if origin == "null" || origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return true;
        }
    }
    false
}

/// Authenticates every `/api` request and refuses cross-site writes.
pub async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = request_id(request.headers());
    let caller = if !state.tokens.any() {
        // No token is configured: only possible on a loopback bind.
        Some(Caller {
            role: Role::Reader,
            actor: "loopback".to_string(),
            request_id: id.clone(),
        })
    } else {
        credentials(request.headers()).and_then(|(token, actor)| {
            state.tokens.role_of(&token).map(|role| Caller {
                role,
                actor,
                request_id: id.clone(),
            })
        })
    };
    let mut response = match caller {
        None => {
            let mut r = Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a reader or operator token is required: `Authorization: Bearer TOKEN`, \
                 or HTTP Basic with the token as password",
            )
            .into_response();
            // One challenge per header: browsers read Basic (and prompt),
            // API clients Bearer.
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="trainyard", charset="UTF-8""#),
            );
            r.headers_mut().append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="trainyard""#),
            );
            r
        }
        Some(_) if cross_site(request.method(), request.headers()) => {
            let h = request.headers();
            let show = |name: &str| {
                h.get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.chars().take(100).collect::<String>())
                    .unwrap_or_default()
            };
            tracing::warn!(request.id = %id, path = %request.uri().path(),
                sec_fetch_site = %show("sec-fetch-site"), origin = %show("origin"), host = %show("host"),
                "refused a cross-site write");
            Problem::forbidden(
                "a cross-site request may not change anything (Sec-Fetch-Site or Origin)",
            )
            .into_response()
        }
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Refuses a non-operator: 403 with a problem document saying why.
pub fn require_operator(state: &ApiState, caller: &Caller) -> Result<(), Problem> {
    if !state.tokens.has_operator() {
        return Err(Problem::forbidden(
            "writes are disabled: no operator token is configured (set TRAINYARD_OPERATOR_TOKEN)",
        ));
    }
    if caller.role != Role::Operator {
        return Err(Problem::forbidden("this action needs the operator token"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_resolve_to_their_roles_and_empty_ones_are_unset() {
        let t = Tokens::new(Some("r-token"), Some("o-token"));
        assert_eq!(t.role_of("o-token"), Some(Role::Operator));
        assert_eq!(t.role_of("r-token"), Some(Role::Reader));
        assert_eq!(t.role_of("r-toke"), None);
        assert_eq!(t.role_of(""), None);
        let none = Tokens::new(Some(""), None);
        assert!(!none.any());
        assert!(!format!("{t:?}").contains("token\""), "{t:?}");
    }

    #[test]
    fn cross_site_writes_are_recognized() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("ops.example:8080"));
        assert!(!cross_site(&Method::POST, &h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://ops.example:8080"),
        );
        assert!(!cross_site(&Method::POST, &h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(cross_site(&Method::POST, &h));
        assert!(!cross_site(&Method::GET, &h), "reads are not checked");
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&Method::POST, &h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(!cross_site(&Method::POST, &h));
    }
}
