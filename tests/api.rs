//! The HTTP API against the real server: real models, the demo knowledge base and intents, SQLite
//! (and PostgreSQL in one test), Qdrant Edge.

mod common;

use common::app::{spawn_app, spawn_with, test_settings, TestApp, ADMIN_KEY};
use serde_json::{json, Value};

fn reasons(body: &Value) -> Vec<String> {
    body["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn operations_endpoints_report_health_readiness_and_metrics() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert!(ready["knowledge_chunks"].as_u64().unwrap() > 100, "{ready}");
    assert!(ready["intents"].as_u64().unwrap() >= 20);

    let (id, token) = app.conversation().await;
    let (status, _) = app.say(&id, &token, "how do I reset my password").await;
    assert_eq!(status, 200);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("baton_decisions_total{decision="),
        "{metrics}"
    );
    assert!(metrics.contains("baton_inference_duration_seconds_bucket{stage=\"encoder\""));
    assert!(metrics.contains("baton_http_requests_total{method=\"POST\",route=\"/v1/conversations/{id}/messages\",status=\"200\"} 1"));
    assert!(metrics.contains("baton_encoder_texts_total"));
    // SQLite's writer: the conversation and the message took turns on it.
    let writes: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("baton_sqlite_writes_total "))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no baton_sqlite_writes_total in {metrics}"));
    assert!(writes >= 2, "{writes} writes");
    assert!(metrics.contains("baton_sqlite_writer_held_seconds_total "));
    assert!(metrics.contains("baton_sqlite_writer_wait_seconds_total "));
    app.stop().await;
}

#[tokio::test]
async fn knowledge_questions_are_answered_with_sources() {
    let app = spawn_app().await;
    let (id, token) = app.conversation().await;
    let (status, body) = app
        .say(
            &id,
            &token,
            "my thermostat won't connect to the wifi anymore",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "answer", "{body}");
    assert_eq!(reasons(&body), vec!["knowledge_match"]);
    let reply = &body["reply"];
    assert!(!reply["text"].as_str().unwrap().is_empty());
    let source = &reply["sources"][0];
    assert!(
        source["url"]
            .as_str()
            .unwrap()
            .starts_with("https://help.brightloop.example/"),
        "{body}"
    );
    assert!(source["score"].as_f64().unwrap() > 0.3);
    let understanding = &body["understanding"];
    assert_eq!(understanding["intent"]["name"], "device_offline");
    assert_eq!(understanding["out_of_scope"], false);
    assert!(understanding["knowledge"].as_array().unwrap().len() >= 3);
    assert!(body["reply_message_id"].as_i64().unwrap() > body["message_id"].as_i64().unwrap());
    app.stop().await;
}

