//! The `HandoffStore` contract (agents, tokens, the queue, offers, assignments, webhook cursors),
//! run against both backends like `tests/store_contract.rs`: SQLite in a temporary directory and
//! PostgreSQL in a throwaway database per test. Every test is written once as
//! `async fn name(backend: Backend)`; `contract_tests!` instantiates it as `sqlite::name` and
//! `postgres::name`.
//!
//! Times given to the store are small made-up numbers (the store takes `now` from its caller), so
//! that every expected timestamp is exact.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use baton::nlp::intents::Priority;
use baton::store::{
    AgentRecord, AgentStatus, AgentUpdate, ConversationState, CustomerInsert, EventDraft,
    HandoffRecord, HandoffStore, Millis, NewAgent, NewMessage, QueueRequest, Release, Role,
    SqlStore, Store, StoreError, TurnCompletion,
};
use serde_json::json;
use sqlx::AnyPool;
use tokio::sync::Barrier;

use common::backends::Backend;

contract_tests!(
    agents_are_created_found_listed_and_updated,
    agent_tokens_are_valid_until_they_expire_or_are_revoked,
    a_handoff_turn_queues_the_conversation,
    a_new_handoff_starts_from_a_clean_slate,
    a_turn_never_takes_a_conversation_from_the_humans,
    a_reply_before_the_silent_turn_completes_leaves_the_customer_answered,
    the_queue_is_ordered_by_head_priority_frustration_and_age,
    assigning_directly_or_by_offer_takes_capacity,
    only_the_offered_agent_accepts_an_offer,
    capacity_is_enforced,
    releasing_requeues_resolves_or_hands_back,
    active_never_goes_below_zero,
    transfers_move_one_unit_of_capacity_atomically,
    opposite_transfers_between_two_agents_do_not_deadlock,
    queued_conversations_are_closed_or_handed_back,
    enqueue_only_queues_conversations_outside_the_queue,
    agent_replies_and_customer_waits_are_recorded,
    an_agent_reply_is_stored_with_its_bookkeeping,
    concurrent_agent_replies_each_get_their_own_outcome,
    contact_details_are_stored_with_their_event,
    webhook_cursors_start_at_zero_and_persist,
    unknown_conversations_and_agents_are_reported,
    corrupt_handoff_data_is_reported_as_corrupt,
    racing_assignments_respect_capacity_and_never_double_assign,
    many_agents_racing_for_one_conversation_have_one_winner,
);

// ---------------------------------------------------------------------------------------------
// Helpers

fn new_agent(id: &str, name: &str, capacity: i64, skills: &[&str]) -> NewAgent {
    NewAgent {
        id: id.to_string(),
        name: name.to_string(),
        display_name: format!("{name} (display)"),
        password_hash: Some(format!("$argon2id$hash-of-{name}")),
        skills: skills.iter().map(|skill| skill.to_string()).collect(),
        capacity,
    }
}

async fn create_agent(store: &SqlStore, id: &str, capacity: i64) -> AgentRecord {
    store
        .create_agent(&new_agent(
            id,
            &format!("name-of-{id}"),
            capacity,
            &["general"],
        ))
        .await
        .unwrap_or_else(|error| panic!("creating agent {id}: {error}"))
}

fn request(skill: &str, priority: Priority, frustration: f32) -> QueueRequest {
    QueueRequest {
        skill: skill.to_string(),
        priority,
        reasons: vec!["explicit_request".to_string(), "low_confidence".to_string()],
        frustration,
        intent: Some("refund_request".to_string()),
        preview: format!("please help, {skill}"),
    }
}

fn event(kind: &str) -> EventDraft {
    EventDraft::new(kind, json!({ "kind": kind }))
}

/// A new conversation, queued with `request` at `now` (event `queued`).
async fn queued_with(store: &SqlStore, conversation_id: &str, request: &QueueRequest, now: Millis) {
    store
        .create_conversation(conversation_id, "hash")
        .await
        .unwrap_or_else(|error| panic!("creating {conversation_id}: {error}"));
    let queued = store
        .enqueue(conversation_id, request, now, &event("queued"))
        .await
        .unwrap_or_else(|error| panic!("queueing {conversation_id}: {error}"));
    assert!(queued, "{conversation_id} was not in the queue before");
}

/// A new conversation in the general queue at normal priority.
async fn queued(store: &SqlStore, conversation_id: &str, now: Millis) {
    queued_with(
        store,
        conversation_id,
        &request("general", Priority::Normal, 0.0),
        now,
    )
    .await;
}

async fn handoff(store: &SqlStore, conversation_id: &str) -> HandoffRecord {
    store
        .get_handoff(conversation_id)
        .await
        .unwrap_or_else(|error| panic!("reading the handoff of {conversation_id}: {error}"))
        .unwrap_or_else(|| panic!("{conversation_id} was handed off"))
}

async fn active(store: &SqlStore, agent_id: &str) -> i64 {
    store
        .get_agent(agent_id)
        .await
        .unwrap_or_else(|error| panic!("reading agent {agent_id}: {error}"))
        .unwrap_or_else(|| panic!("agent {agent_id} exists"))
        .active
}

async fn event_kinds(store: &SqlStore, conversation_id: &str) -> Vec<String> {
    store
        .list_events(Some(conversation_id), None, 1000)
        .await
        .unwrap_or_else(|error| panic!("events of {conversation_id}: {error}"))
        .into_iter()
        .map(|event| event.kind)
        .collect()
}

async fn assign(store: &SqlStore, conversation_id: &str, agent_id: &str, now: Millis) -> bool {
    store
        .assign(conversation_id, agent_id, None, now, &event("assigned"))
        .await
        .unwrap_or_else(|error| panic!("assigning {conversation_id} to {agent_id}: {error}"))
}

async fn release(
    store: &SqlStore,
    conversation_id: &str,
    agent_id: &str,
    to: Release,
    now: Millis,
) -> bool {
    store
        .release(conversation_id, agent_id, &to, now, &event("released"))
        .await
        .unwrap_or_else(|error| panic!("releasing {conversation_id} from {agent_id}: {error}"))
}

async fn ids_in(store: &SqlStore, states: &[ConversationState]) -> Vec<String> {
    store
        .list_handoffs(states)
        .await
        .expect("list handoffs")
        .into_iter()
        .map(|handoff| handoff.conversation_id)
        .collect()
}

/// A customer message and its finished turn with the given outcome.
async fn customer_turn(
    store: &SqlStore,
    conversation_id: &str,
    new_state: ConversationState,
    enqueue: Option<QueueRequest>,
) {
    let customer = match store
        .insert_customer_message(conversation_id, "I need a person", None)
        .await
        .expect("insert customer message")
    {
        CustomerInsert::New(message) => message,
        CustomerInsert::Existing(message) => panic!("expected a new message, got {message:?}"),
    };
    store
        .complete_turn(TurnCompletion {
            conversation_id: conversation_id.to_string(),
            customer_message_id: customer.id,
            understanding: json!({ "intent": "human_agent" }),
            result: json!({ "state": new_state.as_str() }),
            reply: Some(NewMessage::new(Role::Bot, "Connecting you to a person.")),
            new_state,
            enqueue,
            events: vec![("handoff".to_string(), json!({ "message_id": customer.id }))],
        })
        .await
        .expect("complete turn");
}

// ---------------------------------------------------------------------------------------------
// Agents and tokens

