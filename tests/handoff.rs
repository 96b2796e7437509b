//! The human side against the real server over real WebSockets: handoff, assignment, messages
//! both ways, resolve, capacity, priority, racing claims, reassignment on silence and on
//! disconnect, resume after reconnect, restart, hand back, offline form, notes and transfer, slow
//! clients, offer mode and webhooks. Time moves through a manual clock and explicit sweeps, never
//! sleeps.

mod common;

use std::sync::Arc;
use std::time::Duration;

use baton::config::{AssignmentMode, Settings, WebhookTarget};
use baton::handoff::clock::ManualClock;
use common::app::{spawn_with_clock, test_settings};
use common::human::{human_side, is_assigned, Human};
use common::ws::{Closed, WsClient};
use serde_json::{json, Value};

#[tokio::test]
async fn handoff_assignment_messages_both_ways_resolve_and_rating() {
    let human = human_side(|_| {}).await;
    let (_, maya_token) = human.agent("maya", &["general", "billing"], 3).await;
    let mut maya = human.agent_socket(&maya_token).await;

    let (id, token) = human
        .handed_off("I want to talk to a real person please")
        .await;
    let assigned = maya.until(is_assigned(&id)).await;
    let context = &assigned["conversation"];
    assert_eq!(context["reasons"], json!(["explicit_request"]));
    assert_eq!(context["intent"]["name"], "human_agent");
    assert!(
        context["summary"].as_str().unwrap().contains("real person"),
        "{context}"
    );
    let transcript = context["transcript"].as_array().unwrap();
    assert_eq!(
        transcript[0]["text"],
        "I want to talk to a real person please"
    );
    assert!(transcript.iter().any(|m| m["role"] == "bot"));

    let mut customer = human.customer_socket(&id, &token).await;
    let joined = customer
        .until_message(|m| m["kind"] == "agent_joined")
        .await;
    assert_eq!(joined["author"], "Maya");

    maya.send(
        json!({"type": "message", "conversation_id": id, "text": "Hi, Maya here. How can I help?"}),
    )
    .await;
    let from_agent = customer.until_message(|m| m["role"] == "agent").await;
    assert_eq!(from_agent["text"], "Hi, Maya here. How can I help?");
    assert_eq!(from_agent["author"], "Maya");

    // The customer writes; the agent gets it and the bot stays silent.
    customer
        .send(json!({"type": "message", "text": "how do I get a refund?", "client_message_id": "w-1"}))
        .await;
    customer
        .until(|f| f["type"] == "ack" && f["client_message_id"] == "w-1")
        .await;
    let at_agent = maya
        .until(|f| f["type"] == "message" && f["message"]["role"] == "customer")
        .await;
    assert_eq!(at_agent["message"]["text"], "how do I get a refund?");
    let later = customer.drain_for(Duration::from_millis(300)).await;
    assert!(
        later.iter().all(|f| f["message"]["role"] != "bot"),
        "the bot spoke while a human owned the conversation: {later:#?}"
    );

    maya.send(json!({"type": "resolve", "conversation_id": id}))
        .await;
    maya.until(|f| f["type"] == "unassigned" && f["reason"] == "resolved")
        .await;
    // The system message and the state frame may come in either order.
    customer
        .until_all(&[
            &|f: &Value| f["type"] == "message" && f["message"]["kind"] == "resolved",
            &|f: &Value| f["type"] == "state" && f["state"] == "resolved",
        ])
        .await;
    customer
        .send(json!({"type": "rate", "score": 5, "comment": "quick and kind"}))
        .await;
    let rated = maya.until_type("rated").await;
    assert_eq!(rated["score"], 5);

    let transcript = human.app.transcript(&id, &token).await;
    assert_eq!(transcript["state"], "resolved");
    human.app.stop().await;
}

