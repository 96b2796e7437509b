//! Security against the real server: a conversation's token opens only that conversation (HTTP
//! and WebSocket), an agent cannot act on another agent's conversation, expired and logged-out
//! agent tokens are refused, every admin endpoint needs the admin key, and upload names cannot
//! reach outside the knowledge base. (Markup in messages is checked in the browser, tests/e2e.)

mod common;

use std::time::Duration;

use common::app::ADMIN_KEY;
use common::human::{human_side, is_assigned};
use common::ws::WsClient;
use serde_json::{json, Value};

#[tokio::test]
async fn a_conversation_token_opens_only_its_own_conversation() {
    let human = human_side(|_| {}).await;
    let app = &human.app;
    let (mine, my_token) = app.conversation().await;
    let (theirs, their_token) = app.conversation().await;
    let (status, _) = app
        .say(&theirs, &their_token, "my order 1182 is late")
        .await;
    assert_eq!(status, 200);
    let (_, agent_token) = human.agent("alice", &["*"], 3).await;

    // HTTP: read, write, and the agent-side routes.
    let read = |id: &str, token: &str| {
        app.client
            .get(app.url(&format!("/v1/conversations/{id}")))
            .bearer_auth(token.to_string())
            .send()
    };
    assert_eq!(read(&theirs, &my_token).await.unwrap().status(), 403);
    assert_eq!(read(&theirs, &agent_token).await.unwrap().status(), 403);
    assert_eq!(read(&mine, &my_token).await.unwrap().status(), 200);
    let (status, _) = app.say(&theirs, &my_token, "let me in").await;
    assert_eq!(status, 403);
    for path in ["context", "claim", "resolve", "hand-back"] {
        let url = app.url(&format!("/v1/conversations/{theirs}/{path}"));
        let status = if path == "context" {
            app.client.get(url).bearer_auth(&my_token).send().await
        } else {
            app.client
                .post(url)
                .bearer_auth(&my_token)
                .json(&json!({}))
                .send()
                .await
        }
        .unwrap()
        .status();
        assert_eq!(status, 403, "a customer token on {path}");
    }

    // WebSocket: another conversation's token, an agent token, no token, a made-up token.
    let theirs_ws = format!("/v1/conversations/{theirs}/ws");
    assert_eq!(
        WsClient::refused(&app.address, &theirs_ws, &my_token).await,
        403
    );
    assert_eq!(
        WsClient::refused(&app.address, &theirs_ws, &agent_token).await,
        403
    );
    assert_eq!(WsClient::refused(&app.address, &theirs_ws, "").await, 401);
    assert_eq!(
        WsClient::refused(&app.address, &theirs_ws, &"0".repeat(64)).await,
        403
    );
    // A customer token does not open the agent socket.
    assert_eq!(
        WsClient::refused(&app.address, "/v1/agents/ws", &my_token).await,
        403
    );

    // Their conversation holds only what they wrote and the bot's reply.
    let transcript = app.transcript(&theirs, &their_token).await;
    let texts: Vec<&str> = transcript["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "customer")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["my order 1182 is late"]);
    human.app.stop().await;
}

#[tokio::test]
async fn an_agent_cannot_act_on_another_agents_conversation() {
    let human = human_side(|_| {}).await;
    let (_, alice_token) = human.agent("alice", &["*"], 3).await;
    let (_, bob_token) = human.agent("bob", &["*"], 3).await;
    let (id, customer_token) = human.handed_off("I want to talk to a person").await;
    assert_eq!(
        human
            .post(
                format!("/v1/conversations/{id}/claim"),
                &alice_token,
                json!({})
            )
            .await,
        204
    );

    // Over HTTP: writing, resolving, transferring, handing back, claiming it away.
    let attempts = [
        ("agent-messages", json!({ "text": "Bob here, not Alice" })),
        ("resolve", json!({})),
        ("hand-back", json!({})),
        ("transfer", json!({ "to_skill": "billing" })),
        ("claim", json!({})),
    ];
    for (path, body) in attempts {
        let status = human
            .post(format!("/v1/conversations/{id}/{path}"), &bob_token, body)
            .await;
        assert!(
            status == 403 || status == 409,
            "bob on alice's conversation: {path} answered {status}"
        );
    }

    // Over his socket: every command on it gets an error frame, nothing happens.
    let mut bob = human.agent_socket(&bob_token).await;
    let commands = [
        json!({"type": "message", "conversation_id": id, "text": "Bob again"}),
        json!({"type": "note", "conversation_id": id, "text": "a note from bob"}),
        json!({"type": "resolve", "conversation_id": id}),
        json!({"type": "hand_back", "conversation_id": id}),
        json!({"type": "transfer", "conversation_id": id, "to_skill": "billing"}),
        json!({"type": "typing", "conversation_id": id, "on": true}),
    ];
    for command in &commands {
        bob.send(command.clone()).await;
    }
    let mut errors = 0;
    for _ in 0..commands.len() {
        let frame = bob.until_type("error").await;
        assert_eq!(frame["conversation_id"], id.as_str(), "{frame}");
        errors += 1;
    }
    assert_eq!(errors, commands.len());
    assert!(
        !bob.seen.iter().any(is_assigned(&id)),
        "bob was never given the conversation"
    );

    // Alice still holds it; the customer saw none of Bob's words.
    let store = human.app.state.handoff.handoff_store();
    let agents = store.list_agents().await.unwrap();
    let alice = agents.iter().find(|a| a.name == "alice").unwrap();
    let bob_record = agents.iter().find(|a| a.name == "bob").unwrap();
    assert_eq!(alice.active, 1);
    assert_eq!(bob_record.active, 0);
    let transcript = human.app.transcript(&id, &customer_token).await;
    let everything = transcript.to_string();
    assert!(!everything.contains("Bob"), "{everything}");
    assert_eq!(transcript["state"], "assigned", "{transcript}");
    human.app.stop().await;
}

#[tokio::test]
async fn expired_and_logged_out_agent_tokens_are_refused() {
    let human = human_side(|s| s.handoff.token_ttl_hours = 1).await;
    let (_, old_token) = human.agent("alice", &["*"], 3).await;
    let me = |token: String| {
        human
            .app
            .client
            .get(human.app.url("/v1/agents/me"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(me(old_token.clone()).await.unwrap().status(), 200);

    // Logged out: refused at once, over HTTP and WebSocket.
    let response = human
        .app
        .client
        .post(human.app.url("/v1/agents/logout"))
        .bearer_auth(&old_token)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(me(old_token.clone()).await.unwrap().status(), 403);
    assert_eq!(
        WsClient::refused(&human.app.address, "/v1/agents/ws", &old_token).await,
        403
    );

    // Expired: a fresh login works for its hour, then stops working everywhere.
    let login: Value = human
        .app
        .client
        .post(human.app.url("/v1/agents/login"))
        .json(&json!({ "name": "alice", "password": "s3cret-passw0rd" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    assert_eq!(me(token.clone()).await.unwrap().status(), 200);
    human.clock.advance(Duration::from_secs(3_601));
    assert_eq!(me(token.clone()).await.unwrap().status(), 403);
    assert_eq!(
        WsClient::refused(&human.app.address, "/v1/agents/ws", &token).await,
        403
    );
    let queue = human
        .app
        .client
        .get(human.app.url("/v1/queue"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(queue.status(), 403, "the queue with an expired token");

    // A wrong password and an unknown name are refused alike.
    for (name, password) in [("alice", "wrong-password"), ("mallory", "s3cret-passw0rd")] {
        let response = human
            .app
            .client
            .post(human.app.url("/v1/agents/login"))
            .json(&json!({ "name": name, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["message"], "wrong name or password");
    }
    human.app.stop().await;
}

#[tokio::test]
async fn every_admin_endpoint_needs_the_admin_key() {
    let human = human_side(|_| {}).await;
    let app = &human.app;
    let (_, customer_token) = app.conversation().await;
    let (_, agent_token) = human.agent("alice", &["*"], 3).await;
    let endpoints: [(&str, &str, Value); 10] = [
        ("POST", "/v1/understand", json!({"text": "refund"})),
        ("GET", "/v1/admin/documents", Value::Null),
        ("POST", "/v1/admin/documents?name=a.md", Value::Null),
        ("DELETE", "/v1/admin/documents/faq:1", Value::Null),
        ("GET", "/v1/admin/knowledge/search?q=refund", Value::Null),
        ("POST", "/v1/admin/knowledge/sync", json!({})),
        ("GET", "/v1/admin/intents", Value::Null),
        ("POST", "/v1/admin/intents/train", json!({})),
        ("GET", "/v1/admin/agents", Value::Null),
        (
            "POST",
            "/v1/admin/agents",
            json!({"name": "eve", "password": "eve-password-1"}),
        ),
    ];
    for (method, path, body) in &endpoints {
        for (who, token, expected) in [
            ("nobody", None, 401),
            ("a wrong key", Some("wrong-key-wrong-key"), 403),
            ("a customer", Some(customer_token.as_str()), 403),
            ("an agent", Some(agent_token.as_str()), 403),
        ] {
            let mut request = app.client.request(method.parse().unwrap(), app.url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if !body.is_null() {
                request = request.json(body);
            } else if *method == "POST" {
                request = request.body("# A\n\ntext");
            }
            let status = request.send().await.unwrap().status().as_u16();
            assert_eq!(status, expected, "{method} {path} with {who}");
        }
    }
    // Nothing was created by the refused calls.
    let agents = app.admin_get("/v1/admin/agents").await;
    let names: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice"]);
    human.app.stop().await;
}

#[tokio::test]
async fn upload_names_cannot_reach_outside_the_knowledge_base() {
    let human = human_side(|_| {}).await;
    let app = &human.app;
    let before = app.admin_get("/v1/admin/documents").await;
    let tricks = [
        "../evil.md",
        "../../evil.md",
        "/etc/evil.md",
        "sub/evil.md",
        "..\\evil.md",
        "C:\\evil.md",
        ".evil.md",
        "..",
        "evil.md\0.txt",
    ];
    for name in tricks {
        // As a raw upload (name in the query, percent-encoded) ...
        let response = app
            .client
            .post(app.url("/v1/admin/documents"))
            .query(&[("name", name)])
            .bearer_auth(ADMIN_KEY)
            .body("# Evil\n\nThis should never be stored.")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "raw upload named {name:?}");
        // ... and as a multipart file name.
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"# Evil\n\nThis should never be stored.".to_vec())
                .file_name(name.to_string()),
        );
        let response = app
            .client
            .post(app.url("/v1/admin/documents"))
            .bearer_auth(ADMIN_KEY)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "multipart upload named {name:?}");
    }
    // One bad name in a batch refuses the whole batch.
    let form = reqwest::multipart::Form::new()
        .part(
            "a",
            reqwest::multipart::Part::bytes(b"# Fine\n\nA fine document.".to_vec())
                .file_name("fine.md"),
        )
        .part(
            "b",
            reqwest::multipart::Part::bytes(b"# Evil\n\nNo.".to_vec()).file_name("../evil.md"),
        );
    let response = app
        .client
        .post(app.url("/v1/admin/documents"))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        app.admin_get("/v1/admin/documents").await,
        before,
        "no document was added"
    );

    // Nothing was written next to or above the data directory.
    let parent = app.data_dir.parent().unwrap();
    for dir in [parent, app.data_dir.as_path()] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(
                !name.to_string_lossy().contains("evil"),
                "{name:?} in {dir:?}"
            );
        }
    }
    human.app.stop().await;
}

/// Counts panics anywhere in this test binary (the server runs in-process): a handler that
/// panics drops its request or socket, which the client might not notice.
fn count_panics() -> &'static std::sync::atomic::AtomicUsize {
    static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            previous(info);
        }));
    });
    &PANICS
}