async fn agents_are_created_found_listed_and_updated(backend: Backend) {
    let store = backend.open().await;
    let maya = store
        .create_agent(&new_agent("agent-maya", "maya", 2, &["billing", "general"]))
        .await
        .expect("create maya");
    assert_eq!(maya.id, "agent-maya");
    assert_eq!(maya.name, "maya");
    assert_eq!(maya.display_name, "maya (display)");
    assert_eq!(
        maya.password_hash.as_deref(),
        Some("$argon2id$hash-of-maya")
    );
    assert_eq!(maya.skills, ["billing", "general"]);
    assert_eq!(maya.capacity, 2);
    assert_eq!(
        maya.status,
        AgentStatus::Offline,
        "signed off until they connect"
    );
    assert_eq!(maya.active, 0);
    assert_eq!(maya.created_at, maya.updated_at);

    assert_eq!(
        store.get_agent("agent-maya").await.expect("get"),
        Some(maya.clone())
    );
    assert_eq!(
        store.find_agent_by_name("maya").await.expect("find"),
        Some(maya.clone())
    );
    assert_eq!(
        store.get_agent("agent-nobody").await.expect("get unknown"),
        None
    );
    assert_eq!(
        store
            .find_agent_by_name("nobody")
            .await
            .expect("find unknown"),
        None
    );

    let duplicate = store
        .create_agent(&new_agent("agent-other", "maya", 1, &[]))
        .await;
    assert!(
        matches!(&duplicate, Err(StoreError::AgentExists(name)) if name == "maya"),
        "{duplicate:?}"
    );
    assert_eq!(
        store.get_agent("agent-other").await.expect("get"),
        None,
        "nothing stored"
    );

    let alex = store
        .create_agent(&NewAgent {
            password_hash: None,
            ..new_agent("agent-alex", "alex", 1, &[])
        })
        .await
        .expect("create alex");
    assert_eq!(alex.password_hash, None);
    assert!(alex.skills.is_empty());
    let names: Vec<_> = store
        .list_agents()
        .await
        .expect("list")
        .into_iter()
        .map(|agent| agent.name)
        .collect();
    assert_eq!(names, ["alex", "maya"], "listed by name");

    // updated_at has millisecond resolution: make sure the clock moved.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let online = store
        .update_agent(
            "agent-maya",
            &AgentUpdate {
                status: Some(AgentStatus::Online),
                capacity: Some(5),
                ..AgentUpdate::default()
            },
        )
        .await
        .expect("update status and capacity");
    assert_eq!(online.status, AgentStatus::Online);
    assert_eq!(online.capacity, 5);
    assert_eq!(online.display_name, maya.display_name, "untouched");
    assert_eq!(online.password_hash, maya.password_hash, "untouched");
    assert_eq!(online.skills, maya.skills, "untouched");
    assert_eq!(online.created_at, maya.created_at);
    assert!(online.updated_at > maya.updated_at, "updated_at moves");

    let renamed = store
        .update_agent(
            "agent-maya",
            &AgentUpdate {
                display_name: Some("Maya from billing".to_string()),
                password_hash: Some("$argon2id$new".to_string()),
                skills: Some(vec!["tech".to_string()]),
                ..AgentUpdate::default()
            },
        )
        .await
        .expect("update profile");
    assert_eq!(renamed.display_name, "Maya from billing");
    assert_eq!(renamed.password_hash.as_deref(), Some("$argon2id$new"));
    assert_eq!(renamed.skills, ["tech"]);
    assert_eq!(
        renamed.status,
        AgentStatus::Online,
        "kept from the first update"
    );
    assert_eq!(renamed.capacity, 5, "kept from the first update");
    assert_eq!(
        store.get_agent("agent-maya").await.expect("get"),
        Some(renamed)
    );
    assert_eq!(
        store.get_agent("agent-alex").await.expect("get"),
        Some(alex),
        "other agents are untouched"
    );

    let unknown = store
        .update_agent("agent-nobody", &AgentUpdate::default())
        .await;
    assert!(
        matches!(&unknown, Err(StoreError::AgentNotFound(id)) if id == "agent-nobody"),
        "{unknown:?}"
    );
}

async fn agent_tokens_are_valid_until_they_expire_or_are_revoked(backend: Backend) {
    let store = backend.open().await;
    let maya = create_agent(&store, "agent-maya", 2).await;
    store
        .insert_agent_token("agent-maya", "sha-of-token-1", 0, 1_000)
        .await
        .expect("insert token 1");
    store
        .insert_agent_token("agent-maya", "sha-of-token-2", 0, 10_000)
        .await
        .expect("insert token 2");

    assert_eq!(
        store
            .agent_by_token("sha-of-token-1", 999)
            .await
            .expect("lookup"),
        Some(maya.clone())
    );
    assert_eq!(
        store
            .agent_by_token("sha-of-token-1", 1_000)
            .await
            .expect("lookup"),
        None,
        "expired at expires_at"
    );
    assert_eq!(
        store
            .agent_by_token("sha-of-token-1", 5_000)
            .await
            .expect("lookup"),
        None
    );
    assert_eq!(
        store
            .agent_by_token("sha-of-nothing", 0)
            .await
            .expect("lookup"),
        None
    );

    store
        .revoke_agent_token("sha-of-token-2")
        .await
        .expect("revoke");
    assert_eq!(
        store
            .agent_by_token("sha-of-token-2", 0)
            .await
            .expect("lookup"),
        None,
        "revoked"
    );
    assert_eq!(
        store
            .agent_by_token("sha-of-token-1", 0)
            .await
            .expect("lookup"),
        Some(maya),
        "revoking one token leaves the others"
    );
    store
        .revoke_agent_token("sha-of-nothing")
        .await
        .expect("revoking an unknown token is harmless");

    let orphan = store
        .insert_agent_token("agent-nobody", "sha-of-token-3", 0, 1_000)
        .await;
    assert!(
        matches!(&orphan, Err(StoreError::AgentNotFound(id)) if id == "agent-nobody"),
        "{orphan:?}"
    );

    // A new login clears the agent's expired tokens: token 1 (expired at 1,000) is gone for
    // good, even to a lookup dated before its expiry; other agents' tokens are not touched.
    create_agent(&store, "agent-tom", 2).await;
    store
        .insert_agent_token("agent-tom", "sha-of-tom-old", 0, 1_000)
        .await
        .expect("insert tom's token");
    store
        .insert_agent_token("agent-maya", "sha-of-token-4", 5_000, 20_000)
        .await
        .expect("insert token 4");
    assert_eq!(
        store
            .agent_by_token("sha-of-token-1", 0)
            .await
            .expect("lookup"),
        None,
        "expired tokens are deleted at the next login"
    );
    assert!(store
        .agent_by_token("sha-of-token-4", 5_000)
        .await
        .expect("lookup")
        .is_some());
    assert!(
        store
            .agent_by_token("sha-of-tom-old", 0)
            .await
            .expect("lookup")
            .is_some(),
        "another agent's tokens are left alone"
    );
}

// ---------------------------------------------------------------------------------------------
// Entering the queue

