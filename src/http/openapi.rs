//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and the
//! request and response types themselves, served at `GET /openapi.json`. A test checks it lists
//! exactly the endpoints docs/api.md describes.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::error::{ErrorBody, ErrorDetail};
use crate::http::{admin, agents, customer, ops};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Baton",
        description = "AI-first support bot with human handoff. Errors are `{\"error\": {\"code\", \"message\"}}`; the WebSocket protocol is in docs/protocol.md."
    ),
    paths(
        customer::create_conversation,
        customer::post_message,
        customer::get_conversation,
        agents::customer_socket,
        admin::understand,
        admin::list_documents,
        admin::upload_documents,
        admin::delete_document,
        admin::search_knowledge,
        admin::sync_knowledge,
        admin::get_intents,
        admin::train_intents,
        agents::list_agents,
        agents::create_agent,
        agents::login,
        agents::logout,
        agents::me,
        agents::agent_socket,
        agents::queue,
        agents::context,
        agents::assist,
        agents::claim,
        agents::assign,
        agents::transfer,
        agents::resolve,
        agents::hand_back,
        agents::agent_message,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        openapi_json,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerTokens)
)]
pub struct ApiDoc;

/// The three kinds of bearer token, named so each operation says which one it takes.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [
            (
                "conversation_token",
                "the token returned by POST /v1/conversations",
            ),
            ("agent_token", "the token returned by POST /v1/agents/login"),
            ("admin_key", "the server's admin_key setting"),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(what))
                        .build(),
                ),
            );
        }
    }
}

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    })
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    responses((status = 200, description = "this document"))
)]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_a_tag_and_every_error_response_the_error_body() {
        let document: serde_json::Value = serde_json::from_str(document()).unwrap();
        let paths = document["paths"].as_object().unwrap();
        assert!(paths.len() >= 25, "{}", paths.len());
        for (path, operations) in paths {
            for (method, operation) in operations.as_object().unwrap() {
                assert!(operation["tags"].is_array(), "{method} {path}");
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status.starts_with('4') {
                        assert_eq!(
                            response["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
        for schema in [
            "TurnResult",
            "Understanding",
            "ConversationContext",
            "ErrorBody",
        ] {
            assert!(
                document["components"]["schemas"][schema].is_object(),
                "{schema} is described"
            );
        }
    }
}
