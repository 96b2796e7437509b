//! Admin endpoints (admin key as Bearer): understanding a message, managing the knowledge base and
//! retraining the intents.

use axum::body::Bytes;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::bot::{KnowledgeRef, Understanding};
use crate::http::auth::Admin;
use crate::http::error::{ApiJson, AppError, ErrorBody};
use crate::http::validate;
use crate::knowledge::ingest::{IngestOutcome, SyncReport, UPLOAD_PREFIX};
use crate::nlp::intent_model::TrainingInfo;
use crate::nlp::intents::IntentSpec;
use crate::state::AppState;
use crate::store::DocumentSummary;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnderstandRequest {
    pub text: String,
}

#[utoipa::path(
    post,
    path = "/v1/understand",
    tag = "admin",
    request_body = UnderstandRequest,
    responses((status = 200, description = "intent, knowledge, sentiment and timings", body = Understanding), (status = 400, description = "malformed body or bad field", body = ErrorBody), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 503, description = "the model is unavailable or the request timed out", body = ErrorBody)),
    security(("admin_key" = []))
)]
pub async fn understand(
    _admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<UnderstandRequest>,
) -> Result<Json<Understanding>, AppError> {
    let text = validate::message_text(&body.text, state.settings.server.max_message_chars)?;
    let detail = state.engine.understand(text).await?;
    Ok(Json(detail.understanding))
}

#[utoipa::path(
    get,
    path = "/v1/admin/documents",
    tag = "admin",
    responses((status = 200, description = "documents with chunk counts", body = Vec<DocumentSummary>), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody)),
    security(("admin_key" = []))
)]
pub async fn list_documents(
    _admin: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<DocumentSummary>>, AppError> {
    Ok(Json(state.components.knowledge.list().await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// File name for a raw (non-multipart) upload; its extension picks the parser.
    pub name: Option<String>,
}

/// Upload documents: `multipart/form-data` with one or more file parts, or a raw body with
/// `?name=FILE.md`. Each file is stored as `upload/NAME`; uploading the same name replaces it.
#[utoipa::path(
    post,
    path = "/v1/admin/documents",
    tag = "admin",
    request_body(
        content = Vec<u8>,
        description = "a raw file (with ?name=FILE.ext), or multipart/form-data with one or more file parts",
        content_type = "application/octet-stream"
    ),
    params(UploadQuery),
    responses((status = 201, description = "what each file became", body = Vec<IngestOutcome>), (status = 400, description = "malformed body or bad field", body = ErrorBody), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 413, description = "text or body too long", body = ErrorBody), (status = 422, description = "a file that cannot be parsed (names file and line)", body = ErrorBody)),
    security(("admin_key" = []))
)]
pub async fn upload_documents(
    _admin: Admin,
    State(state): State<AppState>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Vec<IngestOutcome>>), AppError> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut files: Vec<(String, Bytes)> = Vec::new();
    if content_type.starts_with("multipart/form-data") {
        let request = axum::http::Request::builder()
            .header(axum::http::header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::from(body))
            .map_err(|e| AppError::BadRequest(format!("invalid multipart request: {e}")))?;
        let mut multipart =
            <Multipart as axum::extract::FromRequest<()>>::from_request(request, &())
                .await
                .map_err(|e| {
                    AppError::BadRequest(format!("invalid multipart request: {}", e.body_text()))
                })?;
        while let Some(field) = multipart.next_field().await.map_err(|e| {
            AppError::BadRequest(format!("invalid multipart request: {}", e.body_text()))
        })? {
            let Some(name) = field.file_name().map(str::to_string) else {
                continue;
            };
            let bytes = field.bytes().await.map_err(|e| {
                AppError::BadRequest(format!("could not read {name}: {}", e.body_text()))
            })?;
            files.push((name, bytes));
        }
    } else {
        let name = query.name.ok_or_else(|| {
            AppError::BadRequest(
                "give ?name=FILE.ext for a raw upload, or use multipart/form-data".into(),
            )
        })?;
        files.push((name, body));
    }
    if files.is_empty() {
        return Err(AppError::BadRequest("no file in the request".into()));
    }
    // Validate every name before ingesting anything, so a bad batch changes nothing.
    let mut named = Vec::with_capacity(files.len());
    for (name, bytes) in files {
        named.push((upload_source(&name)?, bytes));
    }
    let outcomes = state.add_documents(named).await?;
    Ok((StatusCode::CREATED, Json(outcomes)))
}