#[tokio::test]
async fn capacity_is_respected_and_the_queue_drains_by_itself() {
    let human = human_side(|_| {}).await;
    let (_, token) = human.agent("sam", &["*"], 1).await;
    let mut sam = human.agent_socket(&token).await;
    let (first, _) = human.handed_off("let me speak to a human").await;
    sam.until(is_assigned(&first)).await;
    let (second, second_token) = human.handed_off("agent please").await;

    // Sam is full: the second waits, and its customer sees their place in the queue.
    let mut waiting = human.customer_socket(&second, &second_token).await;
    human.app.state.handoff.dispatch().await.unwrap();
    let queue = waiting.until_type("queue").await;
    assert_eq!(queue["position"], 1);
    assert_eq!(queue["agents_online"], 1);
    let handoff = human
        .app
        .state
        .handoff
        .handoff_store()
        .get_handoff(&second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handoff.state.as_str(), "queued");

    sam.send(json!({"type": "resolve", "conversation_id": first}))
        .await;
    sam.until(is_assigned(&second)).await;
    waiting.until_message(|m| m["kind"] == "agent_joined").await;
    human.app.stop().await;
}

#[tokio::test]
async fn the_queue_serves_higher_priority_first() {
    let human = human_side(|_| {}).await;
    let (normal, _) = human.handed_off("can I talk to someone").await;
    let (urgent, _) = human
        .handed_off("there are charges on my card I never made, someone used my card")
        .await;
    let queue = human.app.state.handoff.queue_view().await.unwrap();
    let order: Vec<&str> = queue.iter().map(|q| q.conversation_id.as_str()).collect();
    assert_eq!(order, vec![urgent.as_str(), normal.as_str()], "{queue:#?}");

    let (_, token) = human.agent("ana", &["*"], 1).await;
    let mut ana = human.agent_socket(&token).await;
    ana.until(is_assigned(&urgent)).await;
    human.app.stop().await;
}

#[tokio::test]
async fn racing_claims_give_each_conversation_one_agent_within_capacity() {
    let human = human_side(|_| {}).await;
    let (conversation, _) = human.handed_off("human please").await;
    let mut agents = Vec::new();
    for index in 0..10 {
        agents.push(human.agent(&format!("agent{index}"), &["*"], 2).await);
    }
    // Nobody is connected, so nothing was assigned; now all ten claim it at once.
    let claims = agents.iter().map(|(_, token)| {
        human.post(
            format!("/v1/conversations/{conversation}/claim"),
            token,
            json!({}),
        )
    });
    let statuses = futures::future::join_all(claims).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 204).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 204 || *s == 409),
        "{statuses:?}"
    );

    // One agent (capacity 2) claims six conversations at once: exactly two succeed.
    let mut queued = Vec::new();
    for _ in 0..6 {
        queued.push(human.handed_off("talk to a person").await.0);
    }
    let (_, token) = &agents[9];
    let claims = queued
        .iter()
        .map(|id| human.post(format!("/v1/conversations/{id}/claim"), token, json!({})));
    let statuses = futures::future::join_all(claims).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 204).count(),
        2,
        "{statuses:?}"
    );
    let store = human.app.state.handoff.handoff_store();
    for agent in store.list_agents().await.unwrap() {
        assert!(agent.active <= agent.capacity, "{agent:?}");
    }
    human.app.stop().await;
}

#[tokio::test]
async fn a_silent_agent_loses_the_conversation_to_someone_else() {
    let human = human_side(|s| s.handoff.agent_reply_timeout_secs = 120).await;
    let (_, alice_token) = human.agent("alice", &["*"], 3).await;
    let (_, bob_token) = human.agent("bob", &["*"], 3).await;
    let mut alice = human.agent_socket(&alice_token).await;
    let mut bob = human.agent_socket(&bob_token).await;
    let (id, token) = human.handed_off("I need a human").await;
    // Equal load: the first by name gets it.
    alice.until(is_assigned(&id)).await;
    let mut customer = human.customer_socket(&id, &token).await;
    customer
        .send(json!({"type": "message", "text": "hello? anyone there?"}))
        .await;
    customer.until_type("ack").await;

    human.sweep_after(Duration::from_secs(60)).await;
    assert_eq!(
        human
            .app
            .state
            .handoff
            .handoff_store()
            .get_handoff(&id)
            .await
            .unwrap()
            .unwrap()
            .agent_id,
        alice
            .seen
            .iter()
            .find(|f| f["type"] == "hello")
            .map(|h| h["agent"]["id"].as_str().unwrap().to_string())
    );
    human.sweep_after(Duration::from_secs(61)).await;
    alice
        .until(|f| f["type"] == "unassigned" && f["reason"] == "no_reply")
        .await;
    bob.until(is_assigned(&id)).await;
    customer.until_message(|m| m["kind"] == "reassigning").await;
    let joined = customer
        .until_message(|m| m["kind"] == "agent_joined")
        .await;
    assert_eq!(joined["author"], "Bob");
    human.app.stop().await;
}