async fn a_handoff_turn_queues_the_conversation(backend: Backend) {
    let store = backend.open().await;
    store
        .create_conversation("conv-bot", "hash")
        .await
        .expect("create");
    store
        .create_conversation("conv-1", "hash")
        .await
        .expect("create");
    assert_eq!(
        store.get_handoff("conv-1").await.expect("get"),
        None,
        "never handed off"
    );

    let before = baton_now();
    customer_turn(
        &store,
        "conv-1",
        ConversationState::Queued,
        Some(request("billing", Priority::High, 0.5)),
    )
    .await;
    let after = baton_now();

    let conversation = store
        .get_conversation("conv-1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(conversation.state, ConversationState::Queued);
    let queued = handoff(&store, "conv-1").await;
    assert_eq!(queued.conversation_id, "conv-1");
    assert_eq!(queued.state, ConversationState::Queued);
    assert_eq!(queued.skill, "billing");
    assert_eq!(queued.priority, Priority::High);
    assert_eq!(queued.reasons, ["explicit_request", "low_confidence"]);
    assert_eq!(queued.frustration, 0.5);
    assert!(
        (before..=after).contains(&queued.queued_at),
        "queued at the time of the turn: {before} <= {} <= {after}",
        queued.queued_at
    );
    assert!(!queued.at_head);
    assert_eq!(queued.agent_id, None);
    assert_eq!(queued.offer_expires_at, None);
    assert_eq!(queued.assigned_at, None);
    assert_eq!(queued.first_response_at, None);
    assert_eq!(queued.waiting_since, None);
    assert_eq!(queued.reassignments, 0);
    assert_eq!(queued.contact_email, None);
    assert_eq!(queued.contact_note, None);
    assert_eq!(
        event_kinds(&store, "conv-1").await,
        ["handoff"],
        "the turn's events"
    );

    assert_eq!(
        store
            .list_handoffs(&[ConversationState::Queued])
            .await
            .expect("list"),
        [queued]
    );
    assert!(ids_in(&store, &[ConversationState::Assigned])
        .await
        .is_empty());
    assert!(ids_in(&store, &[]).await.is_empty());
    assert!(
        ids_in(&store, &[ConversationState::Bot]).await.is_empty(),
        "a conversation that was never handed off is no handoff"
    );
    assert_eq!(store.get_handoff("conv-bot").await.expect("get"), None);
    assert_eq!(store.get_handoff("conv-nobody").await.expect("get"), None);
}

/// `baton`'s timestamps are wall-clock milliseconds; `complete_turn` takes its own.
fn baton_now() -> Millis {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    Millis::try_from(since_epoch.as_millis()).expect("fits")
}

async fn a_new_handoff_starts_from_a_clean_slate(backend: Backend) {
    let store = backend.open().await;
    create_agent(&store, "agent-maya", 2).await;
    queued(&store, "conv-1", 1_000).await;
    assert!(assign(&store, "conv-1", "agent-maya", 2_000).await);
    store
        .record_customer_waiting("conv-1", 2_500)
        .await
        .expect("waiting");
    store
        .record_agent_reply("conv-1", 3_000)
        .await
        .expect("reply");
    store
        .set_contact(
            "conv-1",
            "ana@example.com",
            "call me",
            &event("contact_left"),
        )
        .await
        .expect("contact");
    assert!(
        release(
            &store,
            "conv-1",
            "agent-maya",
            Release::Requeue {
                at_head: true,
                skill: None
            },
            4_000
        )
        .await
    );
    assert!(assign(&store, "conv-1", "agent-maya", 5_000).await);
    store
        .record_customer_waiting("conv-1", 5_500)
        .await
        .expect("waiting");
    assert!(release(&store, "conv-1", "agent-maya", Release::HandBack, 6_000).await);
    let handed_back = handoff(&store, "conv-1").await;
    assert_eq!(handed_back.state, ConversationState::Bot);
    assert_eq!(handed_back.reassignments, 1);
    assert_eq!(
        handed_back.first_response_at,
        Some(3_000),
        "kept as the record of that handoff"
    );
    assert_eq!(
        handed_back.contact_email.as_deref(),
        Some("ana@example.com")
    );

    customer_turn(
        &store,
        "conv-1",
        ConversationState::Queued,
        Some(request("tech", Priority::Urgent, 0.25)),
    )
    .await;
    let fresh = handoff(&store, "conv-1").await;
    assert_eq!(fresh.state, ConversationState::Queued);
    assert_eq!(fresh.skill, "tech");
    assert_eq!(fresh.priority, Priority::Urgent);
    assert_eq!(fresh.frustration, 0.25);
    assert!(fresh.queued_at > 6_000, "a fresh queue time");
    assert!(!fresh.at_head);
    assert_eq!(fresh.agent_id, None);
    assert_eq!(fresh.assigned_at, None);
    assert_eq!(fresh.first_response_at, None);
    assert_eq!(fresh.waiting_since, None);
    assert_eq!(fresh.reassignments, 0);
    assert_eq!(fresh.contact_email, None);
    assert_eq!(fresh.contact_note, None);
    assert_eq!(
        fresh.intent.as_deref(),
        Some("refund_request"),
        "the queue shows the new intent"
    );
    assert_eq!(fresh.preview, "please help, tech");
    assert_eq!(active(&store, "agent-maya").await, 0);
}

async fn a_turn_never_takes_a_conversation_from_the_humans(backend: Backend) {
    let store = backend.open().await;
    create_agent(&store, "agent-maya", 2).await;
    queued(&store, "conv-1", 1_000).await;
    assert!(assign(&store, "conv-1", "agent-maya", 2_000).await);
    let assigned = handoff(&store, "conv-1").await;

    // Turns decided on the state read before the agent took the conversation: a bot answer, a
    // silent turn that still thought it queued, and a fresh handoff.
    customer_turn(&store, "conv-1", ConversationState::Bot, None).await;
    customer_turn(&store, "conv-1", ConversationState::Queued, None).await;
    customer_turn(
        &store,
        "conv-1",
        ConversationState::Queued,
        Some(request("tech", Priority::Urgent, 1.0)),
    )
    .await;

    let conversation = store
        .get_conversation("conv-1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(conversation.state, ConversationState::Assigned);
    // The handoff is untouched, except that the customer who wrote now waits for the agent.
    let after = handoff(&store, "conv-1").await;
    assert!(
        after.waiting_since.is_some(),
        "the customer is waiting for a reply"
    );
    assert_eq!(
        HandoffRecord {
            waiting_since: None,
            ..after
        },
        assigned,
        "the handoff is untouched"
    );
    assert_eq!(active(&store, "agent-maya").await, 1);
    assert_eq!(
        store
            .list_messages("conv-1", None, 100)
            .await
            .expect("list")
            .len(),
        6,
        "the turns themselves were still recorded"
    );
}

/// The agent is shown a customer's message as soon as it is stored, before the bot's silent
/// reading of it completes the turn; a reply written in between has answered that message, so
/// the completion must not mark the customer as waiting again. A later message makes them wait.
async fn a_reply_before_the_silent_turn_completes_leaves_the_customer_answered(backend: Backend) {
    let store = backend.open().await;
    create_agent(&store, "agent-maya", 2).await;
    queued(&store, "conv-1", 500).await;
    assert!(assign(&store, "conv-1", "agent-maya", 600).await);
    let silent_turn = |message_id: i64| TurnCompletion {
        conversation_id: "conv-1".to_string(),
        customer_message_id: message_id,
        understanding: json!({ "sentiment": { "label": "neutral" } }),
        result: json!({ "state": "assigned" }),
        reply: None,
        new_state: ConversationState::Assigned,
        enqueue: None,
        events: Vec::new(),
    };
    let insert = |text: &'static str| {
        let store = &store;
        async move {
            match store
                .insert_customer_message("conv-1", text, None)
                .await
                .expect("insert customer message")
            {
                CustomerInsert::New(message) => message.id,
                CustomerInsert::Existing(message) => panic!("expected a new message: {message:?}"),
            }
        }
    };
    let reply = NewMessage {
        role: Role::Agent,
        text: "Sorted, it is on its way".into(),
        author_id: Some("agent-maya".into()),
        kind: None,
        meta: None,
    };

    // The insert reads who holds the conversation in the statement that locks it: the agent
    // to show the message to, with no second read.
    let (_, at_insert) = store
        .insert_customer_message_with_state("conv-1", "are you there?", None)
        .await
        .expect("insert");
    assert_eq!(at_insert.state, ConversationState::Assigned);
    assert_eq!(at_insert.agent_id.as_deref(), Some("agent-maya"));

    let answered_message = insert("where is my parcel?").await;
    store
        .insert_agent_reply("conv-1", "agent-maya", &reply, 2_000)
        .await
        .expect("reply")
        .expect("maya holds the conversation");
    store
        .complete_turn(silent_turn(answered_message))
        .await
        .expect("complete the answered turn");
    assert_eq!(
        handoff(&store, "conv-1").await.waiting_since,
        None,
        "the reply answered the message"
    );

    let unanswered_message = insert("thanks, and the invoice?").await;
    store
        .complete_turn(silent_turn(unanswered_message))
        .await
        .expect("complete the unanswered turn");
    assert!(
        handoff(&store, "conv-1").await.waiting_since.is_some(),
        "the customer now waits for a reply"
    );
}

async fn the_queue_is_ordered_by_head_priority_frustration_and_age(backend: Backend) {
    let store = backend.open().await;
    create_agent(&store, "agent-maya", 5).await;
    let normal = request("general", Priority::Normal, 0.0);
    queued_with(&store, "low", &request("general", Priority::Low, 0.0), 500).await;
    queued_with(&store, "old-normal", &normal, 1_000).await;
    // Equal in everything: the conversation id decides, whatever the insertion order.
    queued_with(&store, "twin-b", &normal, 1_500).await;
    queued_with(&store, "twin-a", &normal, 1_500).await;
    queued_with(&store, "new-normal", &normal, 2_000).await;
    queued_with(
        &store,
        "frustrated-normal",
        &request("general", Priority::Normal, 0.9),
        3_000,
    )
    .await;
    queued_with(
        &store,
        "urgent",
        &request("general", Priority::Urgent, 0.0),
        4_000,
    )
    .await;
    // A low-priority conversation that lost its agent goes before everything.
    queued_with(&store, "head", &request("general", Priority::Low, 0.0), 600).await;
    assert!(assign(&store, "head", "agent-maya", 700).await);
    assert!(
        release(
            &store,
            "head",
            "agent-maya",
            Release::Requeue {
                at_head: true,
                skill: None
            },
            5_000
        )
        .await
    );
    queued_with(&store, "held", &normal, 100).await;
    assert!(assign(&store, "held", "agent-maya", 200).await);

    let expected = [
        "head",
        "urgent",
        "frustrated-normal",
        "old-normal",
        "twin-a",
        "twin-b",
        "new-normal",
        "low",
    ];
    assert_eq!(ids_in(&store, &[ConversationState::Queued]).await, expected);
    assert_eq!(
        ids_in(&store, &[ConversationState::Assigned]).await,
        ["held"]
    );
    let both = ids_in(
        &store,
        &[ConversationState::Queued, ConversationState::Assigned],
    )
    .await;
    assert_eq!(both.len(), expected.len() + 1);
    assert!(both.contains(&"held".to_string()));
}

// ---------------------------------------------------------------------------------------------
// Offers and assignments

async fn assigning_directly_or_by_offer_takes_capacity(backend: Backend) {
    let store = backend.open().await;
    create_agent(&store, "agent-maya", 3).await;
    create_agent(&store, "agent-alex", 3).await;
    queued(&store, "conv-direct", 1_000).await;
    queued(&store, "conv-offer", 1_100).await;

    assert!(assign(&store, "conv-direct", "agent-maya", 10_000).await);
    let direct = handoff(&store, "conv-direct").await;
    assert_eq!(direct.state, ConversationState::Assigned);
    assert_eq!(direct.agent_id.as_deref(), Some("agent-maya"));
    assert_eq!(direct.assigned_at, Some(10_000));
    assert_eq!(direct.offer_expires_at, None);
    assert_eq!(
        direct.queued_at, 1_000,
        "the queue time stays for reporting"
    );
    assert_eq!(
        store
            .get_conversation("conv-direct")
            .await
            .expect("get")
            .expect("exists")
            .state,
        ConversationState::Assigned
    );
    assert_eq!(active(&store, "agent-maya").await, 1);
    assert_eq!(
        event_kinds(&store, "conv-direct").await,
        ["queued", "assigned"]
    );

    // Taken already: refused, and nothing of the attempt is written.
    assert!(!assign(&store, "conv-direct", "agent-alex", 11_000).await);
    assert_eq!(handoff(&store, "conv-direct").await, direct);
    assert_eq!(active(&store, "agent-alex").await, 0);
    assert_eq!(
        event_kinds(&store, "conv-direct").await,
        ["queued", "assigned"]
    );

    let offered = store
        .assign(
            "conv-offer",
            "agent-maya",
            Some(40_000),
            20_000,
            &event("offered"),
        )
        .await
        .expect("offer");
    assert!(offered);
    let offer = handoff(&store, "conv-offer").await;
    assert_eq!(offer.state, ConversationState::Offered);
    assert_eq!(offer.agent_id.as_deref(), Some("agent-maya"));
    assert_eq!(offer.offer_expires_at, Some(40_000));
    assert_eq!(
        active(&store, "agent-maya").await,
        2,
        "an offer holds capacity too"
    );
    assert_eq!(
        event_kinds(&store, "conv-offer").await,
        ["queued", "offered"]
    );

    let held: Vec<_> = store
        .agent_handoffs("agent-maya")
        .await
        .expect("agent handoffs")
        .into_iter()
        .map(|handoff| (handoff.conversation_id, handoff.state))
        .collect();
    assert_eq!(
        held,
        [
            ("conv-direct".to_string(), ConversationState::Assigned),
            ("conv-offer".to_string(), ConversationState::Offered),
        ],
        "oldest first"
    );
    assert!(store
        .agent_handoffs("agent-alex")
        .await
        .expect("agent handoffs")
        .is_empty());
    assert_eq!(
        ids_in(&store, &[ConversationState::Offered]).await,
        ["conv-offer"]
    );
}

async fn only_the_offered_agent_accepts_an_offer(backend: Backend) {
    let store = backend.open().await;
    create_agent(&store, "agent-maya", 2).await;
    create_agent(&store, "agent-alex", 2).await;
    queued(&store, "conv-offer", 1_000).await;
    queued(&store, "conv-direct", 1_000).await;
    assert!(store
        .assign(
            "conv-offer",
            "agent-maya",
            Some(40_000),
            20_000,
            &event("offered")
        )
        .await
        .expect("offer"));
    assert!(assign(&store, "conv-direct", "agent-maya", 20_000).await);
    let offer = handoff(&store, "conv-offer").await;

    let by_other = store
        .accept_offer("conv-offer", "agent-alex", 21_000, &event("accepted"))
        .await
        .expect("accept by another agent");
    assert!(!by_other);
    assert_eq!(handoff(&store, "conv-offer").await, offer, "unchanged");
    let not_offered = store
        .accept_offer("conv-direct", "agent-maya", 21_000, &event("accepted"))
        .await
        .expect("accept an assignment");
    assert!(!not_offered);
    assert_eq!(
        event_kinds(&store, "conv-offer").await,
        ["queued", "offered"]
    );
    assert_eq!(
        event_kinds(&store, "conv-direct").await,
        ["queued", "assigned"]
    );

    let accepted = store
        .accept_offer("conv-offer", "agent-maya", 25_000, &event("accepted"))
        .await
        .expect("accept");
    assert!(accepted);
    let assigned = handoff(&store, "conv-offer").await;
    assert_eq!(assigned.state, ConversationState::Assigned);
    assert_eq!(assigned.agent_id.as_deref(), Some("agent-maya"));
    assert_eq!(assigned.offer_expires_at, None);
    assert_eq!(assigned.assigned_at, Some(25_000), "assigned when accepted");
    assert_eq!(
        active(&store, "agent-maya").await,
        2,
        "accepting takes no more capacity"
    );
    assert_eq!(active(&store, "agent-alex").await, 0);
    assert_eq!(
        event_kinds(&store, "conv-offer").await,
        ["queued", "offered", "accepted"]
    );

    let again = store
        .accept_offer("conv-offer", "agent-maya", 26_000, &event("accepted"))
        .await
        .expect("accept twice");
    assert!(!again, "no longer an offer");
    assert_eq!(
        event_kinds(&store, "conv-offer").await,
        ["queued", "offered", "accepted"]
    );
}

async fn capacity_is_enforced(backend: Backend) {
    let store = backend.open().await;
    create_agent(&store, "agent-solo", 1).await;
    queued(&store, "conv-1", 1_000).await;
    queued(&store, "conv-2", 1_000).await;

    assert!(assign(&store, "conv-1", "agent-solo", 2_000).await);
    let full = store
        .assign(
            "conv-2",
            "agent-solo",
            Some(9_000),
            2_000,
            &event("offered"),
        )
        .await
        .expect("offer to a full agent");
    assert!(!full, "an offer needs capacity too");
    assert!(!assign(&store, "conv-2", "agent-solo", 2_000).await);
    let waiting = handoff(&store, "conv-2").await;
    assert_eq!(
        waiting.state,
        ConversationState::Queued,
        "the claim was rolled back"
    );
    assert_eq!(waiting.agent_id, None);
    assert_eq!(waiting.assigned_at, None);
    assert_eq!(event_kinds(&store, "conv-2").await, ["queued"]);
    assert_eq!(active(&store, "agent-solo").await, 1);

    // A capacity below the current load is allowed; the agent just gets nothing new.
    let lowered = store
        .update_agent(
            "agent-solo",
            &AgentUpdate {
                capacity: Some(0),
                ..AgentUpdate::default()
            },
        )
        .await
        .expect("lower capacity");
    assert_eq!((lowered.capacity, lowered.active), (0, 1));
    assert!(release(&store, "conv-1", "agent-solo", Release::Resolve, 3_000).await);
    assert_eq!(active(&store, "agent-solo").await, 0);
    assert!(
        !assign(&store, "conv-2", "agent-solo", 3_000).await,
        "capacity 0 takes nothing"
    );

    store
        .update_agent(
            "agent-solo",
            &AgentUpdate {
                capacity: Some(1),
                ..AgentUpdate::default()
            },
        )
        .await
        .expect("raise capacity");
    assert!(assign(&store, "conv-2", "agent-solo", 4_000).await);
    assert_eq!(active(&store, "agent-solo").await, 1);
}

async fn releasing_requeues_resolves_or_hands_back(backend: Backend) {
    let store = backend.open().await;
    create_agent(&store, "agent-maya", 5).await;
    create_agent(&store, "agent-alex", 5).await;
    queued(&store, "conv-1", 1_000).await;
    assert!(assign(&store, "conv-1", "agent-maya", 2_000).await);
    store
        .record_customer_waiting("conv-1", 2_500)
        .await
        .expect("waiting");

    assert!(
        !release(&store, "conv-1", "agent-alex", Release::Resolve, 2_600).await,
        "only the holder releases"
    );
    assert_eq!(
        handoff(&store, "conv-1").await.state,
        ConversationState::Assigned
    );

    // Lost agent: to the head of the queue, counted as a reassignment.
    assert!(
        release(
            &store,
            "conv-1",
            "agent-maya",
            Release::Requeue {
                at_head: true,
                skill: None
            },
            3_000
        )
        .await
    );
    let requeued = handoff(&store, "conv-1").await;
    assert_eq!(requeued.state, ConversationState::Queued);
    assert_eq!(requeued.agent_id, None);
    assert_eq!(requeued.assigned_at, None);
    assert!(requeued.at_head);
    assert_eq!(requeued.reassignments, 1);
    assert_eq!(requeued.queued_at, 3_000, "waits from now");
    assert_eq!(requeued.skill, "general");
    assert_eq!(
        requeued.waiting_since,
        Some(2_500),
        "the customer is still waiting"
    );
    assert_eq!(active(&store, "agent-maya").await, 0);

    // The next agent's reply deadline counts from when they get it.
    assert!(assign(&store, "conv-1", "agent-alex", 4_000).await);
    assert_eq!(handoff(&store, "conv-1").await.waiting_since, Some(4_000));

    // Declined or transferred to a team: the usual order, optionally another skill.
    assert!(
        release(
            &store,
            "conv-1",
            "agent-alex",
            Release::Requeue {
                at_head: false,
                skill: Some("tech".to_string())
            },
            5_000
        )
        .await
    );
    let to_tech = handoff(&store, "conv-1").await;
    assert_eq!(to_tech.state, ConversationState::Queued);
    assert!(!to_tech.at_head);
    assert_eq!(to_tech.reassignments, 1, "not a reassignment");
    assert_eq!(to_tech.skill, "tech");
    assert_eq!(to_tech.queued_at, 5_000);
    assert_eq!(active(&store, "agent-alex").await, 0);

    assert!(assign(&store, "conv-1", "agent-maya", 6_000).await);
    assert!(release(&store, "conv-1", "agent-maya", Release::Resolve, 7_000).await);
    let resolved = handoff(&store, "conv-1").await;
    assert_eq!(resolved.state, ConversationState::Resolved);
    assert_eq!(resolved.agent_id, None);
    assert_eq!(resolved.offer_expires_at, None);
    assert_eq!(
        resolved.waiting_since, None,
        "nobody is waiting for an agent any more"
    );
    assert_eq!(
        store
            .get_conversation("conv-1")
            .await
            .expect("get")
            .expect("exists")
            .state,
        ConversationState::Resolved
    );
    assert_eq!(active(&store, "agent-maya").await, 0);
    assert!(
        !release(&store, "conv-1", "agent-maya", Release::Resolve, 7_500).await,
        "already let go"
    );

    queued(&store, "conv-2", 1_000).await;
    assert!(store
        .assign(
            "conv-2",
            "agent-maya",
            Some(9_000),
            8_000,
            &event("offered")
        )
        .await
        .expect("offer"));
    assert_eq!(active(&store, "agent-maya").await, 1);
    assert!(
        release(&store, "conv-2", "agent-maya", Release::HandBack, 8_500).await,
        "an offer is released too"
    );
    let handed_back = handoff(&store, "conv-2").await;
    assert_eq!(handed_back.state, ConversationState::Bot);
    assert_eq!(handed_back.agent_id, None);
    assert_eq!(handed_back.offer_expires_at, None);
    assert_eq!(
        store
            .get_conversation("conv-2")
            .await
            .expect("get")
            .expect("exists")
            .state,
        ConversationState::Bot
    );
    assert_eq!(active(&store, "agent-maya").await, 0);

    assert_eq!(
        event_kinds(&store, "conv-1").await,
        ["queued", "assigned", "released", "assigned", "released", "assigned", "released"]
    );
    assert_eq!(
        event_kinds(&store, "conv-2").await,
        ["queued", "offered", "released"]
    );
}

async fn active_never_goes_below_zero(backend: Backend) {
    let store = backend.open().await;
    let raw = backend.raw().await;
    create_agent(&store, "agent-maya", 2).await;
    queued(&store, "conv-1", 1_000).await;
    assert!(assign(&store, "conv-1", "agent-maya", 2_000).await);
    // A counter gone wrong (edited by hand) heals rather than turning negative.
    sqlx::query("UPDATE agents SET active = 0 WHERE id = $1")
        .bind("agent-maya")
        .execute(&raw)
        .await
        .expect("break the counter");
    assert!(release(&store, "conv-1", "agent-maya", Release::Resolve, 3_000).await);
    assert_eq!(active(&store, "agent-maya").await, 0);
}

async fn transfers_move_one_unit_of_capacity_atomically(backend: Backend) {
    let store = backend.open().await;
    create_agent(&store, "agent-maya", 2).await;
    create_agent(&store, "agent-alex", 1).await;
    create_agent(&store, "agent-sam", 1).await;
    create_agent(&store, "agent-kim", 1).await;
    queued(&store, "conv-1", 1_000).await;
    queued(&store, "conv-2", 1_000).await;
    queued(&store, "conv-3", 1_000).await;
    assert!(assign(&store, "conv-1", "agent-maya", 2_000).await);
    assert!(assign(&store, "conv-2", "agent-alex", 2_000).await);
    let shared = &store;
    let transfer = move |conversation: &'static str,
                         from: &'static str,
                         to: &'static str,
                         now: Millis| async move {
        shared
            .transfer_to_agent(conversation, from, to, now, &event("transferred"))
            .await
    };

    let before = handoff(&store, "conv-1").await;
    assert!(!transfer("conv-1", "agent-maya", "agent-alex", 3_000)
        .await
        .expect("to a full agent"));
    assert_eq!(handoff(&store, "conv-1").await, before, "nothing moved");
    assert_eq!(
        active(&store, "agent-maya").await,
        1,
        "the source keeps its unit"
    );
    assert_eq!(active(&store, "agent-alex").await, 1);
    assert!(!transfer("conv-1", "agent-alex", "agent-sam", 3_000)
        .await
        .expect("from a non-holder"));
    assert_eq!(active(&store, "agent-sam").await, 0);
    assert_eq!(event_kinds(&store, "conv-1").await, ["queued", "assigned"]);

    assert!(transfer("conv-1", "agent-maya", "agent-sam", 4_000)
        .await
        .expect("transfer"));
    let moved = handoff(&store, "conv-1").await;
    assert_eq!(moved.state, ConversationState::Assigned);
    assert_eq!(moved.agent_id.as_deref(), Some("agent-sam"));
    assert_eq!(moved.assigned_at, Some(4_000));
    assert_eq!(active(&store, "agent-maya").await, 0);
    assert_eq!(active(&store, "agent-sam").await, 1);
    assert_eq!(
        event_kinds(&store, "conv-1").await,
        ["queued", "assigned", "transferred"]
    );

    // An offer can be passed on as well; it arrives assigned.
    assert!(store
        .assign(
            "conv-3",
            "agent-maya",
            Some(9_000),
            5_000,
            &event("offered")
        )
        .await
        .expect("offer"));
    assert!(transfer("conv-3", "agent-maya", "agent-kim", 6_000)
        .await
        .expect("transfer an offer"));
    let passed = handoff(&store, "conv-3").await;
    assert_eq!(passed.state, ConversationState::Assigned);
    assert_eq!(passed.agent_id.as_deref(), Some("agent-kim"));
    assert_eq!(passed.offer_expires_at, None);
    assert_eq!(active(&store, "agent-maya").await, 0);
    assert_eq!(active(&store, "agent-kim").await, 1);

    let unknown = transfer("conv-1", "agent-sam", "agent-nobody", 7_000).await;
    assert!(
        matches!(&unknown, Err(StoreError::AgentNotFound(id)) if id == "agent-nobody"),
        "{unknown:?}"
    );
    assert_eq!(handoff(&store, "conv-1").await, moved, "rolled back");
    assert_eq!(active(&store, "agent-sam").await, 1);
}

async fn opposite_transfers_between_two_agents_do_not_deadlock(backend: Backend) {
    const ROUNDS: usize = 15;
    let store = Arc::new(backend.open().await);
    create_agent(&store, "agent-a", 2).await;
    create_agent(&store, "agent-b", 2).await;
    queued(&store, "conv-1", 1_000).await;
    queued(&store, "conv-2", 1_000).await;
    assert!(assign(&store, "conv-1", "agent-a", 2_000).await);
    assert!(assign(&store, "conv-2", "agent-b", 2_000).await);
    let mut holders = [("conv-1", "agent-a"), ("conv-2", "agent-b")];
    for round in 0..ROUNDS {
        let start = Arc::new(Barrier::new(2));
        let tasks: Vec<_> = holders
            .iter()
            .map(|&(conversation, from)| {
                let store = Arc::clone(&store);
                let start = Arc::clone(&start);
                let to = if from == "agent-a" {
                    "agent-b"
                } else {
                    "agent-a"
                };
                tokio::spawn(async move {
                    start.wait().await;
                    store
                        .transfer_to_agent(conversation, from, to, 3_000, &event("transferred"))
                        .await
                })
            })
            .collect();
        for task in tasks {
            let moved = task
                .await
                .expect("transfer task")
                .unwrap_or_else(|error| panic!("round {round}: {error}"));
            assert!(moved, "round {round}: both agents have room");
        }
        for holder in &mut holders {
            holder.1 = if holder.1 == "agent-a" {
                "agent-b"
            } else {
                "agent-a"
            };
            assert_eq!(
                handoff(&store, holder.0).await.agent_id.as_deref(),
                Some(holder.1)
            );
        }
        assert_eq!(active(&store, "agent-a").await, 1);
        assert_eq!(active(&store, "agent-b").await, 1);
    }
}

async fn queued_conversations_are_closed_or_handed_back(backend: Backend) {
    let store = backend.open().await;
    create_agent(&store, "agent-maya", 2).await;
    queued(&store, "conv-resolve", 1_000).await;
    queued(&store, "conv-back", 1_000).await;
    queued(&store, "conv-held", 1_000).await;
    assert!(assign(&store, "conv-held", "agent-maya", 2_000).await);
    let shared = &store;
    let close = move |conversation: &'static str, to: Release| async move {
        shared
            .close_queued(conversation, &to, 3_000, &event("closed"))
            .await
            .unwrap_or_else(|error| panic!("closing {conversation}: {error}"))
    };

    assert!(close("conv-resolve", Release::Resolve).await);
    assert_eq!(
        handoff(&store, "conv-resolve").await.state,
        ConversationState::Resolved
    );
    assert!(
        !close("conv-resolve", Release::Resolve).await,
        "no longer queued"
    );
    assert_eq!(
        event_kinds(&store, "conv-resolve").await,
        ["queued", "closed"]
    );

    assert!(close("conv-back", Release::HandBack).await);
    assert_eq!(
        store
            .get_conversation("conv-back")
            .await
            .expect("get")
            .expect("exists")
            .state,
        ConversationState::Bot
    );

    let held = handoff(&store, "conv-held").await;
    assert!(
        !close("conv-held", Release::Resolve).await,
        "an agent holds it"
    );
    assert_eq!(handoff(&store, "conv-held").await, held);
    assert_eq!(active(&store, "agent-maya").await, 1);
    assert_eq!(
        event_kinds(&store, "conv-held").await,
        ["queued", "assigned"]
    );

    // Requeueing a queued conversation moves it to another team.
    queued(&store, "conv-team", 1_000).await;
    assert!(
        close(
            "conv-team",
            Release::Requeue {
                at_head: false,
                skill: Some("tech".to_string())
            }
        )
        .await
    );
    let moved = handoff(&store, "conv-team").await;
    assert_eq!(
        (moved.state, moved.skill.as_str()),
        (ConversationState::Queued, "tech")
    );
}

