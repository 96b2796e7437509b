//! Group commit on SQLite: finished turns and agent replies written while the writer is busy are
//! written together, in one transaction, as soon as it is free.
//!
//! Why: every write of the process takes turns on one connection (`sqlite_writer.rs`), and at
//! 1,000 messages a second the writer was held about half of each second, more in slow spells,
//! by three write transactions per customer message: its insert, its turn's completion and the
//! agent's reply (evals/RESULTS.md, stops 37 and 38). Most of a transaction's hold is not its SQL
//! but the round trips to the connection's thread (one per statement) and the hand-over to the
//! next writer. So the last two go through here:
//! - the writes waiting when the writer comes free share one `BEGIN` and one `COMMIT`, one
//!   hand-over and (with `sqlite_synchronous = "full"`) one place in the fsync queue; under load
//!   the batches grow by themselves;
//! - quiet turns (no reply, no queue entry: every message in a conversation a person owns) send
//!   all their statements in one round trip ([`write_quiet_turns`]), and so do agent replies
//!   ([`write_agent_replies`]).
//!
//! The customer's insert stays a transaction of its own: it is what the agent waits for, and it
//! must not wait for a batch.
//!
//! The promise is unchanged: each call returns once its write is committed (and synced, when the
//! group fsync is on), and a refused write writes nothing. A batch in which a turn is refused
//! (already completed, unknown message) or a statement fails is rolled back whole and its writes
//! are done again one transaction each, so each caller gets its own outcome; refusals are rare
//! (raced retries), so the common path pays no savepoints. An agent reply refused in a batch
//! (the agent no longer holds the conversation) wrote nothing, and is asked again alone for its
//! exact answer.
//!
//! Several statements in one query is something only sqlx's SQLite driver does, and sqlx has
//! deprecated it (its issue 3108). Cargo.lock pins the version this runs on; an upgrade that drops
//! it fails the unit tests below (which compare what the quiet-turn statements write with
//! `write_turn`) and the store contract tests (every agent reply on SQLite comes through here).
//!
//! The batch runs on a task of its own, so a caller that gives up (a cancelled request) cancels
//! neither its own write nor the others'.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::Row;
use tokio::sync::oneshot;

use super::handoff::{
    write_agent_reply, AgentReply, RECORD_AGENT_REPLY, STORING_AN_AGENT_REPLY,
    TURN_STATE_UNLESS_HUMAN_OWNED,
};
use super::rows::message_from_row;
use super::sqlite_writer::{SqliteWrite, SqliteWriter};
use super::wal_sync::WalSync;
use super::{
    now_millis, write_turn, DatabaseContext, OpenWrite, WriteTransaction, COMPLETING_A_TURN,
    INSERT_AGENT_MESSAGE_IF_RECORDED, INSERT_TURN_EVENT, RECORD_TURN_RESULT,
};
use crate::store::{ConversationState, MessageRecord, Millis, Role, StoreError, TurnCompletion};

/// At most this many writes per transaction, so that a backlog does not hold the writer for long
/// in one go: a customer message waiting behind a batch is what the agent waits for.
const MAX_WRITES_PER_BATCH: usize = 32;

/// What either kind of write returns: a finished turn's stored bot reply, or the stored agent
/// reply (`None` when the agent no longer holds the conversation).
type Outcome = Result<Option<MessageRecord>, StoreError>;

/// The queue of writes and the task that commits them (cheap to clone).
#[derive(Debug, Clone)]
pub(super) struct WriteBatcher {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    writer: Arc<SqliteWriter>,
    wal_sync: Option<Arc<WalSync>>,
    queue: parking_lot::Mutex<Queue>,
    commits: AtomicU64,
    writes: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// A task is committing; it takes what waits before it stops.
    committing: bool,
}

#[derive(Debug)]
struct Waiting {
    write: Write,
    done: oneshot::Sender<Outcome>,
}

// At most a batch's worth of these live at once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Write {
    Turn(TurnCompletion),
    AgentReply(AgentReply),
}

impl Write {
    fn context(&self) -> &'static str {
        match self {
            Write::Turn(_) => COMPLETING_A_TURN,
            Write::AgentReply(_) => STORING_AN_AGENT_REPLY,
        }
    }
}

/// How many writes the batches carried, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct BatchStats {
    /// Transactions of the batcher that committed.
    pub commits: u64,
    /// Turns and agent replies they wrote.
    pub writes: u64,
}

