//! The `Store` contract, run against both backends: SQLite in a temporary directory and
//! PostgreSQL in a throwaway database per test (see `common::pg`). Every test is written once as
//! `async fn name(backend: Backend)`; `contract_tests!` instantiates it as `sqlite::name` and
//! `postgres::name`.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use baton::model::{Chunk, Document, DocumentKind};
use baton::store::{
    ConversationState, CustomerInsert, MessageRecord, NewMessage, Role, Store, StoreError,
    TurnCompletion,
};
use serde_json::json;
use sqlx::AnyPool;
use tokio::sync::Barrier;

use common::backends::Backend;

contract_tests!(
    ping_answers,
    conversations_are_created_read_and_change_state,
    messages_are_listed_in_order_and_resume_after_a_cursor,
    recent_messages_are_the_latest_before_a_message_oldest_first,
    writes_to_an_unknown_conversation_are_refused,
    a_repeated_client_message_id_returns_the_stored_message,
    inserting_a_customer_message_reads_the_conversation_state,
    racing_duplicate_inserts_store_exactly_one_row,
    complete_turn_writes_result_reply_state_and_events_together,
    a_second_completion_of_a_turn_changes_nothing,
    complete_turn_requires_a_customer_message,
    concurrent_completions_each_get_their_own_outcome,
    readers_never_see_a_half_completed_turn,
    events_are_listed_per_conversation_and_after_a_cursor,
    settled_events_never_pass_an_event_still_committing,
    documents_round_trip_with_chunks_in_ordinal_order,
    upserting_a_document_replaces_its_chunks,
    documents_are_found_by_source_and_listed_with_chunk_counts,
    deleting_a_document_removes_its_chunks,
    the_index_encoder_is_recorded_and_replaced,
    data_survives_closing_and_reopening_the_store,
    concurrent_writers_all_succeed,
    corrupt_rows_are_reported_as_corrupt,
);

// ---------------------------------------------------------------------------------------------
// Helpers

fn system_notice(text: &str) -> NewMessage {
    NewMessage::new(Role::System, text)
}

fn completion(
    conversation_id: &str,
    customer_message_id: i64,
    reply: Option<&str>,
    new_state: ConversationState,
    events: Vec<(&str, serde_json::Value)>,
) -> TurnCompletion {
    TurnCompletion {
        conversation_id: conversation_id.to_string(),
        customer_message_id,
        understanding: json!({"intent": "billing.refund", "confidence": 0.91}),
        result: json!({"reply": reply, "state": new_state.as_str()}),
        reply: reply.map(|text| NewMessage::new(Role::Bot, text)),
        new_state,
        enqueue: None,
        events: events
            .into_iter()
            .map(|(kind, payload)| (kind.to_string(), payload))
            .collect(),
    }
}

/// A stored result without the `reply_message_id` the store adds, to compare with what was given.
fn given_result(stored: Option<serde_json::Value>) -> Option<serde_json::Value> {
    stored.map(|mut value| {
        if let Some(object) = value.as_object_mut() {
            object.remove("reply_message_id");
        }
        value
    })
}

fn new_message(insert: CustomerInsert) -> MessageRecord {
    match insert {
        CustomerInsert::New(message) => message,
        CustomerInsert::Existing(message) => {
            panic!("expected a new message, got existing {message:?}")
        }
    }
}

fn existing_message(insert: CustomerInsert) -> MessageRecord {
    match insert {
        CustomerInsert::Existing(message) => message,
        CustomerInsert::New(message) => panic!("expected an existing message, got new {message:?}"),
    }
}

fn document(source: &str, title: &str, kind: DocumentKind, chunk_texts: &[&str]) -> Document {
    let id = format!("doc:{source}");
    let url = Some(format!("https://help.example.com/{source}"));
    let chunks = chunk_texts
        .iter()
        .enumerate()
        .map(|(ordinal, text)| Chunk {
            id: format!("{id}#{ordinal}:{text}"),
            document_id: id.clone(),
            ordinal: u32::try_from(ordinal).expect("few chunks"),
            title: title.to_string(),
            heading_path: vec![title.to_string(), format!("Section {ordinal}")],
            text: text.to_string(),
            question: (kind == DocumentKind::Faq).then(|| format!("Question about {text}?")),
            source: source.to_string(),
            url: url.clone(),
            content_hash: format!("hash-of-{text}"),
        })
        .collect();
    Document {
        id,
        source: source.to_string(),
        title: title.to_string(),
        url,
        kind,
        content_hash: format!("hash-of-{source}-{title}"),
        chunks,
    }
}

