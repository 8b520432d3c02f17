//! [`ApiError`]: every refusal of the HTTP API, as `{"error": code, "message": …}` with its
//! status (docs/openapi.yaml `components.schemas.Error`). Handlers return
//! `Result<_, ApiError>` and build errors from what went wrong (`?` on an [`AuthError`], a
//! [`SessionRefused`], a [`MailboxError`]); each of those maps to one status and code here, so
//! the same refusal reads the same on every route.

use ::actors::registry::SessionRefused;
use actix::MailboxError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::auth::AuthError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `WWW-Authenticate` of a 401 (RFC 6750 §3: it names the scheme to use).
    challenge: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            challenge: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 503 `unavailable`: an actor the request needs has stopped (the service or the session
    /// is shutting down); the caller may retry.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 404 `session_not_found`.
    pub fn session_not_found(slug: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("no live session {slug:?} on this instance"),
        )
    }

    /// 503 `database_unavailable`: storage did not answer (the error is already redacted).
    pub fn database_unavailable(error: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            error.to_string(),
        )
    }

    /// The machine-readable `error` field.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status)
            .json(serde_json::json!({ "error": self.code, "message": self.message }));
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> ApiError {
        let (status, challenge) = match error {
            AuthError::NotValidForSession(_) | AuthError::RoleForbidden { .. } => {
                (StatusCode::FORBIDDEN, None)
            }
            AuthError::MissingToken => (
                StatusCode::UNAUTHORIZED,
                Some(r#"Bearer realm="realtime-core""#),
            ),
            _ => (
                StatusCode::UNAUTHORIZED,
                Some(r#"Bearer realm="realtime-core", error="invalid_token""#),
            ),
        };
        ApiError {
            status,
            code: error.code(),
            message: error.to_string(),
            challenge,
        }
    }
}

impl From<SessionRefused> for ApiError {
    fn from(error: SessionRefused) -> ApiError {
        let (status, code) = match error {
            SessionRefused::BadSlug => (StatusCode::BAD_REQUEST, "bad_session_slug"),
            SessionRefused::TooManySessions(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "too_many_sessions")
            }
            SessionRefused::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<MailboxError> for ApiError {
    fn from(_: MailboxError) -> ApiError {
        ApiError::unavailable("the session is shutting down; retry")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_maps_to_one_status_and_code_everywhere() {
        let cases = [
            (
                ApiError::from(SessionRefused::BadSlug),
                400,
                "bad_session_slug",
            ),
            (
                ApiError::from(SessionRefused::TooManySessions(3)),
                503,
                "too_many_sessions",
            ),
            (
                ApiError::from(SessionRefused::ShuttingDown),
                503,
                "shutting_down",
            ),
            (
                ApiError::from(AuthError::MissingToken),
                401,
                "missing_token",
            ),
            (ApiError::from(AuthError::Expired), 401, "token_expired"),
            (
                ApiError::from(AuthError::NotValidForSession("a".into())),
                403,
                "session_forbidden",
            ),
            (ApiError::from(MailboxError::Closed), 503, "unavailable"),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status_code().as_u16(), status, "{error}");
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn a_401_names_the_bearer_scheme_and_a_403_does_not() {
        let response = ApiError::from(AuthError::BadSignature).error_response();
        let challenge = response.headers().get(header::WWW_AUTHENTICATE);
        assert_eq!(
            challenge.and_then(|v| v.to_str().ok()),
            Some(r#"Bearer realm="realtime-core", error="invalid_token""#)
        );
        let response = ApiError::from(AuthError::NotValidForSession("a".into())).error_response();
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
