//! Bearer tokens: the admin key for admin endpoints, a conversation's own token for its customer
//! calls. Missing credentials are 401; wrong ones 403.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use crate::assets::constant_time_eq;
use crate::bot::EngineError;
use crate::http::error::AppError;
use crate::state::AppState;
use crate::store::ConversationRecord;

/// The bearer token of a request, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// Proof that the request carries the admin key.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = state.settings.admin_key.as_deref() else {
            return Err(AppError::Forbidden(
                "the admin API is disabled: set BATON_ADMIN_KEY to enable it".into(),
            ));
        };
        let presented = bearer_token(&parts.headers).ok_or(AppError::MissingToken)?;
        if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
            Ok(Admin)
        } else {
            Err(AppError::Forbidden("wrong admin key".into()))
        }
    }
}

/// The conversation `id`, if the request carries its customer token.
pub async fn customer_conversation(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
) -> Result<ConversationRecord, AppError> {
    let token = bearer_token(headers).ok_or(AppError::MissingToken)?;
    match state.engine.authorize(id, token).await {
        Ok(Some(conversation)) => Ok(conversation),
        Ok(None) => Err(AppError::Forbidden(
            "this token does not belong to this conversation".into(),
        )),
        Err(EngineError::ConversationNotFound(_)) => {
            Err(AppError::NotFound(format!("conversation {id} not found")))
        }
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "bearer  xyz ".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("xyz"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }
}