async fn count_rows(raw: &AnyPool, sql: &'static str, bind: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(bind)
        .fetch_one(raw)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

// ---------------------------------------------------------------------------------------------
// Conversations and messages

async fn ping_answers(backend: Backend) {
    let store = backend.open().await;
    store.ping().await.expect("ping");
}

async fn conversations_are_created_read_and_change_state(backend: Backend) {
    let store = backend.open().await;
    let created = store
        .create_conversation("conv-1", "token-hash-1")
        .await
        .expect("create");
    assert_eq!(created.id, "conv-1");
    assert_eq!(created.token_hash, "token-hash-1");
    assert_eq!(created.state, ConversationState::Bot);
    assert!(created.created_at > 0);
    assert_eq!(created.updated_at, created.created_at);

    let read = store.get_conversation("conv-1").await.expect("get");
    assert_eq!(read, Some(created.clone()));
    assert_eq!(
        store
            .get_conversation("conv-unknown")
            .await
            .expect("get unknown"),
        None
    );

    store
        .set_conversation_state("conv-1", ConversationState::Queued)
        .await
        .expect("set state");
    let handed_off = store
        .get_conversation("conv-1")
        .await
        .expect("get after state change")
        .expect("still there");
    assert_eq!(handed_off.state, ConversationState::Queued);
    assert_eq!(handed_off.created_at, created.created_at);
    assert!(handed_off.updated_at >= created.updated_at);

    let missing = store
        .set_conversation_state("conv-unknown", ConversationState::Resolved)
        .await;
    assert!(
        matches!(&missing, Err(StoreError::ConversationNotFound(id)) if id == "conv-unknown"),
        "{missing:?}"
    );

    let duplicate = store.create_conversation("conv-1", "another-hash").await;
    match duplicate {
        Err(error @ StoreError::Database { .. }) => {
            assert!(
                error.to_string().contains("creating a conversation"),
                "{error}"
            );
        }
        other => panic!("a duplicate conversation id must fail, got {other:?}"),
    }
}

async fn recent_messages_are_the_latest_before_a_message_oldest_first(backend: Backend) {
    let store = backend.open().await;
    store
        .create_conversation("conv-a", "hash-a")
        .await
        .expect("create a");
    store
        .create_conversation("conv-b", "hash-b")
        .await
        .expect("create b");
    let mut ids = Vec::new();
    for index in 0..6 {
        let message = new_message(
            store
                .insert_customer_message("conv-a", &format!("message {index}"), None)
                .await
                .expect("insert"),
        );
        ids.push(message.id);
        // Another conversation's messages interleave and must never show up.
        store
            .insert_customer_message("conv-b", "elsewhere", None)
            .await
            .expect("insert other");
    }
    let recent = store
        .recent_messages("conv-a", ids[5], 3)
        .await
        .expect("recent");
    let texts: Vec<&str> = recent.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, vec!["message 2", "message 3", "message 4"]);
    let all_before = store
        .recent_messages("conv-a", ids[2], 100)
        .await
        .expect("recent");
    assert_eq!(
        all_before.iter().map(|m| m.id).collect::<Vec<_>>(),
        ids[..2].to_vec()
    );
    assert!(store
        .recent_messages("conv-a", ids[0], 10)
        .await
        .expect("recent")
        .is_empty());
}

async fn messages_are_listed_in_order_and_resume_after_a_cursor(backend: Backend) {
    let store = backend.open().await;
    store
        .create_conversation("conv-a", "hash-a")
        .await
        .expect("create a");
    store
        .create_conversation("conv-b", "hash-b")
        .await
        .expect("create b");

    let first = new_message(
        store
            .insert_customer_message("conv-a", "Where is my parcel?", Some("client-1"))
            .await
            .expect("first"),
    );
    let in_other_conversation = new_message(
        store
            .insert_customer_message("conv-b", "Unrelated", None)
            .await
            .expect("other conversation"),
    );
    let notice = store
        .insert_message("conv-a", system_notice("An agent will join shortly."))
        .await
        .expect("system notice");
    let third = new_message(
        store
            .insert_customer_message("conv-a", "Hello?", None)
            .await
            .expect("third"),
    );

    assert_eq!(first.role, Role::Customer);
    assert_eq!(first.conversation_id, "conv-a");
    assert_eq!(first.client_message_id.as_deref(), Some("client-1"));
    assert_eq!(first.understanding, None);
    assert_eq!(first.result, None);
    assert_eq!(notice.role, Role::System);
    assert_eq!(notice.client_message_id, None);
    assert!(first.id < in_other_conversation.id);
    assert!(in_other_conversation.id < notice.id);
    assert!(notice.id < third.id);

    let all = store
        .list_messages("conv-a", None, 100)
        .await
        .expect("list all");
    assert_eq!(all, vec![first.clone(), notice.clone(), third.clone()]);

    let after_first = store
        .list_messages("conv-a", Some(first.id), 100)
        .await
        .expect("list after first");
    assert_eq!(after_first, vec![notice.clone(), third.clone()]);

    let page = store
        .list_messages("conv-a", None, 2)
        .await
        .expect("first page");
    assert_eq!(page, vec![first.clone(), notice.clone()]);
    let next_page = store
        .list_messages("conv-a", Some(page[1].id), 2)
        .await
        .expect("next page");
    assert_eq!(next_page, vec![third.clone()]);

    assert!(store
        .list_messages("conv-a", Some(third.id), 100)
        .await
        .expect("after the last")
        .is_empty());
    assert_eq!(
        store
            .list_messages("conv-b", None, 100)
            .await
            .expect("list b"),
        vec![in_other_conversation]
    );
    assert!(store
        .list_messages("conv-unknown", None, 100)
        .await
        .expect("unknown conversation lists nothing")
        .is_empty());
}

async fn writes_to_an_unknown_conversation_are_refused(backend: Backend) {
    let store = backend.open().await;
    let customer = store
        .insert_customer_message("conv-ghost", "hi", Some("client-1"))
        .await;
    assert!(
        matches!(&customer, Err(StoreError::ConversationNotFound(id)) if id == "conv-ghost"),
        "{customer:?}"
    );
    let notice = store
        .insert_message("conv-ghost", system_notice("hi"))
        .await;
    assert!(
        matches!(&notice, Err(StoreError::ConversationNotFound(id)) if id == "conv-ghost"),
        "{notice:?}"
    );
    let event = store
        .append_event(Some("conv-ghost"), "handoff.requested", &json!({}))
        .await;
    assert!(
        matches!(&event, Err(StoreError::ConversationNotFound(id)) if id == "conv-ghost"),
        "{event:?}"
    );
    // Nothing was left behind by the refused writes.
    let raw = backend.raw().await;
    assert_eq!(
        count_rows(
            &raw,
            "SELECT COUNT(*) FROM messages WHERE conversation_id = $1",
            "conv-ghost"
        )
        .await,
        0
    );
    assert_eq!(
        count_rows(
            &raw,
            "SELECT COUNT(*) FROM events WHERE conversation_id = $1",
            "conv-ghost"
        )
        .await,
        0
    );
}

