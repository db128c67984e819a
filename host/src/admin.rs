//! The admin API: an HTTP server on `127.0.0.1:9400` by default (`--admin-addr`,
//! `POLYHOST_ADMIN_ADDR`), built on `axum`.
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 when every backend a plugin is bound to answers, else 503 naming them |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /api/plugins` | JSON: every plugin's name, version digest, state, topics, counters, lag |
//! | `POST /api/plugins/{name}/reload` | hot swap; JSON body `{"wasm": "/path"}` optional |
//! | `POST /api/plugins/{name}/rollback` | back to the previous version |
//! | `POST /api/manifest/reload` | re-read the manifest: add, remove, change plugins |
//!
//! Refusals answer 4xx with `{"error": "<reason>"}`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::supervisor::{Supervisor, SwapError};

/// The default address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9400";

/// Binds `addr` and serves the API until `shutdown` resolves; returns the bound address
/// (useful with port 0) and the server task.
pub async fn serve(
    addr: SocketAddr,
    supervisor: Arc<Supervisor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(supervisor);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok((bound, task))
}

/// The routes.
pub fn router(supervisor: Arc<Supervisor>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/plugins", get(plugins))
        .route("/api/plugins/{name}/reload", post(reload))
        .route("/api/plugins/{name}/rollback", post(rollback))
        .route("/api/manifest/reload", post(reload_manifest))
        .with_state(supervisor)
}

async fn readyz(State(sup): State<Arc<Supervisor>>) -> Response {
    let failing: Vec<String> = sup
        .runtime()
        .connections()
        .readiness()
        .await
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}")))
        .collect();
    if failing.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", failing.join("\n")),
        )
            .into_response()
    }
}

async fn metrics(State(sup): State<Arc<Supervisor>>) -> Response {
    // Refreshes the lag and in-flight gauges.
    let _ = sup.status().await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::global().encode(),
    )
        .into_response()
}

async fn plugins(State(sup): State<Arc<Supervisor>>) -> Response {
    Json(sup.status().await).into_response()
}

/// The body of a reload request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    /// Load this file instead of the manifest's path.
    wasm: Option<PathBuf>,
}

async fn reload(
    State(sup): State<Arc<Supervisor>>,
    Path(name): Path<String>,
    body: Option<Json<ReloadBody>>,
) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    answer(sup.reload(&name, body.wasm.as_deref()).await)
}

async fn rollback(State(sup): State<Arc<Supervisor>>, Path(name): Path<String>) -> Response {
    answer(sup.rollback(&name).await)
}

async fn reload_manifest(State(sup): State<Arc<Supervisor>>) -> Response {
    match sup.reload_manifest().await {
        Ok(changes) => Json(json!({ "changes": changes })).into_response(),
        Err(e) => refusal(e),
    }
}

fn answer<T: serde::Serialize>(r: Result<T, SwapError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => refusal(e),
    }
}

fn refusal(e: SwapError) -> Response {
    let status = match e {
        SwapError::NoSuchPlugin(_) => StatusCode::NOT_FOUND,
        SwapError::NoPrevious(_) => StatusCode::CONFLICT,
        SwapError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (status, Json(json!({ "error": e.to_string() }))).into_response()
}
