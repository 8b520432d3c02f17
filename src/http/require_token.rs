//! [`RequireToken`]: guards every `/api/*` route, so a route added later is protected without
//! doing anything; exceptions are listed in [`PUBLIC_API_PATHS`].
//!
//! Per request it finds the token (bearer header; on the WebSocket upgrade also `?token=`,
//! because browsers cannot set headers on a WebSocket), verifies it, checks it against every
//! session the request names (the `{slug}` of `/api/sessions/{slug}/…` and any `sessionSlug`
//! query parameter), and stores the [`Principal`] in the request extensions for handlers that
//! need it (the upgrade, `GET /api/sessions`). Handlers that take a session slug from a JSON
//! body must check it themselves with [`Principal::require_session`].

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ResourceDef, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header;
use actix_web::{web, Error, FromRequest, HttpMessage as _, HttpRequest, ResponseError as _};

use super::error::ApiError;
use crate::auth::{AuthError, Authenticator, Principal};
use crate::log_budget::{Budget, LogBudget};

/// `/api/*` paths that do not take a client token. The broadcast endpoint of docs/PROTOCOL.md#http-broadcast-mode is
/// called by another instance with its own shared secret (`x-broadcast-secret`).
pub const PUBLIC_API_PATHS: &[&str] = &["/api/realtime/transcribe/broadcast"];

/// The WebSocket upgrade: the one route that also accepts `?token=`.
pub const WEBSOCKET_PATH: &str = "/api/realtime/transcribe";

/// Routes whose `{slug}` names a session; a prefix, so it covers every sub-resource.
const SESSION_ROUTE: &str = "/api/sessions/{slug}";

fn is_guarded(path: &str) -> bool {
    (path == "/api" || path.starts_with("/api/")) && !PUBLIC_API_PATHS.contains(&path)
}

/// The middleware. Wrap the whole `App` with it: `App::new().wrap(RequireToken::new(auth))`.
#[derive(Clone, Debug)]
pub struct RequireToken {
    auth: Authenticator,
}

impl RequireToken {
    pub fn new(auth: Authenticator) -> RequireToken {
        RequireToken { auth }
    }
}

impl<S, B> Transform<S, ServiceRequest> for RequireToken
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = RequireTokenService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequireTokenService {
            service: Rc::new(service),
            auth: self.auth.clone(),
            session_route: Rc::new(ResourceDef::prefix(SESSION_ROUTE)),
        }))
    }
}

pub struct RequireTokenService<S> {
    service: Rc<S>,
    auth: Authenticator,
    session_route: Rc<ResourceDef>,
}

type BoxedResponse<B> =
    Pin<Box<dyn Future<Output = Result<ServiceResponse<EitherBody<B>>, Error>>>>;

impl<S, B> Service<ServiceRequest> for RequireTokenService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = BoxedResponse<B>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        // The path the router matches on (percent-decoded where actix decodes it), not the raw
        // one: `/%61pi/sessions` routes to `/api/sessions` and must be guarded like it.
        let path = req.match_info().as_str().to_owned();
        if is_guarded(&path) {
            match self.authorize(&req, &path) {
                Ok(principal) => {
                    req.extensions_mut().insert(principal);
                }
                Err(error) => {
                    // Anyone can be refused as fast as they can send: a few lines a second.
                    static REFUSALS: LogBudget = LogBudget::new(10);
                    if let Budget::Log { suppressed } = REFUSALS.take(std::time::Instant::now()) {
                        tracing::info!(%path, code = error.code(), suppressed, "api call refused");
                    }
                    let response = req.into_response(ApiError::from(error).error_response());
                    return Box::pin(async move { Ok(response.map_into_right_body()) });
                }
            }
        }
        let service = self.service.clone();
        Box::pin(async move { Ok(service.call(req).await?.map_into_left_body()) })
    }
}

impl<S> RequireTokenService<S> {
    fn authorize(&self, req: &ServiceRequest, path: &str) -> Result<Principal, AuthError> {
        if !self.auth.requires_token() {
            // Anonymous mode ignores whatever credentials a caller sends.
            return Ok(Principal::anonymous());
        }
        // Query pairs, all values kept: a repeated `sessionSlug` must not slip one past us.
        let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map(web::Query::into_inner)
            // Fail closed: a query we cannot read might carry a slug we did not check.
            .map_err(|_| AuthError::Malformed("the query string cannot be read"))?;
        let token = match bearer_token(req.request())? {
            Some(token) => Some(token),
            None if path == WEBSOCKET_PATH => query
                .iter()
                .find(|(k, v)| k == "token" && !v.is_empty())
                .map(|(_, v)| v.clone()),
            None => None,
        };
        let principal = self.auth.authenticate(token.as_deref())?;

        let mut route = req.match_info().clone();
        if self.session_route.capture_match_info(&mut route) {
            if let Some(slug) = route.get("slug") {
                principal.require_session(slug)?;
            }
        }
        for (_, slug) in query.iter().filter(|(k, _)| k == "sessionSlug") {
            principal.require_session(slug)?;
        }
        Ok(principal)
    }
}

/// The token of `Authorization: Bearer <token>`; `None` without the header.
pub(super) fn bearer_token(req: &HttpRequest) -> Result<Option<String>, AuthError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    const SHAPE: &str = "the Authorization header must be `Bearer <token>`";
    let value = value.to_str().map_err(|_| AuthError::Malformed(SHAPE))?;
    match value.trim().split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err(AuthError::Malformed(SHAPE)),
    }
}