/// The engine decides a turn from the state the insert returns (no separate read): it must be the
/// conversation's state at that moment, for a new message and for a repeated one alike. (Who
/// holds it is checked in the handoff store's contract, where agents exist.)
async fn inserting_a_customer_message_reads_the_conversation_state(backend: Backend) {
    let store = backend.open().await;
    store
        .create_conversation("conv-1", "hash-1")
        .await
        .expect("create");
    let (inserted, conversation) = store
        .insert_customer_message_with_state("conv-1", "hello", Some("client-1"))
        .await
        .expect("insert");
    assert!(matches!(inserted, CustomerInsert::New(_)));
    assert_eq!(conversation.state, ConversationState::Bot);
    assert_eq!(conversation.agent_id, None);

    store
        .set_conversation_state("conv-1", ConversationState::Assigned)
        .await
        .expect("assign");
    let (inserted, conversation) = store
        .insert_customer_message_with_state("conv-1", "still there?", None)
        .await
        .expect("insert while assigned");
    assert!(matches!(inserted, CustomerInsert::New(_)));
    assert_eq!(conversation.state, ConversationState::Assigned);
    let (repeated, conversation) = store
        .insert_customer_message_with_state("conv-1", "hello", Some("client-1"))
        .await
        .expect("repeat");
    assert!(matches!(repeated, CustomerInsert::Existing(_)));
    assert_eq!(conversation.state, ConversationState::Assigned);

    let missing = store
        .insert_customer_message_with_state("conv-ghost", "hi", None)
        .await;
    assert!(
        matches!(missing, Err(StoreError::ConversationNotFound(ref id)) if id == "conv-ghost"),
        "{missing:?}"
    );
}

async fn a_repeated_client_message_id_returns_the_stored_message(backend: Backend) {
    let store = backend.open().await;
    store
        .create_conversation("conv-1", "hash-1")
        .await
        .expect("create 1");
    store
        .create_conversation("conv-2", "hash-2")
        .await
        .expect("create 2");

    let original = new_message(
        store
            .insert_customer_message("conv-1", "I want a refund", Some("client-7"))
            .await
            .expect("original"),
    );
    let updated_at_after_original = store
        .get_conversation("conv-1")
        .await
        .expect("get")
        .expect("exists")
        .updated_at;

    // A retry, even one whose text differs, returns the first message untouched.
    let retry = existing_message(
        store
            .insert_customer_message("conv-1", "I want a refund!!", Some("client-7"))
            .await
            .expect("retry"),
    );
    assert_eq!(retry, original);
    assert_eq!(
        store
            .get_conversation("conv-1")
            .await
            .expect("get")
            .expect("exists")
            .updated_at,
        updated_at_after_original,
        "a retry must not write anything"
    );
    assert_eq!(
        store
            .list_messages("conv-1", None, 100)
            .await
            .expect("list")
            .len(),
        1
    );

    // The same client id is independent in another conversation.
    new_message(
        store
            .insert_customer_message("conv-2", "I want a refund", Some("client-7"))
            .await
            .expect("other conversation"),
    );
    // Messages without a client id are never deduplicated.
    new_message(
        store
            .insert_customer_message("conv-1", "again", None)
            .await
            .expect("no id 1"),
    );
    new_message(
        store
            .insert_customer_message("conv-1", "again", None)
            .await
            .expect("no id 2"),
    );
    assert_eq!(
        store
            .list_messages("conv-1", None, 100)
            .await
            .expect("list")
            .len(),
        3
    );

    // Once the turn is complete, a retry carries its result.
    let turn = completion(
        "conv-1",
        original.id,
        Some("Refund started."),
        ConversationState::Bot,
        vec![],
    );
    store.complete_turn(turn.clone()).await.expect("complete");
    let retry_after_completion = existing_message(
        store
            .insert_customer_message("conv-1", "I want a refund", Some("client-7"))
            .await
            .expect("retry after completion"),
    );
    assert_eq!(retry_after_completion.id, original.id);
    assert_eq!(
        given_result(retry_after_completion.result),
        Some(turn.result)
    );
    assert_eq!(
        retry_after_completion.understanding,
        Some(turn.understanding)
    );
}

async fn racing_duplicate_inserts_store_exactly_one_row(backend: Backend) {
    const RACERS: usize = 20;
    let store = Arc::new(backend.open().await);
    store
        .create_conversation("conv-race", "hash")
        .await
        .expect("create");
    let start = Arc::new(Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|_| {
            let store = Arc::clone(&store);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                store
                    .insert_customer_message("conv-race", "double click", Some("client-dup"))
                    .await
            })
        })
        .collect();

    let mut new_ids = Vec::new();
    let mut existing_ids = Vec::new();
    for racer in racers {
        match racer.await.expect("racer task").expect("insert") {
            CustomerInsert::New(message) => new_ids.push(message.id),
            CustomerInsert::Existing(message) => existing_ids.push(message.id),
        }
    }
    assert_eq!(new_ids.len(), 1, "exactly one racer stores the message");
    assert_eq!(existing_ids.len(), RACERS - 1);
    assert!(existing_ids.iter().all(|id| *id == new_ids[0]));

    let raw = backend.raw().await;
    assert_eq!(
        count_rows(
            &raw,
            "SELECT COUNT(*) FROM messages WHERE conversation_id = $1",
            "conv-race"
        )
        .await,
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Turns

async fn complete_turn_writes_result_reply_state_and_events_together(backend: Backend) {
    let store = backend.open().await;
    let conversation = store
        .create_conversation("conv-1", "hash")
        .await
        .expect("create");
    let customer = new_message(
        store
            .insert_customer_message("conv-1", "Talk to a human", Some("client-1"))
            .await
            .expect("insert"),
    );

    let turn = completion(
        "conv-1",
        customer.id,
        Some("Connecting you to an agent."),
        ConversationState::Queued,
        vec![
            ("turn.completed", json!({"message_id": customer.id})),
            (
                "handoff.requested",
                json!({"reason": "customer asked", "queue": ["general"]}),
            ),
        ],
    );
    let reply = store
        .complete_turn(turn.clone())
        .await
        .expect("complete")
        .expect("a reply was given");
    assert_eq!(reply.role, Role::Bot);
    assert_eq!(reply.text, "Connecting you to an agent.");
    assert_eq!(reply.conversation_id, "conv-1");
    assert!(reply.id > customer.id);

    let messages = store
        .list_messages("conv-1", None, 100)
        .await
        .expect("list");
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].id, customer.id);
    assert_eq!(messages[0].understanding, Some(turn.understanding.clone()));
    assert_eq!(
        given_result(messages[0].result.clone()),
        Some(turn.result.clone())
    );
    assert_eq!(
        messages[0]
            .result
            .as_ref()
            .and_then(|r| r.get("reply_message_id")),
        Some(&json!(reply.id)),
        "the stored result names the reply"
    );
    assert_eq!(messages[1], reply);

    let after = store
        .get_conversation("conv-1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(after.state, ConversationState::Queued);
    assert!(after.updated_at >= conversation.updated_at);

    let events = store
        .list_events(Some("conv-1"), None, 100)
        .await
        .expect("events");
    let kinds: Vec<_> = events.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(kinds, ["turn.completed", "handoff.requested"]);
    assert_eq!(
        events[1].payload,
        json!({"reason": "customer asked", "queue": ["general"]})
    );
    assert!(events
        .iter()
        .all(|event| event.conversation_id.as_deref() == Some("conv-1")));

    // A turn without a reply stores none.
    let quiet = new_message(
        store
            .insert_customer_message("conv-1", "Still there?", Some("client-2"))
            .await
            .expect("insert"),
    );
    let no_reply = store
        .complete_turn(completion(
            "conv-1",
            quiet.id,
            None,
            ConversationState::Queued,
            vec![],
        ))
        .await
        .expect("complete without reply");
    assert_eq!(no_reply, None);
    assert_eq!(
        store
            .list_messages("conv-1", None, 100)
            .await
            .expect("list")
            .len(),
        3
    );
}