async fn enqueue_only_queues_conversations_outside_the_queue(backend: Backend) {
    let store = backend.open().await;
    create_agent(&store, "agent-maya", 2).await;
    store
        .create_conversation("conv-1", "hash")
        .await
        .expect("create");
    let billing = request("billing", Priority::High, 0.75);
    assert!(store
        .enqueue("conv-1", &billing, 1_000, &event("queued"))
        .await
        .expect("enqueue"));
    let entered = handoff(&store, "conv-1").await;
    assert_eq!(entered.state, ConversationState::Queued);
    assert_eq!(entered.skill, "billing");
    assert_eq!(entered.priority, Priority::High);
    assert_eq!(entered.frustration, 0.75);
    assert_eq!(entered.queued_at, 1_000);

    assert!(!store
        .enqueue(
            "conv-1",
            &request("tech", Priority::Low, 0.0),
            2_000,
            &event("queued")
        )
        .await
        .expect("enqueue while queued"));
    assert_eq!(handoff(&store, "conv-1").await, entered, "unchanged");
    assert!(assign(&store, "conv-1", "agent-maya", 3_000).await);
    assert!(!store
        .enqueue("conv-1", &billing, 4_000, &event("queued"))
        .await
        .expect("enqueue while assigned"));
    assert_eq!(
        handoff(&store, "conv-1").await.agent_id.as_deref(),
        Some("agent-maya")
    );
    assert_eq!(event_kinds(&store, "conv-1").await, ["queued", "assigned"]);

    assert!(release(&store, "conv-1", "agent-maya", Release::HandBack, 5_000).await);
    assert!(store
        .enqueue("conv-1", &billing, 6_000, &event("queued"))
        .await
        .expect("enqueue after hand back"));
    assert_eq!(handoff(&store, "conv-1").await.queued_at, 6_000);
}