#[tokio::test]
async fn a_disconnected_agent_gets_a_grace_period_then_loses_the_conversation() {
    let human = human_side(|s| s.handoff.disconnect_grace_secs = 60).await;
    let (_, alice_token) = human.agent("alice", &["*"], 3).await;
    let alice = human.agent_socket(&alice_token).await;
    let (id, _) = human.handed_off("speak to an agent").await;
    let store = human.app.state.handoff.handoff_store().clone();
    let held_by = |id: String| {
        let store = store.clone();
        async move { store.get_handoff(&id).await.unwrap().unwrap().agent_id }
    };
    let alice_id = held_by(id.clone()).await.expect("assigned to alice");
    alice.close().await;
    let (_, bob_token) = human.agent("bob", &["*"], 3).await;
    let mut bob = human.agent_socket(&bob_token).await;
    // Let the server notice the closed socket.
    for _ in 0..50 {
        if !human.app.state.handoff.hub().agent_connected(&alice_id) {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    human.sweep_after(Duration::from_secs(30)).await;
    assert_eq!(
        held_by(id.clone()).await.as_deref(),
        Some(alice_id.as_str()),
        "still within the grace period"
    );
    human.sweep_after(Duration::from_secs(31)).await;
    bob.until(is_assigned(&id)).await;
    human.app.stop().await;
}

#[tokio::test]
async fn a_customer_resumes_after_reconnecting_without_gaps_or_duplicates() {
    let human = human_side(|_| {}).await;
    let (_, token) = human.agent("maya", &["*"], 3).await;
    let mut maya = human.agent_socket(&token).await;
    let (id, customer_token) = human.handed_off("person please").await;
    maya.until(is_assigned(&id)).await;
    let mut customer = human.customer_socket(&id, &customer_token).await;
    let joined = customer
        .until_message(|m| m["kind"] == "agent_joined")
        .await;
    let last_seen = joined["id"].as_i64().unwrap();
    customer.close().await;

    for text in ["first while you were away", "second while you were away"] {
        maya.send(json!({"type": "message", "conversation_id": id, "text": text}))
            .await;
    }
    // Wait until both are stored.
    for _ in 0..100 {
        let transcript = human.app.transcript(&id, &customer_token).await;
        if transcript["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "agent")
            .count()
            == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = WsClient::connect(
        &human.app.address,
        &format!("/v1/conversations/{id}/ws"),
        &customer_token,
    )
    .await;
    again.until_type("hello").await;
    again
        .send(json!({"type": "resume", "after": last_seen}))
        .await;
    let frames = again.drain_for(Duration::from_millis(500)).await;
    let messages: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| &f["message"])
        .collect();
    let texts: Vec<&str> = messages
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        vec!["first while you were away", "second while you were away"]
    );
    let ids: Vec<i64> = messages.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]) && ids[0] > last_seen);
    human.app.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_queues_assignments_and_transcripts() {
    let scratch = tempfile::tempdir().unwrap();
    let configure = |settings: &mut Settings| settings.handoff.sweep_interval_ms = 3_600_000;
    let mut settings = test_settings(scratch.path());
    configure(&mut settings);
    let clock = ManualClock::new();
    let app = spawn_with_clock(settings.clone(), Arc::new(clock.clone())).await;
    let human = Human {
        app,
        clock: clock.clone(),
    };
    let (maya_id, token) = human.agent("maya", &["*"], 1).await;
    let mut maya = human.agent_socket(&token).await;
    let (assigned, customer_token) = human.handed_off("a human please").await;
    maya.until(is_assigned(&assigned)).await;
    maya.send(json!({"type": "message", "conversation_id": assigned, "text": "On it!"}))
        .await;
    maya.until(|f| f["type"] == "message" && f["message"]["role"] == "agent")
        .await;
    let (queued, _) = human.handed_off("another person needed").await;
    maya.close().await;
    human.app.stop().await;

    let app = spawn_with_clock(settings, Arc::new(clock.clone())).await;
    let human = Human { app, clock };
    let store = human.app.state.handoff.handoff_store().clone();
    assert_eq!(
        store
            .get_handoff(&assigned)
            .await
            .unwrap()
            .unwrap()
            .agent_id
            .as_deref(),
        Some(maya_id.as_str())
    );
    assert_eq!(
        store
            .get_handoff(&queued)
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str(),
        "queued"
    );
    // A sweep within the grace period keeps Maya's conversation hers.
    human.sweep_after(Duration::from_secs(10)).await;
    let mut maya = WsClient::connect(&human.app.address, "/v1/agents/ws", &token).await;
    let hello = maya.until_type("hello").await;
    let held: Vec<&str> = hello["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["conversation_id"].as_str().unwrap())
        .collect();
    assert_eq!(held, vec![assigned.as_str()]);
    let mut customer = human.customer_socket(&assigned, &customer_token).await;
    let message = customer.until_message(|m| m["role"] == "agent").await;
    assert_eq!(message["text"], "On it!");
    human.app.stop().await;
}

#[tokio::test]
async fn handing_back_lets_the_bot_answer_again() {
    let human = human_side(|_| {}).await;
    let (_, token) = human.agent("maya", &["*"], 3).await;
    let mut maya = human.agent_socket(&token).await;
    let (id, customer_token) = human.handed_off("talk to a human").await;
    maya.until(is_assigned(&id)).await;
    let (_, silent) = human
        .app
        .say(&id, &customer_token, "how do I reset my password")
        .await;
    assert_eq!(silent["reasons"], json!(["awaiting_human"]));
    maya.send(json!({"type": "hand_back", "conversation_id": id}))
        .await;
    maya.until(|f| f["type"] == "unassigned" && f["reason"] == "handed_back")
        .await;
    let (_, answered) = human
        .app
        .say(&id, &customer_token, "how do I reset my password")
        .await;
    assert_eq!(answered["decision"], "answer", "{answered}");
    human.app.stop().await;
}

/// While a person owns the conversation the bot reads only what the agent panel shows
/// (sentiment, frustration); the panel keeps the intent and articles of the last full reading.
#[tokio::test]
async fn messages_to_a_person_are_read_for_the_panel_only_unless_configured() {
    let human = human_side(|_| {}).await;
    let (_, token) = human.agent("maya", &["*"], 3).await;
    let mut maya = human.agent_socket(&token).await;
    let (id, customer_token) = human.handed_off("talk to a human").await;
    maya.until(is_assigned(&id)).await;
    let (status, silent) = human
        .app
        .say(
            &id,
            &customer_token,
            "this is useless, my refund never arrived",
        )
        .await;
    assert_eq!(status, 200, "{silent}");
    assert_eq!(silent["reasons"], json!(["awaiting_human"]));
    let understanding = &silent["understanding"];
    assert_eq!(understanding["reading"], "agent_panel", "{understanding}");
    assert!(understanding["intent"].is_null(), "{understanding}");
    assert_eq!(understanding["knowledge"], json!([]), "{understanding}");
    assert_eq!(
        understanding["sentiment"]["label"], "negative",
        "{understanding}"
    );
    assert!(
        understanding["frustration"]["score"].as_f64().unwrap() > 0.0,
        "{understanding}"
    );
    let context: Value = human
        .app
        .client
        .get(human.app.url(&format!("/v1/conversations/{id}/context")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Intent from the handoff message (the last read in full), sentiment from the newest.
    assert_eq!(context["intent"]["name"], "human_agent", "{context}");
    assert_eq!(context["sentiment"]["label"], "negative", "{context}");
    let mood = context["mood"].as_array().unwrap();
    assert_eq!(mood.len(), 2, "{context}");
    assert!(mood[1]["negative"].as_f64().unwrap() > 0.5, "{context}");
    human.app.stop().await;

    let human = human_side(|settings| {
        settings.handoff.human_owned_reading = baton::config::HumanOwnedReading::Full;
    })
    .await;
    let (_, token) = human.agent("tom", &["*"], 3).await;
    let mut tom = human.agent_socket(&token).await;
    let (id, customer_token) = human.handed_off("talk to a human").await;
    tom.until(is_assigned(&id)).await;
    let (_, silent) = human
        .app
        .say(&id, &customer_token, "how do I reset my password")
        .await;
    assert_eq!(silent["reasons"], json!(["awaiting_human"]));
    assert!(silent["understanding"].get("reading").is_none(), "{silent}");
    assert_eq!(
        silent["understanding"]["intent"]["name"], "reset_password",
        "{silent}"
    );
    assert!(!silent["understanding"]["knowledge"]
        .as_array()
        .unwrap()
        .is_empty());
    human.app.stop().await;
}

#[tokio::test]
async fn with_nobody_online_the_customer_can_leave_a_message() {
    let human = human_side(|_| {}).await;
    let (id, token) = human.handed_off("I want to speak to a manager").await;
    let mut customer = human.customer_socket(&id, &token).await;
    let offline = customer.until_message(|m| m["kind"] == "offline").await;
    assert_eq!(offline["meta"]["offline_form"], true);
    customer
        .send(json!({"type": "leave_message", "email": "not-an-email", "text": "call me"}))
        .await;
    let error = customer.until_type("error").await;
    assert_eq!(error["code"], "bad_request");
    customer
        .send(json!({"type": "leave_message", "email": "ana@example.com", "text": "Please email me about my order 1234."}))
        .await;
    customer
        .until_message(|m| m["kind"] == "message_left")
        .await;

    let (_, agent_token) = human.agent("maya", &["*"], 3).await;
    let mut maya = human.agent_socket(&agent_token).await;
    let assigned = maya.until(is_assigned(&id)).await;
    assert_eq!(assigned["conversation"]["contact_email"], "ana@example.com");
    assert!(assigned["conversation"]["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["text"] == "Please email me about my order 1234."));
    human.app.stop().await;
}

#[tokio::test]
async fn notes_stay_internal_and_transfers_move_the_conversation() {
    let human = human_side(|_| {}).await;
    let (_, maya_token) = human.agent("maya", &["general"], 3).await;
    let (_, tom_token) = human.agent("tom", &["billing"], 3).await;
    let mut maya = human.agent_socket(&maya_token).await;
    let mut tom = human.agent_socket(&tom_token).await;
    let (id, token) = human.handed_off("let me talk to a person").await;
    maya.until(is_assigned(&id)).await;
    let mut customer = human.customer_socket(&id, &token).await;
    maya.send(json!({"type": "note", "conversation_id": id, "text": "VIP customer, be gentle"}))
        .await;
    maya.until_type("note").await;
    maya.send(json!({"type": "transfer", "conversation_id": id, "to_skill": "billing", "note": "refund question"}))
        .await;
    maya.until(|f| f["type"] == "unassigned" && f["reason"] == "transferred")
        .await;
    let assigned = tom.until(is_assigned(&id)).await;
    let notes: Vec<&str> = assigned["conversation"]["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["text"].as_str().unwrap())
        .collect();
    assert_eq!(notes, vec!["VIP customer, be gentle", "refund question"]);
    assert_eq!(assigned["conversation"]["skill"], "billing");
    customer.until_message(|m| m["kind"] == "transferred").await;
    customer
        .until_message(|m| m["kind"] == "agent_joined" && m["author"] == "Tom")
        .await;
    let everything = human.app.transcript(&id, &token).await.to_string();
    assert!(!everything.contains("VIP customer") && !everything.contains("refund question"));
    assert!(customer
        .seen
        .iter()
        .all(|f| !f.to_string().contains("VIP customer")));
    // Tom may not act on Maya's behalf elsewhere, and Maya no longer holds it.
    maya.send(json!({"type": "message", "conversation_id": id, "text": "still here"}))
        .await;
    let error = maya.until_type("error").await;
    assert_eq!(error["code"], "not_yours");
    human.app.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_not_buffered() {
    let human = human_side(|s| s.handoff.connection_queue = 8).await;
    let (_, token) = human.agent("maya", &["*"], 3).await;
    let mut maya = human.agent_socket(&token).await;
    let (id, customer_token) = human.handed_off("human please").await;
    maya.until(is_assigned(&id)).await;
    let mut customer = human.customer_socket(&id, &customer_token).await;
    customer
        .until_message(|m| m["kind"] == "agent_joined")
        .await;
    // The customer reads nothing while thousands of typing frames pour in: the server's socket
    // writes stall, its small queue fills, and it closes the socket instead of buffering.
    let hub = human.app.state.handoff.hub().clone();
    let frame = baton::handoff::protocol::CustomerFrame::Typing {
        who: baton::handoff::protocol::Typist::Agent,
        name: Some("Maya".repeat(100)),
        on: true,
    };
    // Bursts with a yield in between let the server write as fast as the socket takes it; only
    // when the kernel buffers are full (about 10 MB on loopback) does its queue fill up.
    for _ in 0..20_000 {
        for _ in 0..16 {
            hub.send_customer(&id, frame.clone());
        }
        if hub.overflows.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        human
            .app
            .state
            .handoff
            .hub()
            .overflows
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert_eq!(customer.closed().await, Closed::Code(4008));
    human.app.stop().await;
}

#[tokio::test]
async fn offer_mode_offers_then_moves_on_when_the_offer_expires() {
    let human = human_side(|s| {
        s.handoff.assignment = AssignmentMode::Offer;
        s.handoff.offer_timeout_secs = 30;
    })
    .await;
    let (_, alice_token) = human.agent("alice", &["*"], 3).await;
    let (_, bob_token) = human.agent("bob", &["*"], 3).await;
    let mut alice = human.agent_socket(&alice_token).await;
    let mut bob = human.agent_socket(&bob_token).await;
    let (id, _) = human.handed_off("a person please").await;
    alice
        .until(|f| f["type"] == "offer" && f["conversation"]["conversation_id"] == id)
        .await;
    human.sweep_after(Duration::from_secs(31)).await;
    alice
        .until(|f| f["type"] == "unassigned" && f["reason"] == "offer_expired")
        .await;
    bob.until(|f| f["type"] == "offer" && f["conversation"]["conversation_id"] == id)
        .await;
    bob.send(json!({"type": "accept", "conversation_id": id}))
        .await;
    bob.until(is_assigned(&id)).await;
    human.app.stop().await;
}

#[tokio::test]
async fn webhooks_are_signed_and_retried() {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    let received = Arc::new(parking_lot::Mutex::new(Vec::<(HeaderMap, Bytes)>::new()));
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let receiver = {
        let received = received.clone();
        let attempts = attempts.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let received = received.clone();
                let attempts = attempts.clone();
                async move {
                    // The first delivery fails: the sender must retry.
                    if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    received.lock().push((headers, body));
                    StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let human = human_side(|s| {
        s.handoff.webhooks = vec![WebhookTarget {
            name: "crm".into(),
            url,
            secret: "a-long-shared-secret".into(),
            events: vec!["handoff".into()],
            max_attempts: 5,
        }]
    })
    .await;
    let (id, _) = human.handed_off("I want a human").await;
    for _ in 0..200 {
        if !received.lock().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (headers, body) = received
        .lock()
        .first()
        .cloned()
        .expect("webhook delivered after a retry");
    assert!(attempts.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["kind"], "handoff");
    assert_eq!(event["conversation_id"], id.as_str());
    let signature = headers["x-baton-signature"].to_str().unwrap();
    assert_eq!(
        signature,
        baton::handoff::webhooks::signature("a-long-shared-secret", &body)
    );
    assert_eq!(headers["x-baton-event"], "handoff");
    human.app.stop().await;
}
