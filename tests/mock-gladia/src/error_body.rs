//! Gladia-shaped error bodies, shared by the REST and WebSocket sides.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::{json, Value};

use crate::timestamp::now_iso8601;

/// Gladia's error DTO: `{timestamp, path, request_id, statusCode, message[, validation_errors]}`.
pub fn error_body(
    status: StatusCode,
    path: &str,
    message: &str,
    validation_errors: Option<Vec<String>>,
) -> Value {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let mut body = json!({
        "timestamp": now_iso8601(),
        "path": path,
        "request_id": format!("G-{}", &request_id[..8]),
        "statusCode": status.as_u16(),
        "message": message,
    });
    if let (Some(errors), Some(obj)) = (validation_errors, body.as_object_mut()) {
        obj.insert("validation_errors".into(), json!(errors));
    }
    body
}

pub fn error_response(
    status: StatusCode,
    path: &str,
    message: &str,
    validation_errors: Option<Vec<String>>,
) -> HttpResponse {
    HttpResponse::build(status).json(error_body(status, path, message, validation_errors))
}