async fn agent_replies_and_customer_waits_are_recorded(backend: Backend) {
    let store = backend.open().await;
    create_agent(&store, "agent-maya", 2).await;
    queued(&store, "conv-1", 500).await;
    assert!(assign(&store, "conv-1", "agent-maya", 600).await);

    store
        .record_customer_waiting("conv-1", 1_000)
        .await
        .expect("waiting");
    store
        .record_customer_waiting("conv-1", 2_000)
        .await
        .expect("still waiting");
    assert_eq!(
        handoff(&store, "conv-1").await.waiting_since,
        Some(1_000),
        "set once"
    );

    store
        .record_agent_reply("conv-1", 3_000)
        .await
        .expect("reply");
    let answered = handoff(&store, "conv-1").await;
    assert_eq!(answered.first_response_at, Some(3_000));
    assert_eq!(answered.waiting_since, None);

    store
        .record_customer_waiting("conv-1", 4_000)
        .await
        .expect("waiting again");
    assert_eq!(handoff(&store, "conv-1").await.waiting_since, Some(4_000));
    store
        .record_agent_reply("conv-1", 5_000)
        .await
        .expect("second reply");
    let answered_again = handoff(&store, "conv-1").await;
    assert_eq!(
        answered_again.first_response_at,
        Some(3_000),
        "only the first reply counts"
    );
    assert_eq!(answered_again.waiting_since, None);

    // Back with the bot: nobody to wait for.
    assert!(release(&store, "conv-1", "agent-maya", Release::HandBack, 6_000).await);
    store
        .record_customer_waiting("conv-1", 7_000)
        .await
        .expect("waiting on the bot");
    assert_eq!(handoff(&store, "conv-1").await.waiting_since, None);
}