#[tokio::test]
async fn each_handoff_reason_is_recorded_and_the_bot_then_stays_silent() {
    let app = spawn_app().await;

    let (id, token) = app.conversation().await;
    let (_, body) = app
        .say(&id, &token, "I want to talk to a real person please")
        .await;
    assert_eq!(body["decision"], "handoff", "{body}");
    assert_eq!(reasons(&body), vec!["explicit_request"]);
    assert_eq!(body["conversation_state"], "queued");
    assert!(body["reply"]["text"]
        .as_str()
        .unwrap()
        .contains("connecting you"));
    // A human owns the conversation now: the message is kept, the bot says nothing.
    let (_, body) = app.say(&id, &token, "hello? how do I get a refund").await;
    assert_eq!(body["decision"], "handoff");
    assert_eq!(reasons(&body), vec!["awaiting_human"]);
    assert!(body["reply"].is_null());
    let transcript = app.transcript(&id, &token).await;
    assert_eq!(transcript["state"], "queued");
    let roles = common::app::roles(&transcript);
    // Nobody is online in this test, so the customer is also told so (a system message).
    assert_eq!(roles, vec!["customer", "bot", "system", "customer"]);
    assert_eq!(transcript["messages"][2]["kind"], "offline");

    let (id, token) = app.conversation().await;
    let (_, body) = app
        .say(&id, &token, "cancel my brightloop plus subscription")
        .await;
    assert_eq!(reasons(&body), vec!["intent_requires_human"], "{body}");
    assert_eq!(body["handoff"]["skill"], "billing");

    let (id, token) = app.conversation().await;
    let (_, body) = app
        .say(&id, &token, "what's a good recipe for banana bread")
        .await;
    // Off-topic: first a request to rephrase, then (still off-topic) a person.
    assert_eq!(body["decision"], "clarify", "{body}");
    assert_eq!(reasons(&body), vec!["out_of_scope"]);
    let (_, body) = app
        .say(&id, &token, "who won the football last night")
        .await;
    assert_eq!(body["decision"], "handoff", "{body}");
    assert_eq!(reasons(&body)[0], "repeated_failure", "{body}");
    assert!(
        reasons(&body).contains(&"out_of_scope".to_string()),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn two_failed_turns_in_a_row_hand_off() {
    // With an answer bar no chunk can reach, every knowledge question is a clarify.
    let scratch = tempfile::tempdir().unwrap();
    let mut settings = test_settings(scratch.path());
    settings.policy.answer_min_score = 0.99;
    settings.policy.confident_intent = 1.01;
    settings.policy.clarify_min_score = 0.0;
    let app = spawn_with(settings).await;
    let (id, token) = app.conversation().await;
    let (_, first) = app.say(&id, &token, "how long does shipping take").await;
    assert_eq!(first["decision"], "clarify", "{first}");
    assert!(!first["reply"]["options"].as_array().unwrap().is_empty());
    let (_, second) = app.say(&id, &token, "delivery time to france?").await;
    assert_eq!(second["decision"], "handoff", "{second}");
    assert_eq!(reasons(&second)[0], "repeated_failure");
    app.stop().await;
}

#[tokio::test]
async fn small_talk_gets_the_fixed_reply() {
    let app = spawn_app().await;
    let (id, token) = app.conversation().await;
    let (_, body) = app.say(&id, &token, "hi there").await;
    assert_eq!(body["decision"], "answer", "{body}");
    assert_eq!(reasons(&body), vec!["small_talk"]);
    assert!(body["reply"]["sources"].as_array().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_repeated_client_message_id_returns_the_original_result() {
    let app = spawn_app().await;
    let (id, token) = app.conversation().await;
    let request = json!({ "text": "where is my order", "client_message_id": "c-1" });
    let (status, first) = app.say_json(&id, &token, request.clone()).await;
    assert_eq!(status, 200);
    // The retry carries different text: the stored message wins, nothing new is stored.
    let retry = json!({ "text": "something else entirely", "client_message_id": "c-1" });
    let (status, second) = app.say_json(&id, &token, retry).await;
    assert_eq!(status, 200);
    assert_eq!(first, second);
    let transcript = app.transcript(&id, &token).await;
    let messages = transcript["messages"].as_array().unwrap();
    assert_eq!(
        messages.iter().filter(|m| m["role"] == "customer").count(),
        1
    );
    assert_eq!(messages[0]["client_message_id"], "c-1");

    // Concurrent duplicates: one stored message, identical answers.
    let sends = (0..5).map(|_| {
        app.say_json(
            &id,
            &token,
            json!({ "text": "refund please", "client_message_id": "c-2" }),
        )
    });
    let results = futures::future::join_all(sends).await;
    for (status, body) in &results {
        assert_eq!(*status, 200);
        assert_eq!(body, &results[0].1);
    }
    let transcript = app.transcript(&id, &token).await;
    assert_eq!(
        transcript["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "customer")
            .count(),
        2
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_loses_nothing() {
    let app = spawn_app().await;
    let (id, token) = app.conversation().await;
    let url = app.url(&format!("/v1/conversations/{id}/messages"));

    let long = "a".repeat(4001);
    let (status, body) = app.say(&id, &token, &long).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "message_too_long");

    let response = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"text\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"),
        "{body}"
    );

    let (status, body) = app.say_json(&id, &token, json!({ "txt": "hi" })).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = app.say(&id, &token, "   ").await;
    assert_eq!(status, 400);

    let response = app
        .client
        .post(&url)
        .json(&json!({"text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let (status, _) = app.say(&id, "not-the-token", "hi").await;
    assert_eq!(status, 403);
    let (other_id, other_token) = app.conversation().await;
    let (status, _) = app.say(&id, &other_token, "hi").await;
    assert_eq!(status, 403, "another conversation's token is refused");
    let (status, body) = app
        .say("00000000-0000-0000-0000-000000000000", &token, "hi")
        .await;
    assert_eq!(status, 404, "{body}");

    // Nothing above reached the transcript; the conversation still works.
    let (status, _) = app.say(&id, &token, "how do I update my card").await;
    assert_eq!(status, 200);
    let transcript = app.transcript(&id, &token).await;
    assert_eq!(transcript["messages"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.transcript(&other_id, &other_token).await["messages"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_key() {
    let app = spawn_app().await;
    let understand = app.url("/v1/understand");
    let response = app
        .client
        .post(&understand)
        .json(&json!({"text": "refund"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .client
        .post(&understand)
        .bearer_auth("wrong-key-wrong-key")
        .json(&json!({"text": "refund"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let (_, token) = app.conversation().await;
    let response = app
        .client
        .get(app.url("/v1/admin/documents"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        403,
        "a customer token is not an admin key"
    );

    let response = app
        .client
        .post(&understand)
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"text": "I was charged twice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["intent"]["name"].is_string());
    assert!(body["timings"]["encoder_ms"].as_f64().unwrap() > 0.0);
    app.stop().await;
}

#[tokio::test]
async fn documents_can_be_uploaded_searched_and_deleted() {
    let app = spawn_app().await;
    let before = app
        .admin_get("/v1/admin/documents")
        .await
        .as_array()
        .unwrap()
        .len();
    let markdown = "---\ntitle: Gift cards\nurl: https://help.brightloop.example/billing/gift-cards\n---\n\n\
        ## Redeeming a gift card\n\nEnter the 16-character gift card code at checkout under Payment. \
        Gift cards never expire and can be combined with one promotional code.\n";
    let response = app.upload("gift-cards.md", markdown).await;
    assert_eq!(response.status(), 201);
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(outcome[0]["status"], "added");
    assert_eq!(outcome[0]["source"], "upload/gift-cards.md");
    let document_id = outcome[0]["document_id"].as_str().unwrap().to_string();

    // The same bytes again change nothing.
    let again = app.upload("gift-cards.md", markdown).await;
    let again: Value = again.json().await.unwrap();
    assert_eq!(again[0]["status"], "unchanged");

    let hits = app
        .admin_get("/v1/admin/knowledge/search?q=how%20do%20I%20redeem%20a%20gift%20card")
        .await;
    assert_eq!(hits[0]["document_id"], document_id.as_str(), "{hits}");
    assert_eq!(
        app.admin_get("/v1/admin/documents")
            .await
            .as_array()
            .unwrap()
            .len(),
        before + 1
    );

    // Multipart works too; a document that cannot be parsed is refused and changes nothing.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(
            b"question,answer\nDo you sell gift cards?,Yes - in the web shop.\n".to_vec(),
        )
        .file_name("gifts.faq.csv"),
    );
    let response = app
        .client
        .post(app.url("/v1/admin/documents"))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let broken = app
        .upload("broken.faq.yaml", "- question: no answer here\n")
        .await;
    assert_eq!(broken.status(), 422);
    let body: Value = broken.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broken.faq.yaml"),
        "{body}"
    );
    let bad_name = app.upload("../x.md", "# hi\n\ntext").await;
    assert_eq!(bad_name.status(), 400);
    assert_eq!(
        app.admin_get("/v1/admin/documents")
            .await
            .as_array()
            .unwrap()
            .len(),
        before + 2
    );

    let delete = app.url(&format!("/v1/admin/documents/{document_id}"));
    let response = app
        .client
        .delete(&delete)
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = app
        .client
        .delete(&delete)
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let hits = app
        .admin_get("/v1/admin/knowledge/search?q=redeem%20gift%20card%20code")
        .await;
    assert!(hits
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["document_id"] != document_id.as_str()));
    app.stop().await;
}

#[tokio::test]
async fn conversations_and_knowledge_survive_a_restart() {
    let scratch = tempfile::tempdir().unwrap();
    let app = spawn_with(test_settings(scratch.path())).await;
    let (id, token) = app.conversation().await;
    let (_, first) = app.say(&id, &token, "can I pay with paypal?").await;
    let chunks_before = app.admin_get("/v1/admin/documents").await;
    app.stop().await;

    let app = spawn_with(test_settings(scratch.path())).await;
    let transcript = app.transcript(&id, &token).await;
    let messages = transcript["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["text"], "can I pay with paypal?");
    assert_eq!(messages[0]["decision"], first["decision"]);
    assert_eq!(app.admin_get("/v1/admin/documents").await, chunks_before);
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total: i64 = chunks_before
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["chunk_count"].as_i64().unwrap())
        .sum();
    assert_eq!(ready["knowledge_chunks"].as_i64().unwrap(), total);
    app.stop().await;
}

#[tokio::test]
async fn the_same_api_runs_on_postgresql() {
    let database = common::pg::TestDatabase::create().await;
    let scratch = tempfile::tempdir().unwrap();
    let mut settings = test_settings(scratch.path());
    settings.database.url = Some(database.url().to_string());
    let app = spawn_with(settings).await;
    let (id, token) = app.conversation().await;
    let (status, body) = app
        .say_json(
            &id,
            &token,
            json!({"text": "how do I get an invoice", "client_message_id": "pg-1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, again) = app
        .say_json(
            &id,
            &token,
            json!({"text": "how do I get an invoice", "client_message_id": "pg-1"}),
        )
        .await;
    assert_eq!(body, again);
    assert_eq!(
        app.transcript(&id, &token).await["messages"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    app.stop().await;
}

#[tokio::test]
async fn listed_origins_may_call_the_customer_api_from_a_browser() {
    let scratch = tempfile::tempdir().unwrap();
    let mut settings = test_settings(scratch.path());
    settings.server.cors_origins = vec!["https://shop.example".into()];
    let app = spawn_with(settings).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/conversations"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://shop.example").await.unwrap();
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("https://shop.example")
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let created = app
        .client
        .post(app.url("/v1/conversations"))
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(
        created.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    app.stop().await;
}

/// Limits: requests per address (429 + Retry-After, health checks exempt), customer messages per
/// conversation over HTTP and WebSocket (refused messages are not stored), open sockets.
#[tokio::test]
async fn limits_refuse_with_429_and_retry_after_and_store_nothing_refused() {
    // Per address: a burst of four passes, then requests wait about a second.
    let scratch = tempfile::tempdir().unwrap();
    let mut settings = test_settings(scratch.path());
    settings.limits.requests_per_ip_per_second = 1;
    settings.limits.requests_per_ip_burst = 4;
    let mut app = spawn_with(settings).await;
    app.own_dir(scratch);
    let mut statuses = Vec::new();
    let refused = loop {
        let response = app
            .client
            .post(app.url("/v1/conversations"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() != 201 || statuses.len() == 10 {
            break response;
        }
    };
    assert_eq!(refused.status(), 429, "{statuses:?}");
    assert!(
        statuses.len() >= 5,
        "the burst of four passes: {statuses:?}"
    );
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "health checks are not limited");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let after_waiting = app
        .client
        .post(app.url("/v1/conversations"))
        .send()
        .await
        .unwrap();
    assert_eq!(after_waiting.status(), 201, "Retry-After was long enough");
    app.stop().await;

    // Per conversation and per socket pool.
    let scratch = tempfile::tempdir().unwrap();
    let mut settings = test_settings(scratch.path());
    settings.limits.messages_per_conversation_per_minute = 1;
    settings.limits.messages_per_conversation_burst = 2;
    settings.limits.max_customer_sockets = 1;
    let mut app = spawn_with(settings).await;
    app.own_dir(scratch);
    let (id, token) = app.conversation().await;
    let (status, _) = app.say(&id, &token, "hello").await;
    assert_eq!(status, 200);
    let (status, _) = app.say(&id, &token, "how do I reset my password").await;
    assert_eq!(status, 200);
    let (status, body) = app.say(&id, &token, "and my invoice?").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let mut socket =
        common::ws::WsClient::connect(&app.address, &format!("/v1/conversations/{id}/ws"), &token)
            .await;
    socket.until_type("hello").await;
    socket
        .send(json!({"type": "message", "text": "hello again", "client_message_id": "ws-1"}))
        .await;
    let error = socket.until_type("error").await;
    assert_eq!(error["code"], "rate_limited", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("retry in"),
        "{error}"
    );

    // The one socket place is taken: a second customer socket is refused before the upgrade.
    let second = tokio_tungstenite::connect_async(format!(
        "{}/v1/conversations/{id}/ws?token={token}",
        app.address.replacen("http://", "ws://", 1)
    ))
    .await;
    match second {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected 503, got {other:?}"),
    }
    drop(socket);

    // Nothing refused was stored: the transcript holds the two accepted customer messages.
    let transcript: Value = app
        .client
        .get(app.url(&format!("/v1/conversations/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let customer: Vec<&str> = transcript["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "customer")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        customer,
        ["hello", "how do I reset my password"],
        "{transcript}"
    );
    // The place comes back once the server has seen the socket close.
    let mut reconnected = None;
    for _ in 0..50 {
        let url = format!(
            "{}/v1/conversations/{id}/ws?token={token}",
            app.address.replacen("http://", "ws://", 1)
        );
        if let Ok((socket, _)) = tokio_tungstenite::connect_async(url).await {
            reconnected = Some(socket);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        reconnected.is_some(),
        "the socket place was never given back"
    );
    app.stop().await;
}

/// `GET /openapi.json` describes exactly the endpoints docs/api.md lists (method and path), and
/// each has its responses.
#[tokio::test]
async fn the_openapi_document_lists_exactly_the_documented_endpoints() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut served = std::collections::BTreeSet::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path} has responses"
            );
            served.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let docs = std::fs::read_to_string(common::app::repo().join("docs/api.md")).unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for method in ["GET", "POST", "DELETE", "PUT", "PATCH"] {
        for (at, _) in docs.match_indices(&format!("`{method} /")) {
            let rest = &docs[at + 1 + method.len() + 1..];
            let path: String = rest
                .chars()
                .take_while(|c| !matches!(c, '`' | ' ' | '?' | ','))
                .collect();
            documented.insert(format!("{method} {path}"));
        }
    }
    assert_eq!(served, documented);
    app.stop().await;
}

/// `POST /v1/understand` with the admin key; the reading, after checking it was given.
async fn understand(app: &TestApp, text: &str) -> Value {
    let response = app
        .client
        .post(app.url("/v1/understand"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()
}

/// The demo's classifier is small enough to run on the encoder thread beside the knowledge
/// search; an intents file too large for that (more multiply-adds than `cpu::INLINE_BUDGET_*`)
/// classifies on the blocking pool beside the search instead. Both read messages alike.
#[tokio::test]
async fn small_and_large_intents_files_both_classify_beside_the_search() {
    let app = spawn_app().await;
    assert!(app.state.engine.intents().classifies_inline());
    let order = understand(&app, "where is my order??").await;
    assert_eq!(order["intent"]["name"], "order_status", "{order}");
    assert!(
        order["timings"]["intent_ms"].as_f64().unwrap() > 0.0,
        "{order}"
    );
    assert_eq!(order["knowledge"][0]["source"], "faq.yaml", "{order}");
    app.stop().await;

    let scratch = tempfile::tempdir().unwrap();
    let demo = std::fs::read_to_string(common::app::repo().join("knowledge/intents.yaml")).unwrap();
    let stock_examples: Vec<String> = (0..700)
        .map(|i| format!("      - \"is catalogue item number {i} in stock\""))
        .collect();
    let large = demo.replacen(
        "intents:\n",
        &format!(
            "intents:\n  - name: stock_question\n    examples:\n{}\n",
            stock_examples.join("\n")
        ),
        1,
    );
    let intents = scratch.path().join("intents.yaml");
    std::fs::write(&intents, large).unwrap();
    let data = scratch.path().join("data");
    let mut settings = test_settings(&data);
    settings.intents.file = intents;
    let app = spawn_with(settings).await;
    assert!(!app.state.engine.intents().classifies_inline());
    let order = understand(&app, "where is my order??").await;
    assert_eq!(order["intent"]["name"], "order_status", "{order}");
    assert_eq!(order["knowledge"][0]["source"], "faq.yaml", "{order}");
    let stock = understand(&app, "is catalogue item number 9000 in stock").await;
    assert_eq!(stock["intent"]["name"], "stock_question", "{stock}");
    app.stop().await;
}

/// A question asking how to do something finds the section written as numbered steps first,
/// although a short section sharing its words ("Put a Sensor back in pairing mode") scores as
/// high; a question that asks for no procedure keeps the plain ranking.
#[tokio::test]
async fn a_question_asking_for_steps_gets_the_numbered_procedure_first() {
    let app = spawn_app().await;
    let top_heading = |text: &'static str| {
        let app = &app;
        async move { understand(app, text).await["knowledge"][0]["heading_path"].clone() }
    };
    assert_eq!(
        top_heading("what are the steps to pair a sensor").await,
        json!(["Pair a new Sensor"])
    );
    assert_eq!(
        top_heading("how do I pair a new sensor?").await,
        json!(["Pair a new Sensor"])
    );
    assert_eq!(
        top_heading("my sensor stopped flashing blue").await,
        json!(["Put a Sensor back in pairing mode"])
    );
    app.stop().await;
}

/// Misspelt words are read as the business's words; a question that turns on something the
/// business never mentions goes to a person (`not_covered`), until the knowledge base mentions it.
#[tokio::test]
async fn typos_are_corrected_and_questions_about_unknown_things_go_to_a_person() {
    let app = spawn_app().await;
    let typo = understand(&app, "how do i chnage my pasword").await;
    assert_eq!(
        typo["corrected_query"], "how do i change my password",
        "{typo}"
    );
    assert_eq!(typo["intent"]["name"], "reset_password", "{typo}");
    assert_eq!(typo["out_of_scope"], false, "{typo}");
    // Correctly spelt messages are read as they are.
    let ask_about_alexa = || async {
        let (id, token) = app.conversation().await;
        app.say(
            &id,
            &token,
            "does the brightloop thermostat work with alexa?",
        )
        .await
    };
    let plain = understand(&app, "how do I reset my password?").await;
    assert!(plain.get("corrected_query").is_none(), "{plain}");
    assert!(plain.get("uncovered_terms").is_none(), "{plain}");

    let (status, turn) = ask_about_alexa().await;
    assert_eq!(status, 200);
    assert_eq!(turn["decision"], "handoff", "{turn}");
    assert_eq!(turn["reasons"], json!(["not_covered"]), "{turn}");
    assert_eq!(turn["understanding"]["uncovered_terms"], json!(["alexa"]));

    // Once the help centre covers it, the word is familiar and the question is answered.
    let markdown = "---\ntitle: Voice assistants\n---\n\n## Alexa\n\nThe Brightloop thermostat \
        works with Amazon Alexa: enable the Brightloop skill in the Alexa app and say \"Alexa, \
        set the heating to 20 degrees\".\n";
    let response = app.upload("voice-assistants.md", markdown).await;
    assert_eq!(response.status(), 201);
    let (status, turn) = ask_about_alexa().await;
    assert_eq!(status, 200);
    assert_eq!(turn["decision"], "answer", "{turn}");
    assert!(
        turn["understanding"].get("uncovered_terms").is_none(),
        "{turn}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_a_person_in_one_sentence_of_a_longer_message_is_heard() {
    let app = spawn_app().await;
    let (id, token) = app.conversation().await;
    let (status, turn) = app
        .say(
            &id,
            &token,
            "I've tried restarting it twice and reset the hub, the light is still red. Can I \
             speak to someone?",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(turn["decision"], "handoff", "{turn}");
    assert_eq!(turn["reasons"], json!(["explicit_request"]), "{turn}");
    assert_eq!(turn["understanding"]["intent"]["name"], "human_agent");
    assert_eq!(
        turn["understanding"]["person_requested_in"], "Can I speak to someone?",
        "{turn}"
    );

    // One sentence is read whole, as before; a message of several that asks for nothing keeps
    // its own reading.
    let (id, token) = app.conversation().await;
    let (_, turn) = app
        .say(&id, &token, "My sensor battery is low. How do I change it?")
        .await;
    assert!(
        turn["understanding"].get("person_requested_in").is_none(),
        "{turn}"
    );
    assert_ne!(turn["decision"], "handoff", "{turn}");

    // Sure together: this sentence reads 0.72 complaint and 0.18 request for a person, both
    // intents that go to a person, though neither alone reaches `policy.confident_intent`.
    let (id, token) = app.conversation().await;
    let (_, turn) = app
        .say(
            &id,
            &token,
            "i've done all of that already, it's still offline. can someone from your team look \
             into this?",
        )
        .await;
    assert_eq!(turn["decision"], "handoff", "{turn}");
    assert_eq!(
        turn["understanding"]["person_requested_in"], "can someone from your team look into this?",
        "{turn}"
    );

    // The same holds for an intent that always goes to a person: read whole, this message is
    // about heating (thermostat_not_heating, 0.56); its second sentence is a fraud report.
    let (id, token) = app.conversation().await;
    let (_, turn) = app
        .say(
            &id,
            &token,
            "The heating works fine now, thanks. There's a payment on my card I never made though.",
        )
        .await;
    assert_eq!(turn["decision"], "handoff", "{turn}");
    assert_eq!(turn["reasons"], json!(["intent_requires_human"]), "{turn}");
    assert_eq!(
        turn["understanding"]["intent"]["name"], "unauthorized_charge",
        "{turn}"
    );
    assert_eq!(
        turn["understanding"]["person_requested_in"],
        "There's a payment on my card I never made though.",
        "{turn}"
    );
    app.stop().await;
}
