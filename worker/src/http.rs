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
        Some(handle) => {
            update_gauges(&state.pool).await;
            (StatusCode::OK, handle.render())
        }
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not enabled\n".to_string(),
        ),
    }
}

/// The gauges that need the database, read when /metrics is scraped (an idle worker sends
/// no statement of its own for them), in one statement: queue depth (queued entries and
/// change-log rows not expanded yet), dead letters, how full the server's notification
/// queue is, and verification: the items of every calendar by what its last verification
/// found (of the people whose live sync is active; after a scheduled pass, that pass's
/// totals) and when a scheduled pass last read every calendar.
async fn update_gauges(pool: &PgPool) {
    type Gauges = (i64, i64, f64, i64, i64, i64, i64, i64, i64, Option<f64>);
    let gauges: Result<Gauges, sqlx::Error> = sqlx::query_as(
        "select (select count(*) from livesync.queue)
                + (select count(*) from livesync.changes),
                (select count(*) from livesync.dead_letters),
                pg_notification_queue_usage(),
                v.ok, v.missing, v.orphan, v.drifted, v.duplicate, v.foreign_items,
                (select extract(epoch from succeeded_at)::float8 from livesync.verify_pass)
           from (select coalesce(sum(items_ok), 0)::bigint as ok,
                        coalesce(sum(items_missing), 0)::bigint as missing,
                        coalesce(sum(items_orphan), 0)::bigint as orphan,
                        coalesce(sum(items_drifted), 0)::bigint as drifted,
                        coalesce(sum(items_duplicate), 0)::bigint as duplicate,
                        coalesce(sum(items_foreign), 0)::bigint as foreign_items
                   from livesync.verifications where livesync.sync_active(user_id)) v",
    )
    .fetch_one(pool)
    .await;
    match gauges {
        Ok((queued, dead, usage, ok, missing, orphan, drifted, duplicate, foreign, success)) => {
            metrics::gauge!("livesync_queue_depth").set(queued as f64);
            metrics::gauge!("livesync_dead_letters").set(dead as f64);
            metrics::gauge!("livesync_notification_queue_usage").set(usage);
            for (state, n) in [
                ("ok", ok),
                ("missing", missing),
                ("orphan", orphan),
                ("drifted", drifted),
                ("duplicate", duplicate),
                ("foreign", foreign),
            ] {
                metrics::gauge!("livesync_calendar_items", "state" => state).set(n as f64);
            }
            if let Some(at) = success {
                metrics::gauge!("livesync_verify_last_success_timestamp_seconds").set(at);
            }
        }
        Err(e) => tracing::debug!(error.message = %e, "reading the gauges failed"),
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
