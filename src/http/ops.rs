//! Operations endpoints: liveness, readiness, metrics.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::state::AppState;

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses((status = 200, description = "the process is up", body = String))
)]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Models loaded and answering, store and index reachable.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses((status = 200, description = "ready: models, store and index answer"), (status = 503, description = "not ready; the checks say which part"))
)]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let encoder = state.engine.encoder().embed("ready?").await;
    let store = state.components.store.ping().await;
    let index = state.components.index.count().await;
    let intents = state.engine.intents();
    let ready = encoder.is_ok() && store.is_ok() && index.is_ok();
    let check = |ok: bool, error: Option<String>| match error {
        Some(error) if !ok => json!({ "ok": false, "error": error }),
        _ => json!({ "ok": ok }),
    };
    if let Err(err) = &store {
        tracing::warn!(error = %err, "readiness: store unreachable");
    }
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "encoder": check(encoder.is_ok(), encoder.as_ref().err().map(|e| e.to_string())),
            "store": check(store.is_ok(), store.as_ref().err().map(|_| "unreachable".to_string())),
            "index": check(index.is_ok(), index.as_ref().err().map(|e| e.to_string())),
        },
        "knowledge_chunks": index.as_ref().ok(),
        "intents": intents.info().intents,
        "intent_examples": intents.info().examples,
        "cluster": state.cluster.as_ref().map(|cluster| json!({
            "instance": cluster.instance_id(),
            "leader": cluster.leadership().is_leader(),
        })),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "Prometheus text format", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(count) = state.components.index.count().await {
        state.metrics.knowledge_chunks.set(count as i64);
    }
    let stats = state.engine.encoder().stats();
    let mut body = state.metrics.render();
    if let Some(cluster) = &state.cluster {
        body.push_str(&format!(
            "# HELP baton_cluster_leader 1 while this instance leads the sweeps and webhooks
# TYPE baton_cluster_leader gauge
baton_cluster_leader {}
",
            u8::from(cluster.leadership().is_leader())
        ));
    }
    // Encoder counters live in the worker threads; exposed as plain counters here.
    body.push_str(&format!(
        "# HELP baton_encoder_batches_total Model batches run by the encoder workers\n# TYPE baton_encoder_batches_total counter\nbaton_encoder_batches_total {}\n\
         # HELP baton_encoder_texts_total Texts embedded\n# TYPE baton_encoder_texts_total counter\nbaton_encoder_texts_total {}\n\
         # HELP baton_encoder_busy_seconds_total Time the encoder workers spent running the model\n# TYPE baton_encoder_busy_seconds_total counter\nbaton_encoder_busy_seconds_total {}\n",
        stats.batches.load(Ordering::Relaxed),
        stats.texts.load(Ordering::Relaxed),
        stats.busy_micros.load(Ordering::Relaxed) as f64 / 1e6,
    ));
    // SQLite's one writer, which every write of this process queues behind.
    if let Some(writer) = state.engine.store().writer_stats() {
        body.push_str(&format!(
            "# HELP baton_sqlite_writes_total Write transactions that took their turn on the SQLite writer\n# TYPE baton_sqlite_writes_total counter\nbaton_sqlite_writes_total {}\n\
             # HELP baton_sqlite_writer_wait_seconds_total Time writes waited for the SQLite writer\n# TYPE baton_sqlite_writer_wait_seconds_total counter\nbaton_sqlite_writer_wait_seconds_total {}\n\
             # HELP baton_sqlite_writer_held_seconds_total Time the SQLite writer was held; near 1 per second, writes queue\n# TYPE baton_sqlite_writer_held_seconds_total counter\nbaton_sqlite_writer_held_seconds_total {}\n\
             # HELP baton_sqlite_batch_commits_total Write transactions of finished turns and agent replies (those written while the writer is busy commit together)\n# TYPE baton_sqlite_batch_commits_total counter\nbaton_sqlite_batch_commits_total {}\n\
             # HELP baton_sqlite_batched_writes_total Finished turns and agent replies those transactions wrote\n# TYPE baton_sqlite_batched_writes_total counter\nbaton_sqlite_batched_writes_total {}\n",
            writer.writes,
            writer.waited_micros as f64 / 1e6,
            writer.held_micros as f64 / 1e6,
            writer.batch_commits,
            writer.batched_writes,
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