impl WriteBatcher {
    pub(super) fn new(writer: Arc<SqliteWriter>, wal_sync: Option<Arc<WalSync>>) -> Self {
        Self {
            shared: Arc::new(Shared {
                writer,
                wal_sync,
                queue: parking_lot::Mutex::default(),
                commits: AtomicU64::new(0),
                writes: AtomicU64::new(0),
            }),
        }
    }

    pub(super) fn stats(&self) -> BatchStats {
        BatchStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            writes: self.shared.writes.load(Ordering::Relaxed),
        }
    }

    /// [`crate::store::Store::complete_turn`], committed alone or with other writes.
    pub(super) async fn complete(&self, turn: TurnCompletion) -> Outcome {
        self.queue(Write::Turn(turn)).await
    }

    /// [`crate::store::HandoffStore::insert_agent_reply`], committed alone or with other writes.
    pub(super) async fn agent_reply(&self, reply: AgentReply) -> Outcome {
        self.queue(Write::AgentReply(reply)).await
    }

    /// Queue `write` and wait until it is committed (see the module docs).
    async fn queue(&self, write: Write) -> Outcome {
        let context = write.context();
        let (done, outcome) = oneshot::channel();
        let start_committing = {
            let mut queue = self.shared.queue.lock();
            queue.waiting.push(Waiting { write, done });
            !std::mem::replace(&mut queue.committing, true)
        };
        if start_committing {
            tokio::spawn(Arc::clone(&self.shared).commit_until_empty());
        }
        outcome.await.unwrap_or_else(|_| {
            // Only a committing task that ended early (a panic) drops a write unanswered.
            Err(StoreError::Database {
                context,
                source: sqlx::Error::WorkerCrashed,
            })
        })
    }
}

impl Shared {
    async fn commit_until_empty(self: Arc<Self>) {
        // Should this task end early (a panic, its runtime shutting down), the guard fails what
        // waits and lets the next write start a task, so that no caller waits forever.
        let mut guard = StopGuard {
            shared: &self,
            emptied: false,
        };
        loop {
            if guard.shared.stop_if_empty() {
                guard.emptied = true;
                return;
            }
            // The writer first, then the batch: it takes every write queued while this task
            // waited for the writer.
            let write = guard.shared.writer.begin().await;
            let batch: Vec<Waiting> = {
                let mut queue = guard.shared.queue.lock();
                let take = queue.waiting.len().min(MAX_WRITES_PER_BATCH);
                queue.waiting.drain(..take).collect()
            };
            guard.shared.commit(write, batch).await;
        }
    }

    /// With nothing waiting, mark the queue as having no task (under its lock, so a write queued
    /// just after starts a new one) and say so.
    fn stop_if_empty(&self) -> bool {
        let mut queue = self.queue.lock();
        if queue.waiting.is_empty() {
            queue.committing = false;
        }
        !queue.committing
    }

    /// Commit `batch` on `write`, answering each caller. The caller may have gone (a cancelled
    /// request): its write stands all the same.
    async fn commit(&self, write: Result<SqliteWrite, sqlx::Error>, batch: Vec<Waiting>) {
        let write = match write {
            Ok(write) => write,
            Err(error) => {
                // The writer is closed or its connection could not be opened: each write says so.
                for waiting in batch {
                    let context = waiting.write.context();
                    let _ = waiting.done.send(Err(StoreError::Database {
                        context,
                        source: copy_error(&error),
                    }));
                }
                return;
            }
        };
        match write_together(write, &batch).await {
            Ok(stored) => {
                let synced = self.after_commit().await;
                self.count(batch.len());
                for (waiting, stored) in batch.into_iter().zip(stored) {
                    let outcome = match (&synced, stored) {
                        (Err(error), _) => Err(sync_failed(waiting.write.context(), error)),
                        (Ok(()), Written::Stored(stored)) => Ok(stored),
                        // Its agent did not hold the conversation in the batch: asked again
                        // alone, to tell an unknown conversation from one held by another.
                        (Ok(()), Written::NotStored) => self.write_alone(&waiting.write).await,
                    };
                    let _ = waiting.done.send(outcome);
                }
            }
            // Rolled back: nothing of the batch was written. Each write is tried alone, so that
            // only the refused one is refused.
            Err(()) => {
                for waiting in batch {
                    let outcome = self.write_alone(&waiting.write).await;
                    let _ = waiting.done.send(outcome);
                }
            }
        }
    }

