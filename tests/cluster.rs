//! Several Baton instances on one PostgreSQL database (and one Qdrant server collection when
//! there is a server; see tests/common/cluster.rs): a customer on one instance and an agent on
//! another, racing claims, a lost LISTEN connection, a leader killed with SIGKILL, an instance
//! restarted under its sockets.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::cluster::{agent, eventually, handed_off, leads, Testbed};
use common::human::is_assigned;
use common::ws::WsClient;
use serde_json::{json, Value};

fn customer_texts(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["type"] == "message" && f["message"]["role"] == "customer")
        .map(|f| f["message"]["text"].as_str().unwrap().to_string())
        .collect()
}

/// Read agent frames until `count` customer messages of `conversation` arrived; their texts.
async fn customer_messages_at_agent(
    agent: &mut WsClient,
    conversation: &str,
    count: usize,
) -> Vec<String> {
    let mut texts = Vec::new();
    while texts.len() < count {
        let frame = agent
            .until(|f| {
                f["type"] == "message"
                    && f["conversation_id"] == conversation
                    && f["message"]["role"] == "customer"
            })
            .await;
        texts.extend(customer_texts(&[frame]));
    }
    texts
}

/// Read customer frames until `count` agent messages arrived; their texts and ids.
async fn agent_messages_at_customer(customer: &mut WsClient, count: usize) -> Vec<(i64, String)> {
    let mut messages = Vec::new();
    while messages.len() < count {
        let message = customer.until_message(|m| m["role"] == "agent").await;
        messages.push((
            message["id"].as_i64().unwrap(),
            message["text"].as_str().unwrap().to_string(),
        ));
    }
    messages
}

async fn customer_socket(address: &str, id: &str, token: &str, after: i64) -> WsClient {
    let mut socket = WsClient::connect(address, &format!("/v1/conversations/{id}/ws"), token).await;
    socket.until_type("hello").await;
    socket.send(json!({"type": "resume", "after": after})).await;
    socket
}

async fn agent_socket(address: &str, token: &str) -> WsClient {
    let mut socket = WsClient::connect(address, "/v1/agents/ws", token).await;
    socket.until_type("hello").await;
    socket
}

/// Two instances; Maya works through B and holds a conversation a customer started on A.
struct Pair {
    bed: Testbed,
    a: common::app::TestApp,
    b: common::app::TestApp,
    maya: WsClient,
    id: String,
    token: String,
}