/// `upload/NAME` for an uploaded file name; path components are refused, not silently stripped.
fn upload_source(name: &str) -> Result<String, AppError> {
    let name = name.trim();
    if name.is_empty()
        || name.len() > 200
        || name.contains(['/', '\\'])
        || name.starts_with('.')
        || name.contains('\0')
    {
        return Err(AppError::BadRequest(format!(
            "invalid file name {name:?}: use a plain name such as refunds.md"
        )));
    }
    Ok(format!("{UPLOAD_PREFIX}{name}"))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/documents/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "document id or source")),
    responses((status = 204, description = "removed"), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 404, description = "no such document", body = ErrorBody)),
    security(("admin_key" = []))
)]
pub async fn delete_document(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    if state.remove_document(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound(format!("document {id} not found")))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    pub q: String,
    pub limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/knowledge/search",
    tag = "admin",
    params(SearchQuery),
    responses((status = 200, description = "top chunks with scores", body = Vec<KnowledgeRef>), (status = 400, description = "malformed body or bad field", body = ErrorBody), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody)),
    security(("admin_key" = []))
)]
pub async fn search_knowledge(
    _admin: Admin,
    State(state): State<AppState>,
    Query(query): Query<SearchQuery>,
) -> Result<Json<Vec<KnowledgeRef>>, AppError> {
    let text = validate::message_text(&query.q, state.settings.server.max_message_chars)?;
    let embedding =
        state.engine.encoder().embed(text).await.map_err(|e| {
            AppError::Unavailable(format!("the language model is unavailable: {e}"))
        })?;
    let limit = query.limit.unwrap_or(5).clamp(1, 50);
    let hits = state
        .engine
        .retriever()
        .search_top(text, &embedding, limit)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(Json(
        hits.iter()
            .map(|hit| KnowledgeRef {
                chunk_id: hit.chunk.id.clone(),
                document_id: hit.chunk.document_id.clone(),
                title: hit.chunk.title.clone(),
                heading_path: hit.chunk.heading_path.clone(),
                score: hit.score,
                keyword_score: hit.keyword_score,
                url: hit.chunk.url.clone(),
                source: hit.chunk.source.clone(),
            })
            .collect(),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/admin/knowledge/sync",
    tag = "admin",
    responses((status = 200, description = "what changed", body = SyncReport), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody)),
    security(("admin_key" = []))
)]
pub async fn sync_knowledge(
    _admin: Admin,
    State(state): State<AppState>,
) -> Result<Json<SyncReport>, AppError> {
    let folder = &state.settings.paths.knowledge;
    if !folder.is_dir() {
        return Err(AppError::NotFound(format!(
            "knowledge folder {} does not exist",
            folder.display()
        )));
    }
    Ok(Json(state.sync_knowledge_folder(folder).await?))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IntentsView {
    pub training: TrainingInfo,
    pub intents: Vec<IntentSpec>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/intents",
    tag = "admin",
    responses((status = 200, description = "the intents and the training figures", body = IntentsView), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody)),
    security(("admin_key" = []))
)]
pub async fn get_intents(_admin: Admin, State(state): State<AppState>) -> Json<IntentsView> {
    let recognizer = state.engine.intents();
    Json(IntentsView {
        training: recognizer.info().clone(),
        intents: recognizer.intents().intents.clone(),
    })
}

/// Retrain from the intents file on disk (after editing it) and switch to the new model.
#[utoipa::path(
    post,
    path = "/v1/admin/intents/train",
    tag = "admin",
    responses((status = 200, description = "the new model's figures", body = TrainingInfo), (status = 401, description = "no bearer token", body = ErrorBody), (status = 403, description = "wrong token", body = ErrorBody), (status = 422, description = "a file that cannot be parsed (names file and line)", body = ErrorBody)),
    security(("admin_key" = []))
)]
pub async fn train_intents(
    _admin: Admin,
    State(state): State<AppState>,
) -> Result<Json<TrainingInfo>, AppError> {
    Ok(Json(state.retrain_intents().await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_names_are_plain_file_names() {
        assert_eq!(upload_source("refunds.md").unwrap(), "upload/refunds.md");
        for bad in ["", "../etc/passwd", "a/b.md", ".hidden", "a\\b.md"] {
            assert!(upload_source(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
