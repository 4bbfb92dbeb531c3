//! `/healthz` and `/metrics` on `LIVESYNC_HTTP_ADDR` (loopback unless configured otherwise).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::service::Health;

#[derive(Clone)]
struct AppState {
    pool: PgPool,
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
}

pub fn router(pool: PgPool, health: Arc<Health>, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState {
            pool,
            health,
            metrics,
        })
}

/// 200 only while the database answers and the listener is in place (or poll-only) all
/// the time the request is served: the database check may wait for a new connection while
/// the server restarts, and the listener may go down and be back meanwhile.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let check = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("select 1").fetch_one(&state.pool),
    );
    tokio::pin!(check);
    let mut listener = state.health.listener_healthy();
    let database = loop {
        tokio::select! {
            answer = &mut check => break answer.map(|r| r.is_ok()).unwrap_or(false),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {
                listener &= state.health.listener_healthy();
            }
        }
    };
    let listener = listener && state.health.listener_healthy();
    let body = serde_json::json!({
        "database": if database { "ok" } else { "unreachable" },
        "listener": if state.health.poll_only { "poll-only" } else if listener { "ok" } else { "down" },
    });
    let status = if database && listener {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    match &state.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not enabled\n".to_string(),
        ),
    }
}

/// Serve until `stop` turns true.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    if addr.ip().is_loopback() {
        tracing::info!(%addr, "serving /healthz and /metrics");
    } else {
        tracing::warn!(
            %addr,
            "serving /healthz and /metrics on a non-loopback address (LIVESYNC_HTTP_ADDR): \
             everyone who can reach it sees the worker's state"
        );
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