async fn agent_on_b_holds_a_conversation_started_on_a() -> Pair {
    let bed = Testbed::new().await;
    let a = bed.instance().await;
    let b = bed.instance().await;
    let client = reqwest::Client::new();
    let (_, maya_token) = agent(&client, &b.address, "maya", 3).await;
    let mut maya = agent_socket(&b.address, &maya_token).await;
    let (id, token) = handed_off(&client, &a.address).await;
    maya.until(is_assigned(&id)).await;
    Pair {
        bed,
        a,
        b,
        maya,
        id,
        token,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_on_one_instance_and_an_agent_on_another_talk_in_order() {
    let bed = Testbed::new().await;
    let a = bed.instance().await;
    let b = bed.instance().await;
    let client = reqwest::Client::new();

    // The agent works through B; the customer asks for a person through A, whose dispatch must
    // see the agent connected to B.
    let (_, maya_token) = agent(&client, &b.address, "maya", 3).await;
    let mut maya = agent_socket(&b.address, &maya_token).await;
    let (id, token) = handed_off(&client, &a.address).await;
    let assigned = maya.until(is_assigned(&id)).await;
    assert_eq!(
        assigned["conversation"]["reasons"],
        json!(["explicit_request"])
    );
    let mut customer = customer_socket(&a.address, &id, &token, 0).await;
    customer
        .until_message(|m| m["kind"] == "agent_joined")
        .await;

    // 15 messages each way, sent without waiting, arrive complete and in order (the customer's
    // stay within the per-conversation burst of 20 with the one that asked for a person).
    for i in 0..15 {
        customer
            .send(json!({"type": "message", "text": format!("customer {i}"), "client_message_id": format!("c-{i}")}))
            .await;
        maya.send(json!({"type": "message", "conversation_id": id, "text": format!("agent {i}")}))
            .await;
    }
    let at_agent = customer_messages_at_agent(&mut maya, &id, 15).await;
    let expected: Vec<String> = (0..15).map(|i| format!("customer {i}")).collect();
    assert_eq!(at_agent, expected);
    let at_customer: Vec<String> = agent_messages_at_customer(&mut customer, 15)
        .await
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    let expected: Vec<String> = (0..15).map(|i| format!("agent {i}")).collect();
    assert_eq!(at_customer, expected);

    // The transcript, read through either instance, holds each message once.
    for instance in [&a, &b] {
        let transcript = instance.transcript(&id, &token).await;
        let texts: Vec<&str> = transcript["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        for i in 0..15 {
            let customer = format!("customer {i}");
            let agent = format!("agent {i}");
            assert_eq!(texts.iter().filter(|t| **t == customer).count(), 1);
            assert_eq!(texts.iter().filter(|t| **t == agent).count(), 1);
        }
    }

    // Resolving on B reaches the customer on A.
    maya.send(json!({"type": "resolve", "conversation_id": id}))
        .await;
    customer
        .until(|f| f["type"] == "state" && f["state"] == "resolved")
        .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claims_through_three_instances_keep_one_owner_and_the_capacity() {
    let bed = Testbed::new().await;
    // The agents claim over HTTP without a socket: no sweep may take their conversations back
    // for being disconnected while the test counts them.
    let no_sweeps = |settings: &mut baton::config::Settings| {
        settings.handoff.sweep_interval_ms = 3_600_000;
    };
    let instances = [
        bed.instance_with(no_sweeps).await,
        bed.instance_with(no_sweeps).await,
        bed.instance_with(no_sweeps).await,
    ];
    let client = reqwest::Client::new();
    let first = &instances[0].address;

    // Nobody is connected, so the conversations queue.
    let mut conversations = Vec::new();
    for _ in 0..6 {
        conversations.push(handed_off(&client, first).await.0);
    }
    let (ann, ann_token) = agent(&client, first, "ann", 2).await;
    let (bob, bob_token) = agent(&client, first, "bob", 10).await;

    // Ann (capacity 2) claims all six at once, each through every instance: 18 requests.
    let mut claims = Vec::new();
    for conversation in &conversations {
        for instance in &instances {
            let client = client.clone();
            let url = instance.url(&format!("/v1/conversations/{conversation}/claim"));
            let token = ann_token.clone();
            claims.push(tokio::spawn(async move {
                let status = client
                    .post(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16();
                status
            }));
        }
    }
    let mut statuses = Vec::new();
    for claim in claims {
        statuses.push(claim.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 204).count(),
        2,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 204 || *s == 409),
        "{statuses:?}"
    );

    // Bob and ann's rival claims on the four left: each goes to exactly one of them... ann is
    // full, so bob takes them; and bob racing himself through three instances wins each once.
    let handoffs = instances[1].state.handoff.handoff_store().clone();
    let mut left = Vec::new();
    for conversation in &conversations {
        let handoff = handoffs.get_handoff(conversation).await.unwrap().unwrap();
        if handoff.agent_id.is_none() {
            left.push(conversation.clone());
        }
    }
    assert_eq!(left.len(), 4);
    let mut claims = Vec::new();
    for conversation in &left {
        for instance in &instances {
            for token in [&bob_token, &ann_token] {
                let client = client.clone();
                let url = instance.url(&format!("/v1/conversations/{conversation}/claim"));
                let token = token.clone();
                claims.push(tokio::spawn(async move {
                    client
                        .post(url)
                        .bearer_auth(token)
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                }));
            }
        }
    }
    let mut won = 0;
    for claim in claims {
        if claim.await.unwrap() == 204 {
            won += 1;
        }
    }
    assert_eq!(won, 4, "each of the four has one winner");

    let mut owners = HashSet::new();
    for conversation in &conversations {
        let handoff = handoffs.get_handoff(conversation).await.unwrap().unwrap();
        assert_eq!(handoff.state.as_str(), "assigned");
        owners.insert((conversation.clone(), handoff.agent_id.unwrap()));
    }
    let held_by = |agent: &str| owners.iter().filter(|(_, a)| a == agent).count();
    assert_eq!(held_by(&ann), 2);
    assert_eq!(held_by(&bob), 4);
    let ann_record = handoffs.get_agent(&ann).await.unwrap().unwrap();
    let bob_record = handoffs.get_agent(&bob).await.unwrap().unwrap();
    assert_eq!((ann_record.active, bob_record.active), (2, 4));
    for instance in instances {
        instance.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listen_connection_is_caught_up_from_the_store() {
    let Pair {
        bed,
        a,
        b,
        mut maya,
        id,
        token,
    } = agent_on_b_holds_a_conversation_started_on_a().await;

    // Cut every LISTEN session on the database; messages written meanwhile reach the agent on B
    // anyway, once its listener is back and its sockets re-read the store.
    let admin = sqlx::PgPool::connect(bed.database.url()).await.unwrap();
    let cut: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(!cut.is_empty(), "the instances listen");
    for pid in &cut {
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&admin)
            .await
            .unwrap();
    }
    for i in 0..5 {
        let (status, _) = a
            .say(&id, &token, &format!("while the line was cut {i}"))
            .await;
        assert_eq!(status, 200);
    }
    let texts = customer_messages_at_agent(&mut maya, &id, 5).await;
    let expected: Vec<String> = (0..5)
        .map(|i| format!("while the line was cut {i}"))
        .collect();
    assert_eq!(texts, expected);
    admin.close().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_restarts_and_its_customer_socket_resumes_without_loss_or_duplicates() {
    let Pair {
        bed,
        a,
        b,
        mut maya,
        id,
        token,
    } = agent_on_b_holds_a_conversation_started_on_a().await;
    let mut customer = customer_socket(&a.address, &id, &token, 0).await;
    maya.send(json!({"type": "message", "conversation_id": id, "text": "before 0"}))
        .await;
    let seen = agent_messages_at_customer(&mut customer, 1).await;
    let last_seen = seen[0].0;

    // A goes away under the customer's socket; the agent keeps writing through B.
    a.stop().await;
    for i in 0..5 {
        maya.send(
            json!({"type": "message", "conversation_id": id, "text": format!("while away {i}")}),
        )
        .await;
    }
    let restarted = bed.instance().await;
    let mut customer = customer_socket(&restarted.address, &id, &token, last_seen).await;
    let resumed: Vec<String> = agent_messages_at_customer(&mut customer, 5)
        .await
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    let expected: Vec<String> = (0..5).map(|i| format!("while away {i}")).collect();
    assert_eq!(resumed, expected);
    let extra = customer.drain_for(Duration::from_millis(300)).await;
    assert!(
        extra
            .iter()
            .all(|f| !(f["type"] == "message" && f["message"]["role"] == "agent")),
        "delivered twice: {extra:#?}"
    );
    // And the other way, through the new instance.
    customer
        .send(json!({"type": "message", "text": "after the restart", "client_message_id": "r-1"}))
        .await;
    let texts = customer_messages_at_agent(&mut maya, &id, 1).await;
    assert_eq!(texts, vec!["after the restart".to_string()]);
    let transcript = restarted.transcript(&id, &token).await;
    let agent_texts: Vec<&str> = transcript["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "agent")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        agent_texts,
        vec![
            "before 0",
            "while away 0",
            "while away 1",
            "while away 2",
            "while away 3",
            "while away 4"
        ]
    );
    restarted.stop().await;
    b.stop().await;
}

/// Real processes: the leader is killed with SIGKILL while it sweeps every 50 ms; the other
/// instance takes over, expires the offer the dead leader would have expired, and reassigns the
/// conversation of an agent whose only socket was on the dead instance once the grace period
/// (counted from the dead instance's last heartbeat) is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_sweep_is_replaced_and_its_work_is_done() {
    let bed = Testbed::new().await;
    let env = [
        ("BATON_HANDOFF__ASSIGNMENT", "offer".to_string()),
        ("BATON_HANDOFF__OFFER_TIMEOUT_SECS", "2".to_string()),
        ("BATON_HANDOFF__DISCONNECT_GRACE_SECS", "1".to_string()),
        ("BATON_HANDOFF__SWEEP_INTERVAL_MS", "50".to_string()),
    ];
    let client = reqwest::Client::new();
    let mut first = bed.process(&env).await;
    eventually(Duration::from_secs(10), "the first instance leads", || {
        leads(&client, &first.address)
    })
    .await;
    let second = bed.process(&env).await;
    assert!(!leads(&client, &second.address).await);

    // Tom works through the leader and accepts his offer; Maya works through the other instance
    // and lets hers run.
    let (_, tom_token) = agent(&client, &first.address, "tom", 3).await;
    let mut tom = agent_socket(&first.address, &tom_token).await;
    let (toms, _) = handed_off(&client, &second.address).await;
    tom.until(|f| f["type"] == "offer" && f["conversation"]["conversation_id"] == toms)
        .await;
    tom.send(json!({"type": "accept", "conversation_id": toms}))
        .await;
    tom.until(|f| f["type"] == "assigned" && f["conversation"]["conversation_id"] == toms)
        .await;
    let (_, maya_token) = agent(&client, &second.address, "maya", 3).await;
    let mut maya = agent_socket(&second.address, &maya_token).await;
    let (mayas, _) = handed_off(&client, &first.address).await;
    maya.until(|f| f["type"] == "offer" && f["conversation"]["conversation_id"] == mayas)
        .await;

    first.kill9().await;
    eventually(Duration::from_secs(10), "the second instance leads", || {
        leads(&client, &second.address)
    })
    .await;
    let metrics = client
        .get(format!("{}/metrics", second.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("baton_cluster_leader 1"), "{metrics}");

    // The new leader's sweep: Maya's offer expires; Tom is gone, so his conversation comes back
    // and is offered to Maya.
    maya.until_all(&[
        &|f: &Value| {
            f["type"] == "unassigned"
                && f["conversation_id"] == mayas
                && f["reason"] == "offer_expired"
        },
        &|f: &Value| f["type"] == "offer" && f["conversation"]["conversation_id"] == toms,
    ])
    .await;
    let database = sqlx::PgPool::connect(bed.database.url()).await.unwrap();
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE conversation_id = $1 AND kind = 'reassigning' ORDER BY id",
    )
    .bind(&toms)
    .fetch_all(&database)
    .await
    .unwrap();
    assert!(
        reasons.iter().any(|p| p.contains("agent_disconnected")),
        "{reasons:?}"
    );
    database.close().await;
}

/// Retraining through one instance (after the intents file changed) retrains the others too, so
/// every instance answers with the same intents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retraining_the_intents_on_one_instance_retrains_every_instance() {
    let bed = Testbed::new().await;
    let folder = tempfile::tempdir().unwrap();
    let intents = folder.path().join("intents.yaml");
    let demo = std::fs::read_to_string(common::app::repo().join("knowledge/intents.yaml")).unwrap();
    std::fs::write(&intents, &demo).unwrap();
    let shared_file = |settings: &mut baton::config::Settings| {
        settings.intents.file = intents.clone();
    };
    let a = bed.instance_with(shared_file).await;
    let b = bed.instance_with(shared_file).await;
    let names = |view: Value| -> Vec<String> {
        view["intents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        !names(b.admin_get("/v1/admin/intents").await).contains(&"smart_plug_setup".to_string())
    );

    let edited = demo.replacen(
        "intents:\n",
        "intents:\n  - name: smart_plug_setup\n    examples: [\"how do I pair the smart plug\", \"smart plug will not connect\", \"set up my new smart plug\"]\n",
        1,
    );
    assert_ne!(edited, demo);
    std::fs::write(&intents, edited).unwrap();
    let trained = a
        .client
        .post(a.url("/v1/admin/intents/train"))
        .bearer_auth(common::app::ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(trained.status(), 200);
    assert!(names(a.admin_get("/v1/admin/intents").await).contains(&"smart_plug_setup".to_string()));
    eventually(
        Duration::from_secs(60),
        "B retrained from the edited file",
        || async {
            names(b.admin_get("/v1/admin/intents").await).contains(&"smart_plug_setup".to_string())
        },
    )
    .await;
    let (id, token) = b.conversation().await;
    let (_, reply) = b.say(&id, &token, "how do I pair the smart plug").await;
    assert_eq!(
        reply["understanding"]["intent"]["name"], "smart_plug_setup",
        "{reply}"
    );
    a.stop().await;
    b.stop().await;
}