/// Handlers behind [`RequireToken`] take the caller's [`Principal`] as an argument.
impl FromRequest for Principal {
    type Error = Error;
    type Future = Ready<Result<Principal, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Absent means the middleware is not installed: refuse rather than guess.
        ready(req.extensions().get::<Principal>().cloned().ok_or_else(|| {
            actix_web::error::ErrorInternalServerError("authentication middleware is not installed")
        }))
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::{test, App, HttpResponse};

    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::auth::SessionAccess;

    const SECRET: &str = "middleware-secret";

    fn token(sessions: serde_json::Value) -> String {
        let claims = json!({"sub": "u1", "exp": jsonwebtoken::get_current_timestamp() + 600, "sessions": sessions});
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    async fn echo(principal: Principal) -> HttpResponse {
        HttpResponse::Ok().json(json!({ "any": principal.access == SessionAccess::Any }))
    }

    macro_rules! app {
        ($secret:expr) => {
            test::init_service(
                App::new()
                    .wrap(RequireToken::new(Authenticator::new($secret)))
                    .route(
                        "/healthz",
                        web::get().to(|| async { HttpResponse::Ok().finish() }),
                    )
                    .route("/api/sessions", web::get().to(echo))
                    .route("/api/sessions/{slug}/x", web::get().to(echo))
                    .route("/api/realtime/transcribe", web::get().to(echo))
                    .route("/api/active-speaker", web::post().to(echo))
                    .route(
                        "/api/realtime/transcribe/broadcast",
                        web::post().to(|| async { HttpResponse::Ok().finish() }),
                    ),
            )
            .await
        };
    }

    /// Status and JSON body (`null` when not JSON) of one call.
    macro_rules! call {
        ($app:expr, $req:expr $(,)?) => {{
            let response = test::call_service(&$app, $req.to_request()).await;
            let status = response.status();
            let body = test::read_body(response).await;
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&body)
                    .unwrap_or(serde_json::Value::Null),
            )
        }};
    }

    #[actix_web::test]
    async fn everything_under_api_is_guarded_by_default() {
        let app = app!(Some(SECRET));
        for (method, path) in [
            ("GET", "/api/sessions"),
            ("GET", "/api/sessions/a/x"),
            ("GET", "/api/realtime/transcribe?sessionSlug=a"),
            ("POST", "/api/active-speaker"),
            ("GET", "/api/not-a-route"),
            ("GET", "/%61pi/sessions"),
        ] {
            let req = test::TestRequest::default()
                .method(method.parse().unwrap())
                .uri(path);
            let (code, body) = call!(app, req);
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(body["error"], "missing_token", "{method} {path}");
        }
        let (code, _) = call!(app, test::TestRequest::get().uri("/healthz"));
        assert_eq!(code, StatusCode::OK);
        let (code, _) = call!(
            app,
            test::TestRequest::post().uri("/api/realtime/transcribe/broadcast"),
        );
        assert_eq!(
            code,
            StatusCode::OK,
            "the broadcast endpoint has its own secret"
        );
    }

    #[actix_web::test]
    async fn slugs_in_path_and_query_are_checked() {
        let app = app!(Some(SECRET));
        let mine = token(json!(["mine"]));
        let bearer = format!("Bearer {mine}");
        let (code, body) = call!(
            app,
            test::TestRequest::get()
                .uri("/api/sessions/mine/x")
                .insert_header(("Authorization", bearer.as_str())),
        );
        assert_eq!((code, body["any"].clone()), (StatusCode::OK, json!(false)));
        let (code, body) = call!(
            app,
            test::TestRequest::get()
                .uri("/api/sessions/theirs/x")
                .insert_header(("Authorization", bearer.as_str())),
        );
        assert_eq!(code, StatusCode::FORBIDDEN);
        assert_eq!(body["error"], "session_forbidden");
        // A repeated parameter cannot smuggle a second session past the check.
        let (code, _) = call!(
            app,
            test::TestRequest::get().uri(&format!(
                "/api/realtime/transcribe?sessionSlug=mine&sessionSlug=theirs&token={mine}"
            )),
        );
        assert_eq!(code, StatusCode::FORBIDDEN);
        let (code, _) = call!(
            app,
            test::TestRequest::get().uri(&format!(
                "/api/realtime/transcribe?sessionSlug=mine&token={mine}"
            )),
        );
        assert_eq!(code, StatusCode::OK);
    }

    #[actix_web::test]
    async fn query_tokens_only_on_the_websocket_upgrade() {
        let app = app!(Some(SECRET));
        let any = token(json!("*"));
        let (code, _) = call!(
            app,
            test::TestRequest::get().uri(&format!("/api/sessions?token={any}"))
        );
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        let (code, body) = call!(
            app,
            test::TestRequest::get()
                .uri("/api/sessions")
                .insert_header(("Authorization", "Basic dXNlcjpwYXNz")),
        );
        assert_eq!(
            (code, body["error"].clone()),
            (StatusCode::UNAUTHORIZED, json!("malformed_token"))
        );
    }

    #[actix_web::test]
    async fn without_a_secret_everyone_is_anonymous_with_any_access() {
        let app = app!(None);
        let (code, body) = call!(app, test::TestRequest::get().uri("/api/sessions/x/x"));
        assert_eq!((code, body["any"].clone()), (StatusCode::OK, json!(true)));
        let (code, _) = call!(
            app,
            test::TestRequest::get()
                .uri("/api/sessions")
                .insert_header(("Authorization", "Basic dXNlcjpwYXNz"))
        );
        assert_eq!(
            code,
            StatusCode::OK,
            "credentials are ignored without a secret"
        );
    }
}
