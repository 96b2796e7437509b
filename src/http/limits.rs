//! The per-address request limit as axum middleware; the limits themselves are in
//! `crate::limits` (shared by the routes and the WebSocket loops through the server state).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::AppError;
pub use crate::limits::{LimitError, Limits, SocketKind, SocketPermit};
use crate::state::AppState;

/// Middleware: the per-address request limit on the API routes.
pub async fn limit_by_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    if let Some(ip) = state.limits.client_ip(request.headers(), peer) {
        if let Err(refused) = state.limits.check_ip(ip) {
            return AppError::from(refused).into_response();
        }
    }
    next.run(request).await
}
