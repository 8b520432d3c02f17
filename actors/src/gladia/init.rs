//! `POST {GLADIA_API_URL}/v2/live`: creates a provider session and returns its WebSocket URL.

use std::time::Duration;

use super::config::GladiaConfig;
use super::protocol::{init_body, ErrorBody, InitResponse};

/// Why an init failed, phrased for operators. Never contains the API key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InitError {
    #[error("provider answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("provider unreachable: {0}")]
    Network(String),
    #[error("provider init timed out after {0:?}")]
    Timeout(Duration),
    #[error("provider answered with an unreadable body: {0}")]
    BadBody(String),
}

impl InitError {
    /// 401/403/400/422 will not fix themselves quickly: retry slowly.
    pub fn is_permanent(&self) -> bool {
        matches!(self, InitError::Status { status, .. } if matches!(status, 400 | 401 | 403 | 404 | 422))
    }
}

pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn init_session(
    config: &GladiaConfig,
    session_slug: &str,
) -> Result<InitResponse, InitError> {
    let mut url = format!("{}/v2/live", config.api_url.trim_end_matches('/'));
    if let Some(region) = &config.region {
        url.push_str("?region=");
        url.push_str(region);
    }
    let client = awc::Client::builder().timeout(INIT_TIMEOUT).finish();
    let request = client
        .post(url)
        .insert_header(("x-gladia-key", config.api_key.as_str()))
        .send_json(&init_body(session_slug));
    let mut response = match request.await {
        Ok(r) => r,
        Err(awc::error::SendRequestError::Timeout) => return Err(InitError::Timeout(INIT_TIMEOUT)),
        Err(e) => return Err(InitError::Network(e.to_string())),
    };
    let status = response.status();
    let body = response
        .body()
        .limit(64 * 1024)
        .await
        .map_err(|e| InitError::BadBody(e.to_string()))?;
    if status.is_success() {
        return serde_json::from_slice::<InitResponse>(&body)
            .map_err(|e| InitError::BadBody(e.to_string()));
    }
    let parsed: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
    let mut message = parsed
        .message
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    if let Some(errors) = parsed.validation_errors.filter(|e| !e.is_empty()) {
        message.push_str(&format!(" ({})", errors.join("; ")));
    }
    // The provider could echo our key in an error message; never let it reach a log.
    let message = message.replace(config.api_key.as_str(), "[redacted]");
    Err(InitError::Status {
        status: status.as_u16(),
        message,
    })
}
