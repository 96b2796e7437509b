//! The HTTP API (axum). The caller owns the listener and the shutdown signal ([`serve`]), so tests
//! start the real server on port 0 and stop it when they like.
//!
//! Routes:
//! - customer: `POST /v1/conversations`, `POST /v1/conversations/{id}/messages`,
//!   `GET /v1/conversations/{id}` (conversation token as Bearer);
//! - admin (`BATON_ADMIN_KEY` as Bearer): `POST /v1/understand`, `/v1/admin/documents...`,
//!   `/v1/admin/knowledge/...`, `/v1/admin/intents...`;
//! - operations: `/healthz`, `/readyz`, `/metrics`.

pub mod admin;
pub mod agents;
pub mod auth;
pub mod customer;
pub mod error;
pub mod limits;
pub mod openapi;
pub mod ops;
pub mod validate;
pub mod web;
pub mod ws;

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let server = &state.settings.server;
    let api = Router::new()
        .route("/v1/conversations", post(customer::create_conversation))
        .route("/v1/conversations/{id}", get(customer::get_conversation))
        .route(
            "/v1/conversations/{id}/messages",
            post(customer::post_message),
        )
        .route("/v1/understand", post(admin::understand))
        .route(
            "/v1/admin/documents",
            get(admin::list_documents).post(admin::upload_documents),
        )
        .route("/v1/admin/documents/{id}", delete(admin::delete_document))
        .route("/v1/admin/knowledge/search", get(admin::search_knowledge))
        .route("/v1/admin/knowledge/sync", post(admin::sync_knowledge))
        .route("/v1/admin/intents", get(admin::get_intents))
        .route("/v1/admin/intents/train", post(admin::train_intents))
        .route(
            "/v1/admin/agents",
            get(agents::list_agents).post(agents::create_agent),
        )
        .route("/v1/agents/login", post(agents::login))
        .route("/v1/agents/logout", post(agents::logout))
        .route("/v1/agents/me", get(agents::me))
        .route("/v1/queue", get(agents::queue))
        .route("/v1/conversations/{id}/context", get(agents::context))
        .route("/v1/conversations/{id}/assist", post(agents::assist))
        .route("/v1/conversations/{id}/claim", post(agents::claim))
        .route("/v1/conversations/{id}/assign", post(agents::assign))
        .route("/v1/conversations/{id}/transfer", post(agents::transfer))
        .route("/v1/conversations/{id}/resolve", post(agents::resolve))
        .route("/v1/conversations/{id}/hand-back", post(agents::hand_back))
        .route(
            "/v1/conversations/{id}/agent-messages",
            post(agents::agent_message),
        )
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(server.request_timeout_secs),
        ))
        // Requests beyond the limit wait for a slot instead of piling work onto two cores.
        .layer(GlobalConcurrencyLimitLayer::new(
            server.max_concurrent_requests.max(1),
        ));
    let api = match cors_layer(&server.cors_origins) {
        Some(cors) => api.layer(cors),
        None => api,
    };
    // WebSockets live outside the request timeout and the concurrency limit: they are long-lived
    // by design and bounded per connection instead.
    let limited = Router::new()
        .merge(api)
        .route("/v1/conversations/{id}/ws", get(agents::customer_socket))
        .route("/v1/agents/ws", get(agents::agent_socket))
        // Per address, before any work: a refused request costs a hash lookup.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::limit_by_ip,
        ));
    Router::new()
        .merge(limited)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(web::routes())
        .layer(DefaultBodyLimit::max(server.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        // The span names the path, never the query: WebSocket URLs carry `?token=`.
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                tracing::debug_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                )
            }),
        )
        .with_state(state)
}

/// Browsers on the listed origins may call the API (the widget embedded on another site). Tokens
/// travel in the Authorization header, not cookies, so credentials mode stays off.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{header, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_secs(600)),
    )
}

/// Count requests and their latency per route template (never per raw path: ids would explode
/// the label set).
async fn record_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    state
        .metrics
        .http_requests
        .with_label_values(&[&route, &method, &status])
        .inc();
    state
        .metrics
        .http_duration
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Serve HTTP and WebSockets until `shutdown` completes, then stop accepting connections and
/// give in-flight requests up to `grace` to finish. Only the serving: the background workers
/// (sweeps, webhooks) are the caller's, see `app::serve`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(state.settings.server.shutdown_grace_secs);
    let hub = state.handoff.hub().clone();
    let app = router(state);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        // Open WebSockets are told the server is going away (code 1001) and reconnect elsewhere
        // or later, resuming from their last message.
        hub.close_all();
        let _ = stopping_tx.send(());
    };
    // The peer address feeds the per-address request limit.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Frames go out as they are written. With Nagle's algorithm a small frame written while an
    // earlier one is unacknowledged waits for that acknowledgement, which the client's delayed
    // ACK can hold back 40 ms: an agent socket carrying many conversations hit exactly that.
    let listener = listener.tap_io(|connection| {
        if let Err(err) = connection.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY on a connection");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let server = tokio::spawn(async move { server.await });
    tokio::pin!(server);
    let finished = tokio::select! {
        finished = &mut server => Some(finished),
        _ = stopping_rx => None,
    };
    let result = match finished {
        Some(finished) => finished.map_err(std::io::Error::other)?,
        None => match tokio::time::timeout(grace, &mut server).await {
            Ok(finished) => finished.map_err(std::io::Error::other)?,
            Err(_) => {
                tracing::warn!(
                    grace_secs = grace.as_secs(),
                    "requests still running after the grace period; stopping anyway"
                );
                server.abort();
                Ok(())
            }
        },
    };
    result
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