/// A valid sample with a few random byte edits (the same kinds as the unit property tests).
fn mangle(rng: &mut impl rand::Rng, sample: &str) -> Vec<u8> {
    let mut bytes = sample.as_bytes().to_vec();
    const SPECIAL: &[u8] = b"\"'{}[]:,\\\n\t 0-9e.\x00\xff\xc3";
    for _ in 0..rng.gen_range(1..5) {
        let at = rng.gen_range(0..=bytes.len());
        match rng.gen_range(0..5) {
            0 if at < bytes.len() => bytes[at] = SPECIAL[rng.gen_range(0..SPECIAL.len())],
            1 => bytes.insert(at, SPECIAL[rng.gen_range(0..SPECIAL.len())]),
            2 if at < bytes.len() => {
                let end = (at + rng.gen_range(1..16)).min(bytes.len());
                bytes.drain(at..end);
            }
            3 => bytes.truncate(at),
            _ => {
                let end = (at + rng.gen_range(1..32)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
        }
    }
    bytes
}

#[tokio::test]
async fn thousands_of_malformed_frames_and_bodies_break_nothing_and_lose_nothing() {
    use rand::{Rng, SeedableRng};
    let panics = count_panics();
    let panics_before = panics.load(std::sync::atomic::Ordering::SeqCst);
    let human = human_side(|s| s.limits.messages_per_conversation_per_minute = 0).await;
    let (_, agent_token) = human.agent("alice", &["*"], 3).await;
    let mut agent = human.agent_socket(&agent_token).await;
    let (id, token) = human.handed_off("I want to talk to a person").await;
    agent.until(is_assigned(&id)).await;
    let mut customer = human.customer_socket(&id, &token).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let mut acknowledged = std::collections::BTreeSet::new();
    let mut sent = 0usize;
    let started = std::time::Instant::now();

    // Customer socket: 2,000 mangled frames (text and binary), and after every 50 a valid
    // message that must be acknowledged.
    let samples = [
        r#"{"type":"message","text":"where is my parcel?","client_message_id":"m-1"}"#,
        r#"{"type":"resume","after":0}"#,
        r#"{"type":"typing","on":true}"#,
        r#"{"type":"rate","score":5,"comment":"ok"}"#,
        r#"{"type":"ping"}"#,
    ];
    for round in 0..40 {
        for _ in 0..50 {
            let sample = samples[rng.gen_range(0..samples.len())];
            let bytes = mangle(&mut rng, sample);
            match String::from_utf8(bytes) {
                Ok(text) => customer.send_text(text).await,
                Err(err) => customer.send_binary(err.into_bytes()).await,
            }
            sent += 1;
        }
        let client_id = format!("valid-{round}");
        customer
            .send(json!({"type": "message", "text": format!("valid message {round}"), "client_message_id": client_id}))
            .await;
        let ack = customer
            .until(|f| f["type"] == "ack" && f["client_message_id"] == client_id.as_str())
            .await;
        assert!(ack["message_id"].as_i64().is_some(), "{ack}");
    }
    acknowledged.extend(
        customer
            .seen
            .iter()
            .filter(|f| f["type"] == "ack")
            .map(|f| f["message_id"].as_i64().unwrap()),
    );

    eprintln!("customer frames done at {:?}", started.elapsed());
    // Agent socket: 500 mangled commands about a conversation that does not exist, then a ping.
    let agent_samples = [
        r#"{"type":"message","conversation_id":"5b8e","text":"hello","client_message_id":"a-1"}"#,
        r#"{"type":"transfer","conversation_id":"5b8e","to_skill":"billing","note":"over"}"#,
        r#"{"type":"sync","conversation_id":"5b8e","after":0}"#,
        r#"{"type":"claim","conversation_id":"5b8e"}"#,
    ];
    for _ in 0..500 {
        let sample = agent_samples[rng.gen_range(0..agent_samples.len())];
        let bytes = mangle(&mut rng, sample);
        match String::from_utf8(bytes) {
            Ok(text) => agent.send_text(text).await,
            Err(err) => agent.send_binary(err.into_bytes()).await,
        }
        sent += 1;
    }
    agent.send(json!({"type": "ping"})).await;
    agent.until_type("pong").await;

    eprintln!("agent frames done at {:?}", started.elapsed());
    // HTTP: 1,500 mangled bodies at the customer, login and admin endpoints.
    let message_url = human.app.url(&format!("/v1/conversations/{id}/messages"));
    let bodies: [(&str, &str, Option<&str>); 3] = [
        (
            message_url.as_str(),
            r#"{"text":"is anyone there?","client_message_id":"h-1"}"#,
            Some(token.as_str()),
        ),
        (
            "/v1/agents/login",
            r#"{"name":"alice","password":"s3cret-passw0rd"}"#,
            None,
        ),
        (
            "/v1/admin/agents",
            r#"{"name":"eve","password":"eve-password-1","skills":["billing"],"capacity":2}"#,
            Some(ADMIN_KEY),
        ),
    ];
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..1_500 {
        // Mostly messages; logins and agent creation hash passwords, which costs time.
        let which = match rng.gen_range(0..20) {
            0..=13 => 0,
            14..=16 => 1,
            _ => 2,
        };
        let (path, sample, bearer) = bodies[which];
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            human.app.url(path)
        };
        let content_type = [
            "application/json",
            "text/plain",
            "application/json; charset=latin1",
        ][rng.gen_range(0..3)];
        let mut request = human
            .app
            .client
            .post(url)
            .header("content-type", content_type)
            .body(mangle(&mut rng, sample));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let response = request
            .send()
            .await
            .expect("the server answers every request");
        let status = response.status().as_u16();
        *statuses.entry(status).or_default() += 1;
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status < 500, "{status}: {body}");
        if status != 200 && status != 201 && status != 204 {
            assert!(
                body["error"]["code"].is_string(),
                "an error body names its code: {body}"
            );
        }
        if path.starts_with("http") && status == 200 {
            acknowledged.insert(body["message_id"].as_i64().unwrap());
        }
        sent += 1;
    }
    eprintln!(
        "HTTP statuses for mangled bodies: {statuses:?} (done at {:?})",
        started.elapsed()
    );

    // Every acknowledged customer message is in the transcript once, and nothing else is.
    let transcript = human.app.transcript(&id, &token).await;
    let stored: Vec<i64> = transcript["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "customer")
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    let first = stored[0];
    let unique: std::collections::BTreeSet<i64> = stored.iter().copied().collect();
    assert_eq!(unique.len(), stored.len(), "no message stored twice");
    let after_handoff: std::collections::BTreeSet<i64> =
        unique.into_iter().filter(|id| *id != first).collect();
    assert_eq!(after_handoff, acknowledged, "stored == acknowledged");
    for round in 0..40 {
        let text = format!("valid message {round}");
        assert_eq!(
            transcript["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["text"] == text.as_str())
                .count(),
            1,
            "{text}"
        );
    }
    // The agent got every customer message, and the server is still healthy.
    let delivered = agent
        .drain_for(Duration::from_millis(300))
        .await
        .into_iter()
        .chain(agent.seen.clone())
        .filter(|f| f["type"] == "message" && f["message"]["role"] == "customer")
        .count();
    assert!(delivered >= 40, "{delivered}");
    let health = human
        .app
        .client
        .get(human.app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        panics.load(std::sync::atomic::Ordering::SeqCst) - panics_before,
        0,
        "no panic while handling {sent} malformed inputs"
    );
    human.app.stop().await;
}