    /// Write one turn or reply in a transaction of its own, with the exact outcome.
    async fn write_alone(&self, one: &Write) -> Outcome {
        let context = one.context();
        let mut write = WriteTransaction {
            transaction: OpenWrite::Sqlite(self.writer.begin().await.context(context)?),
            wal_sync: self.wal_sync.as_deref(),
        };
        let stored = match one {
            Write::Turn(turn) => write_turn(write.connection(), turn, now_millis()).await?,
            Write::AgentReply(reply) => write_agent_reply(write.connection(), reply).await?,
        };
        // The store's own commit: COMMIT, then the group fsync, as for every other write.
        write.commit(context).await?;
        self.count(1);
        Ok(stored)
    }

    /// Wait until the commit that has just returned is on disk, when the group fsync is on.
    async fn after_commit(&self) -> std::io::Result<()> {
        match &self.wal_sync {
            Some(wal_sync) => wal_sync.after_commit().await,
            None => Ok(()),
        }
    }

    fn count(&self, writes: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
    }
}

/// What a write of a committed batch left.
#[allow(clippy::large_enum_variant)] // as `Write`: one batch's worth at a time.
#[derive(Debug)]
enum Written {
    /// Written, with its stored reply if it has one.
    Stored(Option<MessageRecord>),
    /// An agent reply whose agent did not hold the conversation: nothing written.
    NotStored,
}

/// Write every write of `batch` on `write` and commit them together; what each left, in batch
/// order. `Err` when any turn was refused or any statement failed, or the commit failed: then
/// all of it is rolled back.
async fn write_together(mut write: SqliteWrite, batch: &[Waiting]) -> Result<Vec<Written>, ()> {
    let now = now_millis();
    let quiet: Vec<&TurnCompletion> = batch
        .iter()
        .filter_map(|waiting| match &waiting.write {
            Write::Turn(turn) if is_quiet(turn) => Some(turn),
            _ => None,
        })
        .collect();
    let replies: Vec<&AgentReply> = batch
        .iter()
        .filter_map(|waiting| match &waiting.write {
            Write::AgentReply(reply) => Some(reply),
            Write::Turn(_) => None,
        })
        .collect();
    // Returning early drops `write`, which rolls back whatever was written before.
    if !quiet.is_empty() {
        write_quiet_turns(write.connection(), &quiet, now).await?;
    }
    let mut stored_replies = match replies.is_empty() {
        true => Vec::new(),
        false => write_agent_replies(write.connection(), &replies).await?,
    }
    .into_iter();
    let mut written = Vec::with_capacity(batch.len());
    for waiting in batch {
        written.push(match &waiting.write {
            Write::Turn(turn) if is_quiet(turn) => Written::Stored(None),
            Write::Turn(turn) => Written::Stored(
                write_turn(write.connection(), turn, now)
                    .await
                    .map_err(|_| ())?,
            ),
            Write::AgentReply(_) => match stored_replies.next().ok_or(())? {
                Some(stored) => Written::Stored(Some(stored)),
                None => Written::NotStored,
            },
        });
    }
    write.commit().await.map_err(|_| ())?;
    Ok(written)
}

/// Agent replies in one round trip (see [`write_quiet_turns`] for why): each is
/// [`RECORD_AGENT_REPLY`] followed by its message's insert, which runs only when that update
/// changed the row (`changes()`, SQLite's count for the statement just before), that is when the
/// agent holds the conversation. Each insert returns its reply's position in `replies`, so the
/// rows tell which replies were stored; the others wrote nothing.
async fn write_agent_replies(
    connection: &mut sqlx::AnyConnection,
    replies: &[&AgentReply],
) -> Result<Vec<Option<MessageRecord>>, ()> {
    let mut statements = StatementList::default();
    for (position, reply) in replies.iter().enumerate() {
        statements.push(
            RECORD_AGENT_REPLY,
            [
                Bind::Text(&reply.conversation_id),
                Bind::Int(reply.now),
                Bind::Text(&reply.agent_id),
                Bind::Text(ConversationState::Assigned.as_str()),
            ],
        );
        statements.push(
            INSERT_AGENT_MESSAGE_IF_RECORDED,
            [
                Bind::Text(&reply.conversation_id),
                Bind::Text(reply.message.role.as_str()),
                Bind::Text(&reply.message.text),
                Bind::Int(reply.now),
                Bind::OptionalText(reply.message.author_id.as_deref()),
                Bind::OptionalText(reply.message.kind.as_deref()),
                Bind::OptionalOwned(reply.message.meta.as_ref().map(|meta| meta.to_string())),
                Bind::Int(i64::try_from(position).map_err(|_| ())?),
            ],
        );
    }
    let rows = StatementList::query(&statements.sql, statements.binds)
        .fetch_all(connection)
        .await
        .map_err(|_| ())?;
    let mut stored = vec![None; replies.len()];
    for row in rows {
        let position: i64 = row.try_get("batch_position").map_err(|_| ())?;
        let slot = usize::try_from(position)
            .ok()
            .and_then(|position| stored.get_mut(position))
            .ok_or(())?;
        *slot = Some(message_from_row(&row).map_err(|_| ())?);
    }
    Ok(stored)
}