async fn an_agent_reply_is_stored_with_its_bookkeeping(backend: Backend) {
    let store = backend.open().await;
    create_agent(&store, "agent-maya", 2).await;
    queued(&store, "conv-1", 500).await;
    assert!(assign(&store, "conv-1", "agent-maya", 600).await);
    store
        .record_customer_waiting("conv-1", 1_000)
        .await
        .expect("waiting");
    let reply = NewMessage {
        role: Role::Agent,
        text: "Hi, I'm Maya".into(),
        author_id: Some("agent-maya".into()),
        kind: None,
        meta: Some(serde_json::json!({"author": "Maya"})),
    };
    let stored = store
        .insert_agent_reply("conv-1", "agent-maya", &reply, 2_000)
        .await
        .expect("reply")
        .expect("maya holds the conversation");
    assert_eq!(
        (stored.role, stored.text.as_str()),
        (Role::Agent, "Hi, I'm Maya")
    );
    assert_eq!(stored.author_id.as_deref(), Some("agent-maya"));
    assert_eq!(stored.meta, Some(serde_json::json!({"author": "Maya"})));
    let answered = handoff(&store, "conv-1").await;
    assert_eq!(answered.first_response_at, Some(2_000));
    assert_eq!(answered.waiting_since, None);
    let missing = store
        .insert_agent_reply("conv-nobody", "agent-maya", &reply, 3_000)
        .await;
    assert!(
        matches!(missing, Err(StoreError::ConversationNotFound(_))),
        "{missing:?}"
    );

    // Only the holder of an assigned conversation writes in it: checked when the reply commits,
    // so a transfer or hand-back that lands first refuses the reply and stores nothing.
    create_agent(&store, "agent-sam", 2).await;
    let not_the_holder = store
        .insert_agent_reply("conv-1", "agent-sam", &reply, 3_000)
        .await
        .expect("a refusal is not an error");
    assert_eq!(not_the_holder, None);
    assert!(release(&store, "conv-1", "agent-maya", Release::HandBack, 4_000).await);
    let handed_back = store
        .insert_agent_reply("conv-1", "agent-maya", &reply, 5_000)
        .await
        .expect("a refusal is not an error");
    assert_eq!(handed_back, None);
    // Neither refusal stored anything or touched the bookkeeping.
    assert_eq!(
        store
            .list_messages("conv-1", None, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        handoff(&store, "conv-1").await.first_response_at,
        Some(2_000)
    );
}

/// Agent replies sent at the same moment (SQLite commits them together): each sender gets its own
/// outcome, and refused ones store nothing.
async fn concurrent_agent_replies_each_get_their_own_outcome(backend: Backend) {
    let store = Arc::new(backend.open().await);
    create_agent(&store, "agent-maya", 5).await;
    create_agent(&store, "agent-sam", 5).await;
    for conversation in 0..3 {
        let conversation_id = format!("conv-{conversation}");
        queued(&store, &conversation_id, 500).await;
        assert!(assign(&store, &conversation_id, "agent-maya", 600).await);
    }
    // (conversation, agent, text): maya holds conv-0..2; sam holds none; conv-nobody is unknown.
    let sends = [
        ("conv-0", "agent-maya", "first to 0"),
        ("conv-1", "agent-sam", "sam to 1"),
        ("conv-1", "agent-maya", "maya to 1"),
        ("conv-nobody", "agent-maya", "to nobody"),
        ("conv-2", "agent-maya", "maya to 2"),
    ];
    let start = Arc::new(Barrier::new(sends.len()));
    let tasks: Vec<_> = sends
        .iter()
        .map(|&(conversation_id, agent_id, text)| {
            let store = Arc::clone(&store);
            let start = Arc::clone(&start);
            let reply = NewMessage {
                role: Role::Agent,
                text: text.into(),
                author_id: Some(agent_id.into()),
                kind: None,
                meta: Some(json!({"author": agent_id})),
            };
            tokio::spawn(async move {
                start.wait().await;
                store
                    .insert_agent_reply(conversation_id, agent_id, &reply, 2_000)
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    for ((conversation_id, agent_id, text), outcome) in sends.iter().zip(outcomes) {
        match (*conversation_id, *agent_id) {
            ("conv-nobody", _) => assert!(
                matches!(outcome, Err(StoreError::ConversationNotFound(_))),
                "{outcome:?}"
            ),
            (_, "agent-sam") => assert_eq!(outcome.expect("a refusal is not an error"), None),
            _ => {
                let stored = outcome.expect("stored").expect("maya holds it");
                assert_eq!(stored.text, *text);
                assert_eq!(stored.conversation_id, *conversation_id);
                assert_eq!(stored.author_id.as_deref(), Some("agent-maya"));
                assert_eq!(stored.meta, Some(json!({"author": "agent-maya"})));
                let messages = store
                    .list_messages(conversation_id, None, 100)
                    .await
                    .expect("list");
                let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
                assert_eq!(texts, [*text], "only the holder's reply is stored");
                assert_eq!(messages[0].id, stored.id);
                assert_eq!(
                    handoff(&store, conversation_id).await.first_response_at,
                    Some(2_000)
                );
            }
        }
    }
}

async fn contact_details_are_stored_with_their_event(backend: Backend) {
    let store = backend.open().await;
    queued(&store, "conv-1", 1_000).await;
    store
        .set_contact(
            "conv-1",
            "ana@example.com",
            "Please call after 5pm",
            &event("contact_left"),
        )
        .await
        .expect("set contact");
    let left = handoff(&store, "conv-1").await;
    assert_eq!(left.contact_email.as_deref(), Some("ana@example.com"));
    assert_eq!(left.contact_note.as_deref(), Some("Please call after 5pm"));
    assert_eq!(left.state, ConversationState::Queued, "still in the queue");
    let events = store
        .list_events(Some("conv-1"), None, 100)
        .await
        .expect("events");
    let last = events.last().expect("an event");
    assert_eq!(last.kind, "contact_left");
    assert_eq!(last.payload, json!({ "kind": "contact_left" }));
}

async fn webhook_cursors_start_at_zero_and_persist(backend: Backend) {
    let store = backend.open().await;
    assert_eq!(store.webhook_cursor("crm").await.expect("cursor"), 0);
    store.set_webhook_cursor("crm", 5).await.expect("set");
    store.set_webhook_cursor("crm", 9).await.expect("set again");
    store
        .set_webhook_cursor("chat-ops", 2)
        .await
        .expect("set other");
    assert_eq!(store.webhook_cursor("crm").await.expect("cursor"), 9);
    store.close().await;

    let reopened = backend.open().await;
    assert_eq!(reopened.webhook_cursor("crm").await.expect("cursor"), 9);
    assert_eq!(
        reopened.webhook_cursor("chat-ops").await.expect("cursor"),
        2
    );
    assert_eq!(
        reopened.webhook_cursor("never-seen").await.expect("cursor"),
        0
    );
}

async fn unknown_conversations_and_agents_are_reported(backend: Backend) {
    let store = backend.open().await;
    create_agent(&store, "agent-maya", 2).await;
    queued(&store, "conv-1", 1_000).await;
    fn is_missing_conversation<T: std::fmt::Debug>(outcome: Result<T, StoreError>, what: &str) {
        assert!(
            matches!(&outcome, Err(StoreError::ConversationNotFound(id)) if id == "conv-nobody"),
            "{what}: {outcome:?}"
        );
    }
    let general = request("general", Priority::Normal, 0.0);
    let drafted = event("x");
    is_missing_conversation(
        store.enqueue("conv-nobody", &general, 1, &drafted).await,
        "enqueue",
    );
    is_missing_conversation(
        store
            .assign("conv-nobody", "agent-maya", None, 1, &drafted)
            .await,
        "assign",
    );
    is_missing_conversation(
        store
            .accept_offer("conv-nobody", "agent-maya", 1, &drafted)
            .await,
        "accept",
    );
    is_missing_conversation(
        store
            .transfer_to_agent("conv-nobody", "agent-maya", "agent-maya", 1, &drafted)
            .await,
        "transfer",
    );
    is_missing_conversation(
        store
            .release("conv-nobody", "agent-maya", &Release::Resolve, 1, &drafted)
            .await,
        "release",
    );
    is_missing_conversation(
        store
            .close_queued("conv-nobody", &Release::Resolve, 1, &drafted)
            .await,
        "close",
    );
    is_missing_conversation(store.record_agent_reply("conv-nobody", 1).await, "reply");
    is_missing_conversation(
        store.record_customer_waiting("conv-nobody", 1).await,
        "waiting",
    );
    is_missing_conversation(
        store
            .set_contact("conv-nobody", "a@b.c", "n", &drafted)
            .await,
        "contact",
    );

    let nobody = store
        .assign("conv-1", "agent-nobody", None, 2_000, &drafted)
        .await;
    assert!(
        matches!(&nobody, Err(StoreError::AgentNotFound(id)) if id == "agent-nobody"),
        "{nobody:?}"
    );
    let still = handoff(&store, "conv-1").await;
    assert_eq!(
        (still.state, still.agent_id),
        (ConversationState::Queued, None),
        "rolled back"
    );
    assert_eq!(event_kinds(&store, "conv-1").await, ["queued"]);
    assert!(store
        .list_events(None, None, 100)
        .await
        .expect("events")
        .iter()
        .all(|e| e.kind != "x"));
}

async fn corrupt_handoff_data_is_reported_as_corrupt(backend: Backend) {
    let store = backend.open().await;
    let raw = backend.raw().await;
    async fn corrupt(raw: &AnyPool, sql: &'static str, bind: &str) {
        let changed = sqlx::query(sql)
            .bind(bind)
            .execute(raw)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
        assert_eq!(changed.rows_affected(), 1, "{sql}");
    }
    fn assert_corrupt<T: std::fmt::Debug>(outcome: Result<T, StoreError>, what: &str) {
        assert!(
            matches!(outcome, Err(StoreError::Corrupt(_))),
            "{what}: {outcome:?}"
        );
    }

    create_agent(&store, "agent-skills", 1).await;
    corrupt(
        &raw,
        "UPDATE agents SET skills = '[\"tech\"' WHERE id = $1",
        "agent-skills",
    )
    .await;
    assert_corrupt(store.get_agent("agent-skills").await, "skills on get");
    assert_corrupt(store.list_agents().await, "skills on list");
    corrupt(
        &raw,
        "UPDATE agents SET skills = '[]', status = 'dancing' WHERE id = $1",
        "agent-skills",
    )
    .await;
    assert_corrupt(
        store.find_agent_by_name("name-of-agent-skills").await,
        "unknown status",
    );

    queued(&store, "conv-reasons", 1_000).await;
    corrupt(
        &raw,
        "UPDATE conversations SET handoff_reasons = '{' WHERE id = $1",
        "conv-reasons",
    )
    .await;
    assert_corrupt(store.get_handoff("conv-reasons").await, "reasons on get");
    assert_corrupt(
        store.list_handoffs(&[ConversationState::Queued]).await,
        "reasons on list",
    );
    corrupt(
        &raw,
        "UPDATE conversations SET handoff_reasons = '[]', priority = 9 WHERE id = $1",
        "conv-reasons",
    )
    .await;
    assert_corrupt(store.get_handoff("conv-reasons").await, "unknown priority");
    corrupt(
        &raw,
        "UPDATE conversations SET priority = 1, queued_at = NULL WHERE id = $1",
        "conv-reasons",
    )
    .await;
    assert_corrupt(
        store.get_handoff("conv-reasons").await,
        "missing queue time",
    );
}

// ---------------------------------------------------------------------------------------------
// Races

async fn racing_assignments_respect_capacity_and_never_double_assign(backend: Backend) {
    const AGENTS: usize = 3;
    const CAPACITY: i64 = 2;
    const CONVERSATIONS: usize = 10;
    const TASKS: usize = 30;
    let store = Arc::new(backend.open().await);
    for agent in 0..AGENTS {
        create_agent(&store, &format!("agent-{agent}"), CAPACITY).await;
    }
    for conversation in 0..CONVERSATIONS {
        queued(&store, &format!("conv-{conversation}"), 1_000).await;
    }

    // Every task works for one agent and tries the conversations from a different starting point
    // until one assignment succeeds. An agent's count only grows, so an agent that ends below
    // capacity was refused only conversations someone else had taken: then all were taken, more
    // than the total capacity. Hence exactly min(conversations, agents * capacity) succeed.
    let start = Arc::new(Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = Arc::clone(&store);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                let agent = format!("agent-{}", task % AGENTS);
                start.wait().await;
                for offset in 0..CONVERSATIONS {
                    let conversation = format!("conv-{}", (task + offset) % CONVERSATIONS);
                    let assigned = store
                        .assign(&conversation, &agent, None, 2_000, &event("assigned"))
                        .await
                        .unwrap_or_else(|error| panic!("task {task}: {error}"));
                    if assigned {
                        return Some((conversation, agent));
                    }
                }
                None
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        winners.extend(task.await.expect("assign task"));
    }

    let expected = CONVERSATIONS.min(AGENTS * CAPACITY as usize);
    assert_eq!(winners.len(), expected, "{winners:?}");
    let won: HashSet<_> = winners
        .iter()
        .map(|(conversation, _)| conversation.clone())
        .collect();
    assert_eq!(
        won.len(),
        winners.len(),
        "no conversation was assigned twice: {winners:?}"
    );
    let mut per_agent: HashMap<String, i64> = HashMap::new();
    for (conversation, agent) in &winners {
        let assigned = handoff(&store, conversation).await;
        assert_eq!(assigned.state, ConversationState::Assigned);
        assert_eq!(assigned.agent_id.as_deref(), Some(agent.as_str()));
        *per_agent.entry(agent.clone()).or_default() += 1;
    }
    for agent in 0..AGENTS {
        let agent = format!("agent-{agent}");
        let held = active(&store, &agent).await;
        assert!(held <= CAPACITY, "{agent} holds {held}");
        assert_eq!(
            held,
            per_agent.get(&agent).copied().unwrap_or(0),
            "{agent}'s counter"
        );
        assert_eq!(
            store.agent_handoffs(&agent).await.expect("held").len() as i64,
            held
        );
    }
    assert_eq!(
        ids_in(&store, &[ConversationState::Queued]).await.len(),
        CONVERSATIONS - expected,
        "the rest is still queued"
    );
    let assigned_events = store
        .list_events(None, None, 1000)
        .await
        .expect("events")
        .into_iter()
        .filter(|event| event.kind == "assigned")
        .count();
    assert_eq!(
        assigned_events, expected,
        "one event per assignment, none for refusals"
    );
}

async fn many_agents_racing_for_one_conversation_have_one_winner(backend: Backend) {
    const AGENTS: usize = 20;
    let store = Arc::new(backend.open().await);
    for agent in 0..AGENTS {
        create_agent(&store, &format!("agent-{agent}"), 1).await;
    }
    queued(&store, "conv-1", 1_000).await;

    let start = Arc::new(Barrier::new(AGENTS));
    let tasks: Vec<_> = (0..AGENTS)
        .map(|agent| {
            let store = Arc::clone(&store);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                let agent = format!("agent-{agent}");
                start.wait().await;
                let assigned = store
                    .assign("conv-1", &agent, None, 2_000, &event("assigned"))
                    .await
                    .unwrap_or_else(|error| panic!("{agent}: {error}"));
                assigned.then_some(agent)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        winners.extend(task.await.expect("assign task"));
    }

    assert_eq!(winners.len(), 1, "{winners:?}");
    let winner = &winners[0];
    assert_eq!(
        handoff(&store, "conv-1").await.agent_id.as_ref(),
        Some(winner)
    );
    for agent in 0..AGENTS {
        let agent = format!("agent-{agent}");
        let expected = i64::from(&agent == winner);
        assert_eq!(active(&store, &agent).await, expected, "{agent}");
    }
    assert_eq!(event_kinds(&store, "conv-1").await, ["queued", "assigned"]);
}
