//! The optional admin HTTP endpoint: `/healthz`, `/metrics` (Prometheus
//! text) and `/peers` (JSON per link), in the spirit of NATS' `/varz` and
//! `/routez`. Bind it to an address only operators can reach.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::flood::Hub;

struct Admin {
    node: String,
    neighbours: usize,
    hub: Arc<Hub>,
}

/// Serves the admin endpoints until `shutdown`.
pub async fn run(
    listener: TcpListener,
    node: String,
    neighbours: usize,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    let state = Arc::new(Admin {
        node,
        neighbours,
        hub,
    });
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/peers", get(peers))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::warn!(error = %e, "admin server failed");
    }
}

async fn healthz(State(admin): State<Arc<Admin>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "node": admin.node,
        "clients_known": admin.hub.len(),
        "links_up": admin.hub.attached().len(),
        "neighbours": admin.neighbours,
    }))
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let metrics = admin.hub.metrics();
    let mut text = metrics.render();
    // Table size is read at scrape time rather than tracked on every update.
    let eof = text.rfind("# EOF").unwrap_or(text.len());
    text.insert_str(
        eof,
        &format!(
            "# HELP herd_clients_known Clients with a stored location.\n\
             # TYPE herd_clients_known gauge\nherd_clients_known {}\n",
            admin.hub.len()
        ),
    );
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn peers(State(admin): State<Arc<Admin>>) -> Json<serde_json::Value> {
    Json(json!({
        "node": admin.node,
        "peers": admin.hub.metrics().peer_statuses(),
    }))
}
