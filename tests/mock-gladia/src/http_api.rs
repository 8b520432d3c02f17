//! The REST side of the mock: `POST /v2/live` (session init) and Gladia-shaped error bodies.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::live_session::LiveSession;
use crate::records::{InitRecord, SessionRecord};
use crate::state::{SessionEntry, Shared};
use crate::validation::validate_streaming_request;
use crate::ws_session;

use crate::error_body::{error_body, error_response};
use crate::routes::{INIT_PATH, WS_PATH};
use crate::timestamp::now_iso8601;

const REGIONS: [&str; 2] = ["us-west", "eu-west"];
const UNSUPPORTED_FORMAT: &str = "mock supports only wav/pcm 16-bit 16 kHz mono";

/// Registers the mock's routes; unknown routes get Gladia's 404 body.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(1024 * 1024))
        .route(INIT_PATH, web::post().to(init_session))
        .route(WS_PATH, web::get().to(ws_session::connect))
        .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    error_response(StatusCode::NOT_FOUND, req.path(), "Not found", None)
}

/// The message Gladia (or the mock's best guess) gives for an injected failure status.
fn injected_message(status: StatusCode) -> String {
    match status.as_u16() {
        401 => "gladia key not found".to_owned(),
        413 => "payload too large".to_owned(),
        422 => "Invalid parameter".to_owned(),
        429 => "Too many concurrent live sessions".to_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("Unknown error")
            .to_owned(),
    }
}

/// What init answers, before it is recorded.
struct Outcome {
    status: StatusCode,
    body: Value,
    session: Option<LiveSession>,
}

impl Outcome {
    fn error(status: StatusCode, message: &str, validation_errors: Option<Vec<String>>) -> Self {
        Outcome {
            status,
            body: error_body(status, INIT_PATH, message, validation_errors),
            session: None,
        }
    }
}

async fn init_session(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    let outcome = decide_init(&req, parsed.as_ref().ok(), &shared);

    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let record = InitRecord {
        query: req.query_string().to_owned(),
        headers,
        body: parsed.unwrap_or(Value::Null),
        raw_body: String::from_utf8_lossy(&body).into_owned(),
        status: outcome.status.as_u16(),
        session_id: outcome.session.as_ref().map(|s| s.record.id.clone()),
    };
    tracing::info!(status = record.status, session = ?record.session_id, "POST /v2/live");
    // Record and session appear together, so a test that sees one also sees the other.
    shared.update(|inner| {
        inner.init_requests.push(record);
        if let Some(live) = outcome.session {
            inner.sessions.push(SessionEntry { live, active: None });
        }
    });
    HttpResponse::build(outcome.status).json(outcome.body)
}

/// Checks in the order a real gateway would: injected faults, auth, query, body, format.
fn decide_init(req: &HttpRequest, body: Option<&Value>, shared: &Shared) -> Outcome {
    if let Some(status) = shared.update(|inner| inner.fail_next.pop_front()) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let errors = (status == StatusCode::BAD_REQUEST).then(Vec::new);
        return Outcome::error(status, &injected_message(status), errors);
    }

    // HeaderMap lookups are case-insensitive, so `X-Gladia-Key` works as with the real API.
    let key = req.headers().get("x-gladia-key").map(|v| v.as_bytes());
    if key != Some(shared.config.api_key.as_bytes()) {
        return Outcome::error(StatusCode::UNAUTHORIZED, "gladia key not found", None);
    }

    let query = match web::Query::<BTreeMap<String, String>>::from_query(req.query_string()) {
        Ok(q) => q.into_inner(),
        Err(e) => {
            return Outcome::error(
                StatusCode::BAD_REQUEST,
                "Invalid query string",
                Some(vec![e.to_string()]),
            )
        }
    };
    let region = query.get("region").cloned();
    if let Some(r) = &region {
        if !REGIONS.contains(&r.as_str()) {
            return Outcome::error(
                StatusCode::BAD_REQUEST,
                "Invalid parameter",
                Some(vec![format!(
                    "Field \"region\" must be one of the following values: {}",
                    REGIONS.join(", ")
                )]),
            );
        }
    }

    let Some(body) = body else {
        return Outcome::error(
            StatusCode::BAD_REQUEST,
            "Invalid JSON body",
            Some(vec!["Body must be a JSON object".to_owned()]),
        );
    };
    let errors = validate_streaming_request(body);
    if !errors.is_empty() {
        return Outcome::error(StatusCode::BAD_REQUEST, "Invalid parameter", Some(errors));
    }

    // The speech detector only understands PCM16 mono 16 kHz; defaults are Gladia's.
    let encoding = body
        .get("encoding")
        .and_then(Value::as_str)
        .unwrap_or("wav/pcm");
    let bit_depth = body
        .get("bit_depth")
        .and_then(Value::as_f64)
        .unwrap_or(16.0);
    let sample_rate = body
        .get("sample_rate")
        .and_then(Value::as_f64)
        .unwrap_or(16000.0);
    let channels = body.get("channels").and_then(Value::as_i64).unwrap_or(1);
    if encoding != "wav/pcm" || bit_depth != 16.0 || sample_rate != 16000.0 || channels != 1 {
        return Outcome::error(StatusCode::UNPROCESSABLE_ENTITY, UNSUPPORTED_FORMAT, None);
    }

    let id = uuid::Uuid::new_v4().to_string();
    let token = uuid::Uuid::new_v4().to_string();
    // The URL is built from the Host the client used, so it works behind any address the
    // client can reach us at (the reference says clients must treat it as opaque).
    let url = format!(
        "ws://{}{WS_PATH}?token={token}",
        req.connection_info().host()
    );
    let record = SessionRecord {
        id: id.clone(),
        token,
        region,
        init_body: body.clone(),
        pcm: Vec::new(),
        pcm_arrivals: Vec::new(),
        ws_connections: 0,
        connection_ends: Vec::new(),
        audio_frames: 0,
        stop_received: false,
        closed_with_1000: false,
        ended: false,
        finals_sent: Vec::new(),
        partials_sent: Vec::new(),
    };
    Outcome {
        status: StatusCode::CREATED,
        body: json!({"id": id, "created_at": now_iso8601(), "url": url}),
        session: Some(LiveSession::new(record, &shared.config)),
    }
}