/// A turn with no reply and no queue entry: what a message in a conversation a person owns
/// records (and a bot turn that says nothing). Its statements depend on no row they write, so
/// they can all be sent at once.
fn is_quiet(turn: &TurnCompletion) -> bool {
    turn.reply.is_none() && turn.enqueue.is_none()
}

/// Write quiet turns with one list of statements, sent to the connection's thread in one round
/// trip instead of one per statement: most of a statement's cost here is that round trip
/// (evals/RESULTS.md, stop 38). The statements are `write_turn`'s for such a turn, and each
/// changes exactly one row when the turn is accepted, so any refusal (an unknown conversation
/// or message, a turn completed before) shows as fewer changed rows: `Err`, and the caller
/// rolls back. SQLite runs several statements in one query, binding `$N` across them; PostgreSQL
/// would not, which is why this is SQLite's batch only.
async fn write_quiet_turns(
    connection: &mut sqlx::AnyConnection,
    turns: &[&TurnCompletion],
    now: Millis,
) -> Result<(), ()> {
    let mut statements = StatementList::default();
    for turn in turns {
        let conversation_id = turn.conversation_id.as_str();
        statements.push(
            TURN_STATE_UNLESS_HUMAN_OWNED,
            [
                Bind::Text(conversation_id),
                Bind::Text(turn.new_state.as_str()),
                Bind::Text(ConversationState::Queued.as_str()),
                Bind::Text(ConversationState::Offered.as_str()),
                Bind::Text(ConversationState::Assigned.as_str()),
                Bind::Int(now),
                Bind::Int(turn.customer_message_id),
                Bind::Text(Role::Agent.as_str()),
            ],
        );
        statements.push(
            RECORD_TURN_RESULT,
            [
                Bind::Int(turn.customer_message_id),
                Bind::Owned(turn.understanding.to_string()),
                Bind::Owned(turn.result.to_string()),
                Bind::Text(conversation_id),
                Bind::Text(Role::Customer.as_str()),
            ],
        );
        for (kind, payload) in &turn.events {
            statements.push(
                INSERT_TURN_EVENT,
                [
                    Bind::Text(conversation_id),
                    Bind::Text(kind),
                    Bind::Owned(payload.to_string()),
                    Bind::Int(now),
                ],
            );
        }
    }
    // The rows changed by all the statements, summed.
    let changed = StatementList::query(&statements.sql, statements.binds)
        .execute(connection)
        .await
        .map_err(|_| ())?;
    match changed.rows_affected() == statements.count {
        true => Ok(()),
        false => Err(()),
    }
}

/// Statements joined into one query, each with its own numbered binds.
#[derive(Default)]
struct StatementList<'a> {
    sql: String,
    binds: Vec<Bind<'a>>,
    count: u64,
}

