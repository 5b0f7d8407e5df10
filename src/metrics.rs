//! What every component's metrics share: `/healthz`, `/readyz` and `/metrics`, served from a
//! component's own registry (`controller::metrics`, `verifier::metrics`, `webhook::metrics`).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

#[derive(Clone)]
struct Health {
    registry: Arc<Registry>,
    ready: watch::Receiver<bool>,
}

/// `/healthz`, `/readyz` (200 once `ready` turns true) and `/metrics` (the text of `registry`).
pub fn health_routes(registry: Arc<Registry>, ready: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Health { registry, ready })
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if *health.ready.borrow() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "initial lists not synced")
    }
}

async fn metrics_text(State(health): State<Health>) -> impl IntoResponse {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &health.registry);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
}
