//! `http.post_latency_ms` (docs/PROTOCOL.md#observability): every `POST`, from the request reaching the app to its
//! response leaving the handler (token checks and body parsing included, body streaming
//! out not). No labels: paths carry session slugs, which would make series unbounded.

use std::time::Instant;

use ::actors::metrics::names::HTTP_POST_LATENCY_MS;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::Error;

pub async fn record_post_latency(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = (req.method() == Method::POST).then(Instant::now);
    let response = next.call(req).await;
    if let Some(started) = started {
        ::metrics::histogram!(HTTP_POST_LATENCY_MS)
            .record(started.elapsed().as_secs_f64() * 1000.0);
    }
    response
}