enum Bind<'a> {
    Text(&'a str),
    Owned(String),
    OptionalText(Option<&'a str>),
    OptionalOwned(Option<String>),
    Int(i64),
}

impl<'a> StatementList<'a> {
    /// Append `statement`, whose binds are `$1..$N` in `binds`' order: they are renumbered to
    /// follow the binds already in the list.
    fn push<const N: usize>(&mut self, statement: &str, binds: [Bind<'a>; N]) {
        self.sql
            .push_str(&renumber_binds(statement, self.binds.len()));
        self.sql.push_str(";\n");
        self.binds.extend(binds);
        self.count += 1;
    }

    /// The statements, `sql`, as one query with their binds.
    fn query<'q>(
        sql: &'q str,
        binds: Vec<Bind<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        let mut query = sqlx::query(sql);
        for bind in binds {
            query = match bind {
                Bind::Text(text) => query.bind(text),
                Bind::Owned(text) => query.bind(text),
                Bind::OptionalText(text) => query.bind(text),
                Bind::OptionalOwned(text) => query.bind(text),
                Bind::Int(number) => query.bind(number),
            };
        }
        query
    }
}

/// `statement` with every `$N` bind replaced by `$(N + offset)`.
fn renumber_binds(statement: &str, offset: usize) -> String {
    let mut renumbered = String::with_capacity(statement.len() + 8);
    let mut rest = statement;
    while let Some(dollar) = rest.find('$') {
        renumbered.push_str(&rest[..=dollar]);
        rest = &rest[dollar + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        // A `$` that is not a bind (none of our statements has one) stays as it is.
        if let Ok(number) = rest[..digits].parse::<usize>() {
            renumbered.push_str(&(number + offset).to_string());
        }
        rest = &rest[digits..];
    }
    renumbered.push_str(rest);
    renumbered
}

/// sqlx errors cannot be cloned; every turn of a batch that could not start gets this copy.
fn copy_error(error: &sqlx::Error) -> sqlx::Error {
    match error {
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Io(std::io::Error::other(other.to_string())),
    }
}

/// The error each turn of a committed batch gets when the fsync after it failed (as a turn
/// committed alone would: committed, but not known to be on disk).
fn sync_failed(context: &'static str, error: &std::io::Error) -> StoreError {
    StoreError::Database {
        context,
        source: sqlx::Error::Io(std::io::Error::new(error.kind(), error.to_string())),
    }
}

struct StopGuard<'a> {
    shared: &'a Shared,
    /// The task found the queue empty and stopped as it should.
    emptied: bool,
}

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        if !self.emptied {
            let mut queue = self.shared.queue.lock();
            // Their senders drop with them: each caller gets an error instead of waiting forever.
            queue.waiting.clear();
            queue.committing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::super::SqlStore;
    use super::*;
    use crate::store::{ConversationState, CustomerInsert, NewMessage, Role, Store};

    async fn store() -> (tempfile::TempDir, Arc<SqlStore>) {
        let directory = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", directory.path().join("baton.db").display());
        let store = SqlStore::connect(&url).await.expect("store");
        (directory, Arc::new(store))
    }

    /// A conversation with one customer message waiting for its turn; the message's id.
    async fn customer_message(store: &SqlStore, conversation_id: &str) -> i64 {
        store
            .create_conversation(conversation_id, "hash")
            .await
            .expect("conversation");
        match store
            .insert_customer_message(conversation_id, "where is my parcel?", None)
            .await
            .expect("message")
        {
            CustomerInsert::New(message) => message.id,
            CustomerInsert::Existing(message) => message.id,
        }
    }

    /// What a message in a conversation a person owns records: no reply, no queue entry.
    fn quiet_turn(conversation_id: &str, message_id: i64) -> TurnCompletion {
        TurnCompletion {
            conversation_id: conversation_id.to_string(),
            customer_message_id: message_id,
            understanding: json!({"intent": "parcel.where", "sentiment": "negative"}),
            result: json!({"decision": "none", "message_id": message_id}),
            reply: None,
            new_state: ConversationState::Assigned,
            enqueue: None,
            events: vec![
                ("decision".into(), json!({"message_id": message_id})),
                ("noted".into(), json!({"by": "test"})),
            ],
        }
    }

    fn turn(conversation_id: &str, message_id: i64, reply: &str) -> TurnCompletion {
        TurnCompletion {
            conversation_id: conversation_id.to_string(),
            customer_message_id: message_id,
            understanding: json!({"intent": "parcel.where"}),
            result: json!({"reply": reply}),
            reply: Some(NewMessage::new(Role::Bot, reply)),
            new_state: ConversationState::Resolved,
            enqueue: None,
            events: vec![("decision".into(), json!({"message_id": message_id}))],
        }
    }

    /// Conversations `conv-0..count`, each with a customer message and a turn answering it
    /// (`reply {index}`).
    async fn answering_turns(store: &SqlStore, count: usize) -> Vec<TurnCompletion> {
        let mut turns = Vec::new();
        for index in 0..count {
            let conversation_id = format!("conv-{index}");
            let message_id = customer_message(store, &conversation_id).await;
            turns.push(turn(
                &conversation_id,
                message_id,
                &format!("reply {index}"),
            ));
        }
        turns
    }

    /// Take the writer, so that the batcher's writes queue until it is dropped.
    async fn hold_the_writer(store: &SqlStore) -> SqliteWrite {
        store
            .sqlite_writer
            .as_ref()
            .expect("SQLite")
            .begin()
            .await
            .expect("hold the writer")
    }

    /// Wait until `count` writes wait in the batcher's queue.
    async fn until_queued(store: &SqlStore, count: usize) {
        let batcher = store.write_batcher.as_ref().expect("SQLite batches writes");
        while batcher.shared.queue.lock().waiting.len() < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Hold the writer until `turns` turns wait in the queue, then let them go; their outcomes.
    async fn complete_while_the_writer_is_held(
        store: &Arc<SqlStore>,
        turns: Vec<TurnCompletion>,
    ) -> Vec<Outcome> {
        let count = turns.len();
        let held = hold_the_writer(store).await;
        let completions: Vec<_> = turns
            .into_iter()
            .map(|turn| {
                let store = Arc::clone(store);
                tokio::spawn(async move { store.complete_turn(turn).await })
            })
            .collect();
        until_queued(store, count).await;
        drop(held);
        let mut outcomes = Vec::new();
        for completion in completions {
            outcomes.push(completion.await.expect("completion task"));
        }
        outcomes
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn turns_finishing_while_the_writer_is_busy_commit_together() {
        let (_directory, store) = store().await;
        let turns = answering_turns(&store, 5).await;
        let before = store.writer_stats().expect("SQLite has a writer");

        let outcomes = complete_while_the_writer_is_held(&store, turns).await;

        for (index, outcome) in outcomes.into_iter().enumerate() {
            let reply = outcome.expect("completed").expect("a reply");
            assert_eq!(reply.text, format!("reply {index}"));
            let messages = store
                .list_messages(&format!("conv-{index}"), None, 10)
                .await
                .expect("list");
            assert_eq!(messages.len(), 2, "the message and its reply");
            let result = messages[0].result.clone().expect("the turn's result");
            assert_eq!(result["reply_message_id"], json!(reply.id));
            let conversation = store
                .get_conversation(&format!("conv-{index}"))
                .await
                .expect("read")
                .expect("exists");
            assert_eq!(conversation.state, ConversationState::Resolved);
        }
        let after = store.writer_stats().expect("SQLite has a writer");
        assert_eq!(after.batched_writes - before.batched_writes, 5);
        assert_eq!(
            after.batch_commits - before.batch_commits,
            1,
            "the five turns committed in one transaction"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_turn_in_a_batch_is_refused_alone() {
        let (_directory, store) = store().await;
        let mut turns = answering_turns(&store, 4).await;
        // conv-2's turn was completed before: its second completion must change nothing.
        let mut first = turns[2].clone();
        first.new_state = ConversationState::Bot;
        store.complete_turn(first).await.expect("first completion");
        // And one names a message that does not exist.
        turns.push(turn("conv-3", 999_999, "nobody asked"));

        let outcomes = complete_while_the_writer_is_held(&store, turns).await;

        let kinds: Vec<String> = outcomes
            .iter()
            .map(|outcome| match outcome {
                Ok(_) => "ok".to_string(),
                Err(error) => format!("{error:?}"),
            })
            .collect();
        assert_eq!(kinds[0], "ok");
        assert_eq!(kinds[1], "ok");
        assert!(kinds[2].starts_with("TurnAlreadyCompleted"), "{kinds:?}");
        assert_eq!(kinds[3], "ok");
        assert!(kinds[4].starts_with("MessageNotFound"), "{kinds:?}");
        let refused = store
            .get_conversation("conv-2")
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(
            refused.state,
            ConversationState::Bot,
            "nothing of it written"
        );
        assert_eq!(
            store
                .list_messages("conv-2", None, 10)
                .await
                .expect("list")
                .len(),
            2,
            "only the first completion's reply"
        );
        // conv-3 got its own reply once, not the refused turn's.
        let conv3 = store.list_messages("conv-3", None, 10).await.expect("list");
        let texts: Vec<&str> = conv3.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["where is my parcel?", "reply 3"]);
    }

    #[test]
    fn binds_are_renumbered_and_the_rest_kept() {
        assert_eq!(
            renumber_binds("UPDATE t SET a = $2 WHERE id = $1 AND b = $12", 8),
            "UPDATE t SET a = $10 WHERE id = $9 AND b = $20"
        );
        assert_eq!(renumber_binds("SELECT '$x', $", 3), "SELECT '$x', $");
        assert_eq!(renumber_binds("no binds", 5), "no binds");
    }

    /// Quiet turns in a batch (one round trip) and a replying turn beside them; one quiet turn
    /// refused, so the batch falls back to one transaction per turn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quiet_turns_commit_together_beside_turns_with_replies() {
        let (_directory, store) = store().await;
        let mut turns = Vec::new();
        for index in 0..3 {
            let conversation_id = format!("quiet-{index}");
            let message_id = customer_message(&store, &conversation_id).await;
            turns.push(quiet_turn(&conversation_id, message_id));
        }
        let replying = customer_message(&store, "replying").await;
        turns.push(turn("replying", replying, "on its way"));
        let before = store.writer_stats().expect("SQLite");

        let outcomes = complete_while_the_writer_is_held(&store, turns.clone()).await;

        assert!(
            outcomes[..3].iter().all(|o| matches!(o, Ok(None))),
            "{outcomes:?}"
        );
        assert!(matches!(&outcomes[3], Ok(Some(reply)) if reply.text == "on its way"));
        let after = store.writer_stats().expect("SQLite");
        assert_eq!(
            after.batch_commits - before.batch_commits,
            1,
            "one transaction"
        );
        for turn in &turns[..3] {
            let messages = store
                .list_messages(&turn.conversation_id, None, 10)
                .await
                .expect("list");
            assert_eq!(messages.len(), 1, "no reply");
            assert_eq!(messages[0].result, Some(turn.result.clone()));
            assert_eq!(messages[0].understanding, Some(turn.understanding.clone()));
            let events = store
                .list_events(Some(&turn.conversation_id), None, 10)
                .await
                .expect("events");
            let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
            assert_eq!(kinds, ["decision", "noted"]);
        }

        // Again, now that they are completed: each quiet one is refused, alone, and the new
        // turn beside them commits.
        let fresh = customer_message(&store, "fresh").await;
        let mut again = turns[..3].to_vec();
        again.push(quiet_turn("fresh", fresh));
        let outcomes = complete_while_the_writer_is_held(&store, again).await;
        for outcome in &outcomes[..3] {
            assert!(
                matches!(outcome, Err(StoreError::TurnAlreadyCompleted(_))),
                "{outcome:?}"
            );
        }
        assert!(matches!(outcomes[3], Ok(None)), "{:?}", outcomes[3]);
        let events = store
            .list_events(Some("quiet-0"), None, 10)
            .await
            .expect("events");
        assert_eq!(events.len(), 2, "the refused turn wrote no events");
    }

    /// The one-round-trip statements are `write_turn`'s: the same turn written both ways, on
    /// twin conversations, leaves the same rows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quiet_turns_write_what_write_turn_writes() {
        let (_directory, store) = store().await;
        let writer = store.sqlite_writer.as_ref().expect("SQLite");
        let now = 1_700_000_000_000;
        for (case, agent_answered) in [("waiting", false), ("answered", true)] {
            let mut written = Vec::new();
            for way in ["together", "alone"] {
                let conversation_id = format!("{case}-{way}");
                let message_id = customer_message(&store, &conversation_id).await;
                store
                    .set_conversation_state(&conversation_id, ConversationState::Assigned)
                    .await
                    .expect("assigned");
                if agent_answered {
                    store
                        .insert_message(&conversation_id, NewMessage::new(Role::Agent, "hello"))
                        .await
                        .expect("agent reply");
                }
                let mut turn = quiet_turn(&conversation_id, message_id);
                // The twins' message ids differ; what is written from them must not.
                turn.result = json!({"decision": "none"});
                turn.events[0].1 = json!({"decision": "none"});
                let mut write = writer.begin().await.expect("begin");
                match way {
                    "together" => write_quiet_turns(write.connection(), &[&turn], now)
                        .await
                        .expect("one round trip"),
                    _ => {
                        write_turn(write.connection(), &turn, now)
                            .await
                            .expect("write_turn");
                    }
                }
                write.commit().await.expect("commit");
                let conversation = store
                    .get_conversation(&conversation_id)
                    .await
                    .expect("read")
                    .expect("exists");
                let messages = store
                    .list_messages(&conversation_id, None, 10)
                    .await
                    .expect("list");
                let events: Vec<_> = store
                    .list_events(Some(&conversation_id), None, 10)
                    .await
                    .expect("events")
                    .into_iter()
                    .map(|e| (e.kind, e.payload, e.created_at))
                    .collect();
                let waiting_since: Option<i64> =
                    sqlx::query_scalar("SELECT waiting_since FROM conversations WHERE id = $1")
                        .bind(&conversation_id)
                        .fetch_one(&store.pool)
                        .await
                        .expect("waiting_since");
                assert_eq!(waiting_since.is_none(), agent_answered, "{case}-{way}");
                written.push((
                    conversation.state,
                    conversation.updated_at,
                    waiting_since,
                    messages
                        .iter()
                        .map(|m| (m.understanding.clone(), m.result.clone()))
                        .collect::<Vec<_>>(),
                    events,
                ));
            }
            assert_eq!(written[0], written[1], "{case}");
        }
    }

    /// Agent replies and quiet turns written while the writer is busy share one transaction; a
    /// reply from an agent who does not hold the conversation stores nothing and is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn agent_replies_and_quiet_turns_commit_together() {
        use crate::store::{HandoffStore, NewAgent};
        let (_directory, store) = store().await;
        store
            .create_agent(&NewAgent {
                id: "agent-maya".into(),
                name: "maya".into(),
                display_name: "Maya".into(),
                password_hash: None,
                skills: vec!["general".into()],
                capacity: 5,
            })
            .await
            .expect("agent");
        let message_id = customer_message(&store, "held").await;
        sqlx::query("UPDATE conversations SET state = 'assigned', agent_id = $1 WHERE id = $2")
            .bind("agent-maya")
            .bind("held")
            .execute(&store.pool)
            .await
            .expect("assign");
        let reply = |agent_id: &str, text: &str| AgentReply {
            conversation_id: "held".into(),
            agent_id: agent_id.into(),
            message: NewMessage {
                author_id: Some(agent_id.into()),
                ..NewMessage::new(Role::Agent, text)
            },
            now: 1_700_000_000_000,
        };
        let batcher = store.write_batcher.clone().expect("SQLite batches writes");
        let before = store.writer_stats().expect("SQLite");
        let held = hold_the_writer(&store).await;
        let quiet = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.complete(quiet_turn("held", message_id)).await }
        });
        let from_maya = tokio::spawn({
            let batcher = batcher.clone();
            let reply = reply("agent-maya", "on it");
            async move { batcher.agent_reply(reply).await }
        });
        let from_someone_else = tokio::spawn({
            let batcher = batcher.clone();
            let reply = reply("agent-sam", "not mine");
            async move { batcher.agent_reply(reply).await }
        });
        until_queued(&store, 3).await;
        drop(held);

        assert!(matches!(quiet.await.expect("task"), Ok(None)));
        let stored = from_maya
            .await
            .expect("task")
            .expect("stored")
            .expect("maya holds it");
        assert_eq!(stored.text, "on it");
        assert_eq!(stored.author_id.as_deref(), Some("agent-maya"));
        assert!(matches!(from_someone_else.await.expect("task"), Ok(None)));
        let texts: Vec<String> = store
            .list_messages("held", None, 10)
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(texts, ["where is my parcel?", "on it"]);
        let after = store.writer_stats().expect("SQLite");
        assert_eq!(
            after.batch_commits - before.batch_commits,
            2,
            "the batch, then the refused reply asked alone"
        );
        assert_eq!(after.batched_writes - before.batched_writes, 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_turn_whose_caller_gave_up_is_still_committed() {
        let (_directory, store) = store().await;
        let message_id = customer_message(&store, "conv-1").await;
        let held = hold_the_writer(&store).await;
        let caller = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.complete_turn(turn("conv-1", message_id, "hi")).await })
        };
        until_queued(&store, 1).await;
        caller.abort();
        drop(held);
        // The turn is committed by the batch's task, with no one waiting for it.
        for _ in 0..200 {
            let messages = store.list_messages("conv-1", None, 10).await.expect("list");
            if messages[0].result.is_some() {
                assert_eq!(messages.len(), 2, "the reply with it");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the abandoned turn was never committed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn turns_after_the_store_closed_fail_instead_of_waiting() {
        let (_directory, store) = store().await;
        let message_id = customer_message(&store, "conv-1").await;
        store.close().await;
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            store.complete_turn(turn("conv-1", message_id, "hi")),
        )
        .await
        .expect("answered, not left waiting");
        assert!(
            matches!(
                outcome,
                Err(StoreError::Database {
                    source: sqlx::Error::PoolClosed,
                    ..
                })
            ),
            "{outcome:?}"
        );
    }
}