async fn a_second_completion_of_a_turn_changes_nothing(backend: Backend) {
    let store = backend.open().await;
    store
        .create_conversation("conv-1", "hash")
        .await
        .expect("create");
    let customer = new_message(
        store
            .insert_customer_message("conv-1", "Hi", Some("client-1"))
            .await
            .expect("insert"),
    );
    let first = completion(
        "conv-1",
        customer.id,
        Some("Hello!"),
        ConversationState::Bot,
        vec![("turn.completed", json!({}))],
    );
    store
        .complete_turn(first.clone())
        .await
        .expect("first completion");

    // A raced retry finishing second: it would change the state, reply and log, but must not.
    let mut second = completion(
        "conv-1",
        customer.id,
        Some("Hello again!"),
        ConversationState::Resolved,
        vec![("turn.completed", json!({"attempt": 2}))],
    );
    second.result = json!({"reply": "Hello again!"});
    let outcome = store.complete_turn(second).await;
    assert!(
        matches!(outcome, Err(StoreError::TurnAlreadyCompleted(id)) if id == customer.id),
        "{outcome:?}"
    );

    let conversation = store
        .get_conversation("conv-1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        conversation.state,
        ConversationState::Bot,
        "the state change was rolled back"
    );
    let messages = store
        .list_messages("conv-1", None, 100)
        .await
        .expect("list");
    assert_eq!(messages.len(), 2, "no second reply");
    assert_eq!(given_result(messages[0].result.clone()), Some(first.result));
    assert_eq!(messages[1].text, "Hello!");
    assert_eq!(
        store
            .list_events(Some("conv-1"), None, 100)
            .await
            .expect("events")
            .len(),
        1
    );
}

async fn complete_turn_requires_a_customer_message(backend: Backend) {
    let store = backend.open().await;
    store
        .create_conversation("conv-1", "hash")
        .await
        .expect("create");
    let unknown = store
        .complete_turn(completion(
            "conv-1",
            987_654,
            Some("?"),
            ConversationState::Bot,
            vec![],
        ))
        .await;
    assert!(
        matches!(unknown, Err(StoreError::MessageNotFound(987_654))),
        "{unknown:?}"
    );

    let notice = store
        .insert_message("conv-1", system_notice("Office hours are 9-5."))
        .await
        .expect("notice");
    let not_customer = store
        .complete_turn(completion(
            "conv-1",
            notice.id,
            Some("?"),
            ConversationState::Bot,
            vec![],
        ))
        .await;
    assert!(
        matches!(not_customer, Err(StoreError::MessageNotFound(id)) if id == notice.id),
        "{not_customer:?}"
    );

    // The turn names its conversation: a customer message of another one is not found there,
    // and an unknown conversation is reported as such. Neither writes anything.
    store
        .create_conversation("conv-2", "hash-2")
        .await
        .expect("create 2");
    let elsewhere = new_message(
        store
            .insert_customer_message("conv-2", "hello from two", None)
            .await
            .expect("insert in conv-2"),
    );
    let wrong_conversation = store
        .complete_turn(completion(
            "conv-1",
            elsewhere.id,
            Some("?"),
            ConversationState::Resolved,
            vec![],
        ))
        .await;
    assert!(
        matches!(wrong_conversation, Err(StoreError::MessageNotFound(id)) if id == elsewhere.id),
        "{wrong_conversation:?}"
    );
    let no_conversation = store
        .complete_turn(completion(
            "conv-nobody",
            elsewhere.id,
            Some("?"),
            ConversationState::Bot,
            vec![],
        ))
        .await;
    assert!(
        matches!(no_conversation, Err(StoreError::ConversationNotFound(_))),
        "{no_conversation:?}"
    );
    assert_eq!(
        store
            .get_conversation("conv-1")
            .await
            .expect("read")
            .expect("conv-1")
            .state,
        ConversationState::Bot,
        "the refused turn's state change was rolled back"
    );
    assert_eq!(
        store
            .list_messages("conv-1", None, 100)
            .await
            .expect("list")
            .len(),
        1
    );
    assert_eq!(
        store
            .list_messages("conv-2", None, 100)
            .await
            .expect("list")
            .len(),
        1
    );
}

