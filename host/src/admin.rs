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
//! | `GET /api/dlq/{plugin}` | JSON: the plugin's dead letters, oldest first, each with its last replay |
//! | `GET /api/dlq/{plugin}/{partition}/{offset}` | JSON: one dead letter |
//! | `POST /api/dlq/{plugin}/replay` | replay: body `{"offsets": [[partition, offset], …]}` or `{"all": true, "reason": "…"}`, plus `dry_run`, `force` |
//! | `GET /`, `/api/topology`, `/api/events`, `/api/audit` | the console ([`crate::console`]) |
//!
//! Refusals answer 4xx with `{"error": "<reason>"}`.
//!
//! **State-changing calls** (every `POST`) are guarded: when `POLYHOST_ADMIN_TOKEN` is set
//! they need `Authorization: Bearer <token>` (the CLI sends it from the same variable; the
//! console asks for it once), and otherwise they are refused when a browser says they come
//! from another site (`Sec-Fetch-Site` other than `same-origin`/`none`, or an `Origin`
//! whose host is not this server's `Host`), so a page elsewhere cannot make an operator's
//! browser reload or replay. Clients that send neither header (the CLI, curl) pass.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
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

/// The variable holding the token state-changing calls need, when set.
pub const TOKEN_VAR: &str = "POLYHOST_ADMIN_TOKEN";

/// The routes, guarded by the token in [`TOKEN_VAR`] if it is set.
pub fn router(supervisor: Arc<Supervisor>) -> Router {
    let token = std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty());
    router_with_token(supervisor, token)
}

/// The routes; `POST`s need `token` when given, else same-origin.
pub fn router_with_token(supervisor: Arc<Supervisor>, token: Option<String>) -> Router {
    let token = Arc::new(token);
    Router::new()
        .route("/", get(crate::console::index))
        .route("/console.js", get(crate::console::script))
        .route("/console.css", get(crate::console::style))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/plugins", get(plugins))
        .route("/api/plugins/{name}/reload", post(reload))
        .route("/api/plugins/{name}/rollback", post(rollback))
        .route("/api/manifest/reload", post(reload_manifest))
        .route("/api/topology", get(crate::console::topology))
        .route("/api/events", get(crate::console::events))
        .route("/api/audit", get(crate::console::audit))
        .route("/api/dlq/{plugin}", get(dlq_list))
        .route("/api/dlq/{plugin}/{partition}/{offset}", get(dlq_show))
        .route("/api/dlq/{plugin}/replay", post(dlq_replay))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let token = token.clone();
            async move { guard(token.as_deref(), req, next).await }
        }))
        .with_state(supervisor)
}

/// Why a state-changing call is refused, if it is (see the module docs).
pub fn refuse_state_change(
    token: Option<&str>,
    headers: &HeaderMap,
) -> Option<(StatusCode, String)> {
    let text = |name: &header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(token) = token {
        let given = text(&header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
        return (given != Some(token)).then(|| {
            (
                StatusCode::UNAUTHORIZED,
                format!("this call needs the admin token ({TOKEN_VAR}) as `Authorization: Bearer <token>`"),
            )
        });
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Some((
            StatusCode::FORBIDDEN,
            format!("cross-site request refused (Sec-Fetch-Site: {site})"),
        ));
    }
    if let Some(origin) = text(&header::ORIGIN) {
        let host = text(&header::HOST).unwrap_or_default();
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if origin_host != host {
            return Some((
                StatusCode::FORBIDDEN,
                format!("cross-origin request refused (Origin: {origin}, Host: {host})"),
            ));
        }
    }
    None
}

async fn guard(token: Option<&str>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET
        && req.method() != Method::HEAD
        && let Some((status, why)) = refuse_state_change(token, req.headers())
    {
        tracing::warn!(method = %req.method(), path = %req.uri().path(), reason = %why, "admin call refused");
        return (status, Json(json!({ "error": why }))).into_response();
    }
    next.run(req).await
}

async fn dlq_list(State(sup): State<Arc<Supervisor>>, Path(plugin): Path<String>) -> Response {
    match crate::dlq::list(sup.kafka(), &plugin).await {
        Ok(letters) => Json(letters).into_response(),
        Err(e) => dlq_refusal(e),
    }
}

async fn dlq_show(
    State(sup): State<Arc<Supervisor>>,
    Path((plugin, partition, offset)): Path<(String, i32, i64)>,
) -> Response {
    match crate::dlq::show(sup.kafka(), &plugin, partition, offset).await {
        Ok(letter) => Json(letter).into_response(),
        Err(e) => dlq_refusal(e),
    }
}

/// The body of a replay request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    /// `[partition, offset]` pairs of the dead-letter topic.
    #[serde(default)]
    offsets: Vec<(i32, i64)>,
    /// Every dead letter (not yet replayed, unless `force`).
    #[serde(default)]
    all: bool,
    /// With `all`: only those whose reason contains this.
    reason: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    force: bool,
}

/// Answers 200 with the outcomes, or 409 with them when a named dead letter was refused
/// (already replayed) or not found.
async fn dlq_replay(
    State(sup): State<Arc<Supervisor>>,
    Path(plugin): Path<String>,
    Json(body): Json<ReplayBody>,
) -> Response {
    let selection = if body.all {
        crate::dlq::Selection::All {
            reason_contains: body.reason,
        }
    } else {
        crate::dlq::Selection::Offsets(body.offsets)
    };
    let request = crate::dlq::ReplayRequest {
        plugin,
        selection,
        dry_run: body.dry_run,
        force: body.force,
        by: "admin-api".into(),
    };
    match crate::dlq::replay(sup.kafka(), &request).await {
        Ok(outcomes) if !body.all && outcomes.iter().any(|o| o.refused()) => (
            StatusCode::CONFLICT,
            Json(json!({
                "error": "some dead letters were not replayed (already replayed: `force` overrides)",
                "outcomes": outcomes,
            })),
        )
            .into_response(),
        Ok(outcomes) => Json(json!({ "outcomes": outcomes })).into_response(),
        Err(e) => dlq_refusal(e),
    }
}

fn dlq_refusal(e: crate::dlq::DlqError) -> Response {
    use crate::dlq::DlqError;
    let status = match &e {
        DlqError::NotFound(_) => StatusCode::NOT_FOUND,
        DlqError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        DlqError::Kafka(_) | DlqError::Timeout(_) => StatusCode::BAD_GATEWAY,
    };
    (status, Json(json!({ "error": e.to_string() }))).into_response()
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