/// Turns finishing at the same moment (SQLite commits them together): each caller gets its own
/// outcome, and a refused one among them writes nothing while the others all commit.
async fn concurrent_completions_each_get_their_own_outcome(backend: Backend) {
    const TURNS: usize = 12;
    let store = Arc::new(backend.open().await);
    let mut message_ids = Vec::new();
    for turn in 0..TURNS {
        let conversation_id = format!("conv-{turn}");
        store
            .create_conversation(&conversation_id, "hash")
            .await
            .expect("create");
        let customer = new_message(
            store
                .insert_customer_message(&conversation_id, &format!("question {turn}"), None)
                .await
                .expect("insert"),
        );
        message_ids.push(customer.id);
    }
    // Turn 3 was completed before; turn 7 names a message of another conversation.
    store
        .complete_turn(completion(
            "conv-3",
            message_ids[3],
            Some("first answer"),
            ConversationState::Bot,
            vec![],
        ))
        .await
        .expect("first completion of turn 3");
    let start = Arc::new(Barrier::new(TURNS));
    let completions: Vec<_> = (0..TURNS)
        .map(|turn| {
            let store = Arc::clone(&store);
            let start = Arc::clone(&start);
            let message_id = if turn == 7 {
                message_ids[8]
            } else {
                message_ids[turn]
            };
            tokio::spawn(async move {
                start.wait().await;
                store
                    .complete_turn(completion(
                        &format!("conv-{turn}"),
                        message_id,
                        Some(&format!("answer {turn}")),
                        ConversationState::Resolved,
                        vec![("turn.completed", json!({"turn": turn}))],
                    ))
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for completion in completions {
        outcomes.push(completion.await.expect("task"));
    }

    for (turn, outcome) in outcomes.into_iter().enumerate() {
        let conversation_id = format!("conv-{turn}");
        let conversation = store
            .get_conversation(&conversation_id)
            .await
            .expect("read")
            .expect("exists");
        let messages = store
            .list_messages(&conversation_id, None, 100)
            .await
            .expect("list");
        let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
        let events = store
            .list_events(Some(&conversation_id), None, 100)
            .await
            .expect("events");
        match turn {
            3 => {
                assert!(
                    matches!(outcome, Err(StoreError::TurnAlreadyCompleted(id)) if id == message_ids[3]),
                    "{outcome:?}"
                );
                assert_eq!(conversation.state, ConversationState::Bot, "unchanged");
                assert_eq!(texts, ["question 3", "first answer"]);
                assert!(events.is_empty(), "{events:?}");
            }
            7 => {
                assert!(
                    matches!(outcome, Err(StoreError::MessageNotFound(id)) if id == message_ids[8]),
                    "{outcome:?}"
                );
                assert_eq!(conversation.state, ConversationState::Bot, "unchanged");
                assert_eq!(texts, ["question 7"]);
                assert!(events.is_empty(), "{events:?}");
            }
            _ => {
                let reply = outcome
                    .unwrap_or_else(|error| panic!("turn {turn}: {error}"))
                    .expect("a stored reply");
                assert_eq!(conversation.state, ConversationState::Resolved);
                assert_eq!(
                    texts,
                    [format!("question {turn}"), format!("answer {turn}")]
                );
                assert_eq!(
                    messages[0].result.as_ref().expect("result")["reply_message_id"],
                    json!(reply.id)
                );
                assert_eq!(events.len(), 1, "{events:?}");
            }
        }
    }
}

async fn readers_never_see_a_half_completed_turn(backend: Backend) {
    const TURNS: usize = 15;
    let store = Arc::new(backend.open().await);
    store
        .create_conversation("conv-1", "hash")
        .await
        .expect("create");

    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for turn in 0..TURNS {
                let customer = new_message(
                    store
                        .insert_customer_message(
                            "conv-1",
                            &format!("question {turn}"),
                            Some(&format!("client-{turn}")),
                        )
                        .await
                        .expect("insert"),
                );
                store
                    .complete_turn(completion(
                        "conv-1",
                        customer.id,
                        Some(&format!("answer {turn}")),
                        ConversationState::Bot,
                        vec![("turn.completed", json!({"turn": turn}))],
                    ))
                    .await
                    .expect("complete");
            }
        })
    };

    // Poll while the writer works: a customer message with a result must always be followed by
    // its reply, and come with its event. One last poll after the writer finished sees every turn.
    loop {
        let writer_finished = writer.is_finished();
        let messages = store
            .list_messages("conv-1", None, 1000)
            .await
            .expect("list");
        let events = store
            .list_events(Some("conv-1"), None, 1000)
            .await
            .expect("events");
        let completed: Vec<_> = messages
            .iter()
            .enumerate()
            .filter(|(_, message)| message.role == Role::Customer && message.result.is_some())
            .collect();
        for (position, customer) in &completed {
            let reply = messages.get(position + 1);
            assert!(
                reply.is_some_and(|reply| reply.role == Role::Bot),
                "message {} has a result but no reply after it",
                customer.id
            );
        }
        // Events are read after messages, so there may be more of them but never fewer.
        assert!(events.len() >= completed.len());
        if writer_finished {
            writer.await.expect("writer task");
            assert_eq!(completed.len(), TURNS);
            break;
        }
        tokio::task::yield_now().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Events

async fn events_are_listed_per_conversation_and_after_a_cursor(backend: Backend) {
    let store = backend.open().await;
    store
        .create_conversation("conv-a", "hash-a")
        .await
        .expect("create a");
    store
        .create_conversation("conv-b", "hash-b")
        .await
        .expect("create b");

    let payload =
        json!({"nested": {"list": [1, 2, 3], "text": "ünïcödé"}, "flag": true, "none": null});
    let a1 = store
        .append_event(Some("conv-a"), "conversation.created", &payload)
        .await
        .expect("a1");
    let global = store
        .append_event(None, "kb.reindexed", &json!({"documents": 3}))
        .await
        .expect("global");
    let b1 = store
        .append_event(Some("conv-b"), "conversation.created", &json!({}))
        .await
        .expect("b1");
    let a2 = store
        .append_event(
            Some("conv-a"),
            "handoff.requested",
            &json!({"why": "asked"}),
        )
        .await
        .expect("a2");

    assert_eq!(a1.payload, payload);
    assert_eq!(a1.conversation_id.as_deref(), Some("conv-a"));
    assert_eq!(global.conversation_id, None);
    assert!(a1.created_at > 0);
    assert!(a1.id < global.id && global.id < b1.id && b1.id < a2.id);

    assert_eq!(
        store
            .list_events(Some("conv-a"), None, 100)
            .await
            .expect("list a"),
        vec![a1.clone(), a2.clone()]
    );
    assert_eq!(
        store
            .list_events(Some("conv-a"), Some(a1.id), 100)
            .await
            .expect("list a after a1"),
        vec![a2.clone()]
    );
    assert_eq!(
        store.list_events(None, None, 100).await.expect("list all"),
        vec![a1.clone(), global.clone(), b1.clone(), a2.clone()]
    );
    assert_eq!(
        store
            .list_events(None, Some(global.id), 1)
            .await
            .expect("page"),
        vec![b1.clone()]
    );
    assert!(store
        .list_events(None, Some(a2.id), 100)
        .await
        .expect("after last")
        .is_empty());
}

/// The webhook cursor's reading: an event whose transaction is still open holds back every
/// later one, so a cursor that moved past the later ones could never skip it. (SQLite has one
/// writer; there the open transaction would block the store's insert, so the case only checks
/// the order.)
async fn settled_events_never_pass_an_event_still_committing(backend: Backend) {
    let store = backend.open().await;
    let first = store
        .append_event(None, "first", &json!({}))
        .await
        .expect("first");
    let is_postgres = matches!(backend, Backend::Postgres { .. });
    let mut late = None;
    let raw = backend.raw().await;
    let mut open = None;
    if is_postgres {
        let mut transaction = raw.begin().await.expect("begin");
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (conversation_id, kind, payload, created_at) \
             VALUES (NULL, 'late', '{}', 0) RETURNING id",
        )
        .fetch_one(&mut *transaction)
        .await
        .expect("insert without committing");
        late = Some(id);
        open = Some(transaction);
    }
    let later = store
        .append_event(None, "later", &json!({}))
        .await
        .expect("later");
    if let Some(late) = late {
        assert!(late < later.id);
        let settled = store.settled_events(first.id, 100).await.expect("settled");
        assert!(
            settled.is_empty(),
            "event {} was listed while event {late} was still committing: {settled:?}",
            later.id
        );
    }
    if let Some(transaction) = open {
        transaction.commit().await.expect("commit");
    }
    // Other tests' transactions on the same server can hold the list back for a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let expected_kinds: Vec<&str> = if is_postgres {
        vec!["first", "late", "later"]
    } else {
        vec!["first", "later"]
    };
    loop {
        let settled = store.settled_events(0, 100).await.expect("settled");
        let kinds: Vec<&str> = settled.iter().map(|e| e.kind.as_str()).collect();
        if kinds == expected_kinds {
            let ids: Vec<i64> = settled.iter().map(|e| e.id).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && kinds.len() <= expected_kinds.len(),
            "settled events: {kinds:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        store
            .settled_events(later.id, 100)
            .await
            .expect("after last"),
        vec![]
    );
    raw.close().await;
}

// ---------------------------------------------------------------------------------------------
// Documents

async fn documents_round_trip_with_chunks_in_ordinal_order(backend: Backend) {
    let store = backend.open().await;
    let faq = document(
        "faq/shipping.faq.yaml",
        "Shipping FAQ",
        DocumentKind::Faq,
        &["3-5 days", "Yes, worldwide", "Free over 50 EUR"],
    );
    let mut shuffled = faq.clone();
    shuffled.chunks.reverse();
    store.upsert_document(&shuffled).await.expect("upsert");

    let read = store
        .get_document(&faq.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(read, faq, "chunks come back complete and in ordinal order");

    let mut no_url = document("notes.txt", "Notes", DocumentKind::Text, &["plain text"]);
    no_url.url = None;
    for chunk in &mut no_url.chunks {
        chunk.url = None;
        chunk.heading_path.clear();
    }
    store
        .upsert_document(&no_url)
        .await
        .expect("upsert without url");
    assert_eq!(
        store.get_document(&no_url.id).await.expect("get").as_ref(),
        Some(&no_url)
    );

    let empty = document("empty.md", "Empty", DocumentKind::Markdown, &[]);
    store.upsert_document(&empty).await.expect("upsert empty");
    assert_eq!(
        store.get_document(&empty.id).await.expect("get").as_ref(),
        Some(&empty)
    );

    assert_eq!(
        store
            .get_document("doc:missing")
            .await
            .expect("get missing"),
        None
    );
}

async fn upserting_a_document_replaces_its_chunks(backend: Backend) {
    let store = backend.open().await;
    let original = document(
        "guide.md",
        "Guide",
        DocumentKind::Markdown,
        &["one", "two", "three"],
    );
    store
        .upsert_document(&original)
        .await
        .expect("first upsert");
    let revised = document(
        "guide.md",
        "Guide, revised",
        DocumentKind::Markdown,
        &["uno", "dos"],
    );
    assert_eq!(revised.id, original.id);
    store
        .upsert_document(&revised)
        .await
        .expect("second upsert");

    assert_eq!(
        store.get_document(&revised.id).await.expect("get").as_ref(),
        Some(&revised)
    );
    let raw = backend.raw().await;
    assert_eq!(
        count_rows(
            &raw,
            "SELECT COUNT(*) FROM chunks WHERE document_id = $1",
            &revised.id
        )
        .await,
        2
    );
    assert_eq!(
        count_rows(
            &raw,
            "SELECT COUNT(*) FROM documents WHERE source = $1",
            "guide.md"
        )
        .await,
        1
    );

    // The same source under a new id replaces the old document rather than colliding with it.
    let mut renamed = document(
        "guide.md",
        "Guide, re-keyed",
        DocumentKind::Markdown,
        &["eins"],
    );
    renamed.id = "doc:v2:guide.md".to_string();
    for chunk in &mut renamed.chunks {
        chunk.document_id = renamed.id.clone();
    }
    store
        .upsert_document(&renamed)
        .await
        .expect("upsert under a new id");
    assert_eq!(
        store.get_document(&original.id).await.expect("get old"),
        None
    );
    assert_eq!(
        store
            .get_document(&renamed.id)
            .await
            .expect("get new")
            .as_ref(),
        Some(&renamed)
    );
    assert_eq!(
        count_rows(
            &raw,
            "SELECT COUNT(*) FROM chunks WHERE document_id = $1",
            &original.id
        )
        .await,
        0
    );
}

async fn documents_are_found_by_source_and_listed_with_chunk_counts(backend: Backend) {
    let store = backend.open().await;
    let zebra = document(
        "zebra.html",
        "Zebra",
        DocumentKind::Html,
        &["stripes", "more stripes"],
    );
    let alpha = document("alpha.pdf", "Alpha", DocumentKind::Pdf, &["a", "b", "c"]);
    let empty = document("middle.md", "Middle", DocumentKind::Markdown, &[]);
    for doc in [&zebra, &alpha, &empty] {
        store.upsert_document(doc).await.expect("upsert");
    }

    let found = store
        .find_document_by_source("alpha.pdf")
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(found.id, alpha.id);
    assert_eq!(found.source, "alpha.pdf");
    assert_eq!(found.title, "Alpha");
    assert_eq!(found.url, alpha.url);
    assert_eq!(found.kind, "pdf");
    assert_eq!(found.content_hash, alpha.content_hash);
    assert_eq!(found.chunk_count, 3);
    assert!(found.updated_at > 0);
    assert_eq!(
        store
            .find_document_by_source("nope.md")
            .await
            .expect("find missing"),
        None
    );

    let listed = store.list_documents().await.expect("list");
    let summary: Vec<_> = listed
        .iter()
        .map(|doc| (doc.source.as_str(), doc.kind.as_str(), doc.chunk_count))
        .collect();
    assert_eq!(
        summary,
        [
            ("alpha.pdf", "pdf", 3),
            ("middle.md", "markdown", 0),
            ("zebra.html", "html", 2)
        ]
    );
    assert_eq!(listed[0], found);
}

async fn deleting_a_document_removes_its_chunks(backend: Backend) {
    let store = backend.open().await;
    let doomed = document("old.md", "Old", DocumentKind::Markdown, &["x", "y"]);
    let kept = document("kept.md", "Kept", DocumentKind::Markdown, &["z"]);
    store.upsert_document(&doomed).await.expect("upsert doomed");
    store.upsert_document(&kept).await.expect("upsert kept");

    assert!(store.delete_document(&doomed.id).await.expect("delete"));
    assert_eq!(
        store.get_document(&doomed.id).await.expect("get deleted"),
        None
    );
    assert_eq!(
        store
            .find_document_by_source("old.md")
            .await
            .expect("find deleted"),
        None
    );
    let raw = backend.raw().await;
    assert_eq!(
        count_rows(
            &raw,
            "SELECT COUNT(*) FROM chunks WHERE document_id = $1",
            &doomed.id
        )
        .await,
        0,
        "chunks go with their document"
    );
    assert!(!store
        .delete_document(&doomed.id)
        .await
        .expect("delete again"));
    assert_eq!(
        store
            .get_document(&kept.id)
            .await
            .expect("get kept")
            .as_ref(),
        Some(&kept)
    );
}

async fn the_index_encoder_is_recorded_and_replaced(backend: Backend) {
    let store = backend.open().await;
    assert_eq!(store.index_encoder().await.expect("read before"), None);
    store.set_index_encoder("aaaa").await.expect("record");
    assert_eq!(
        store.index_encoder().await.expect("read").as_deref(),
        Some("aaaa")
    );
    store.set_index_encoder("bbbb").await.expect("replace");
    assert_eq!(
        store.index_encoder().await.expect("read again").as_deref(),
        Some("bbbb")
    );
}

// ---------------------------------------------------------------------------------------------
// Durability and concurrency

async fn data_survives_closing_and_reopening_the_store(backend: Backend) {
    let store = backend.open().await;
    store
        .create_conversation("conv-1", "hash")
        .await
        .expect("create");
    let customer = new_message(
        store
            .insert_customer_message("conv-1", "Remember me", Some("client-1"))
            .await
            .expect("insert"),
    );
    let turn = completion(
        "conv-1",
        customer.id,
        Some("I will."),
        ConversationState::Queued,
        vec![("turn.completed", json!({"n": 1}))],
    );
    store.complete_turn(turn.clone()).await.expect("complete");
    let doc = document("faq.yaml", "FAQ", DocumentKind::Faq, &["answer"]);
    store.upsert_document(&doc).await.expect("upsert");
    let messages_before = store
        .list_messages("conv-1", None, 100)
        .await
        .expect("list");
    let events_before = store.list_events(None, None, 100).await.expect("events");
    store.close().await;
    drop(store);

    // Reopening runs the migrations again, which must be a no-op.
    let reopened = backend.open().await;
    let conversation = reopened
        .get_conversation("conv-1")
        .await
        .expect("get")
        .expect("still there");
    assert_eq!(conversation.state, ConversationState::Queued);
    assert_eq!(
        reopened
            .list_messages("conv-1", None, 100)
            .await
            .expect("list"),
        messages_before
    );
    assert_eq!(
        reopened.list_events(None, None, 100).await.expect("events"),
        events_before
    );
    assert_eq!(
        reopened
            .get_document(&doc.id)
            .await
            .expect("get doc")
            .as_ref(),
        Some(&doc)
    );
    let retry = existing_message(
        reopened
            .insert_customer_message("conv-1", "Remember me", Some("client-1"))
            .await
            .expect("retry after restart"),
    );
    assert_eq!(given_result(retry.result), Some(turn.result));

    // Ids keep growing after a restart, so cursors stay valid.
    let later = new_message(
        reopened
            .insert_customer_message("conv-1", "Later", None)
            .await
            .expect("insert after restart"),
    );
    assert!(messages_before.iter().all(|message| message.id < later.id));
}

async fn concurrent_writers_all_succeed(backend: Backend) {
    const WRITERS: usize = 50;
    const CONVERSATIONS: usize = 5;
    let store = Arc::new(backend.open().await);
    for conversation in 0..CONVERSATIONS {
        store
            .create_conversation(&format!("conv-{conversation}"), "hash")
            .await
            .expect("create");
    }
    let start = Arc::new(Barrier::new(WRITERS));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = Arc::clone(&store);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                let conversation_id = format!("conv-{}", writer % CONVERSATIONS);
                start.wait().await;
                let customer = new_message(
                    store
                        .insert_customer_message(
                            &conversation_id,
                            &format!("message {writer}"),
                            Some(&format!("client-{writer}")),
                        )
                        .await
                        .unwrap_or_else(|error| panic!("writer {writer} insert: {error}")),
                );
                store
                    .append_event(
                        Some(&conversation_id),
                        "message.received",
                        &json!({"writer": writer}),
                    )
                    .await
                    .unwrap_or_else(|error| panic!("writer {writer} event: {error}"));
                store
                    .complete_turn(completion(
                        &conversation_id,
                        customer.id,
                        Some(&format!("reply {writer}")),
                        ConversationState::Bot,
                        vec![("turn.completed", json!({"writer": writer}))],
                    ))
                    .await
                    .unwrap_or_else(|error| panic!("writer {writer} completion: {error}"));
                store
                    .insert_message(&conversation_id, system_notice(&format!("notice {writer}")))
                    .await
                    .unwrap_or_else(|error| panic!("writer {writer} notice: {error}"));
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task");
    }

    let mut ids = HashSet::new();
    for conversation in 0..CONVERSATIONS {
        let messages = store
            .list_messages(&format!("conv-{conversation}"), None, 1000)
            .await
            .expect("list");
        assert_eq!(messages.len(), 3 * WRITERS / CONVERSATIONS);
        assert!(messages.windows(2).all(|pair| pair[0].id < pair[1].id));
        ids.extend(messages.iter().map(|message| message.id));
    }
    assert_eq!(ids.len(), 3 * WRITERS, "every message has its own id");
    assert_eq!(
        store
            .list_events(None, None, 1000)
            .await
            .expect("events")
            .len(),
        2 * WRITERS
    );
}

// ---------------------------------------------------------------------------------------------
// Corrupt data

async fn corrupt_rows_are_reported_as_corrupt(backend: Backend) {
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

    store
        .create_conversation("conv-state", "hash")
        .await
        .expect("create");
    corrupt(
        &raw,
        "UPDATE conversations SET state = 'limbo' WHERE id = $1",
        "conv-state",
    )
    .await;
    assert_corrupt(store.get_conversation("conv-state").await, "unknown state");

    store
        .create_conversation("conv-role", "hash")
        .await
        .expect("create");
    store
        .insert_message("conv-role", system_notice("hi"))
        .await
        .expect("insert");
    corrupt(
        &raw,
        "UPDATE messages SET role = 'wizard' WHERE conversation_id = $1",
        "conv-role",
    )
    .await;
    assert_corrupt(
        store.list_messages("conv-role", None, 10).await,
        "unknown role",
    );

    store
        .create_conversation("conv-json", "hash")
        .await
        .expect("create");
    new_message(
        store
            .insert_customer_message("conv-json", "hi", Some("c"))
            .await
            .expect("insert"),
    );
    corrupt(
        &raw,
        "UPDATE messages SET result = '{\"truncated' WHERE conversation_id = $1",
        "conv-json",
    )
    .await;
    assert_corrupt(
        store.list_messages("conv-json", None, 10).await,
        "invalid result JSON",
    );
    assert_corrupt(
        store
            .insert_customer_message("conv-json", "hi", Some("c"))
            .await,
        "invalid JSON on retry",
    );

    store
        .create_conversation("conv-event", "hash")
        .await
        .expect("create");
    store
        .append_event(Some("conv-event"), "kind", &json!({}))
        .await
        .expect("append");
    corrupt(
        &raw,
        "UPDATE events SET payload = 'not json' WHERE conversation_id = $1",
        "conv-event",
    )
    .await;
    assert_corrupt(
        store.list_events(Some("conv-event"), None, 10).await,
        "invalid payload",
    );

    let doc = document("kind.md", "Kind", DocumentKind::Markdown, &["text"]);
    store.upsert_document(&doc).await.expect("upsert");
    corrupt(
        &raw,
        "UPDATE documents SET kind = 'spreadsheet' WHERE id = $1",
        &doc.id,
    )
    .await;
    assert_corrupt(store.get_document(&doc.id).await, "unknown kind on get");
    assert_corrupt(store.list_documents().await, "unknown kind on list");
    assert_corrupt(
        store.find_document_by_source("kind.md").await,
        "unknown kind on find",
    );

    let headings = document("headings.md", "Headings", DocumentKind::Markdown, &["text"]);
    store.upsert_document(&headings).await.expect("upsert");
    corrupt(
        &raw,
        "UPDATE chunks SET heading_path = '{\"not\": \"a list\"}' WHERE document_id = $1",
        &headings.id,
    )
    .await;
    assert_corrupt(
        store.get_document(&headings.id).await,
        "heading path not a list",
    );
}
