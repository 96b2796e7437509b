//! [`SqlStore`]: the one [`Store`] implementation, over sqlx's `Any` driver so that SQLite and
//! PostgreSQL share every query. The SQL is the common subset of both dialects: `$N` placeholders,
//! `RETURNING`, `ON CONFLICT`, JSON kept as TEXT, timestamps as BIGINT milliseconds. Only the
//! schema (`migrations/sqlite`, `migrations/postgres`: they differ in how ids are generated) and
//! the connection setup differ.
//!
//! Concurrency:
//! - SQLite allows one writer at a time. Writers inside this process take turns (FIFO, no
//!   busy-sleeping) on one connection kept for writing (`sqlite_writer.rs`), and write
//!   transactions start with `BEGIN IMMEDIATE` so that a transaction never has to upgrade a read
//!   lock (which SQLite refuses with "database is locked" instead of waiting). Reads run on a few
//!   connections the store lends out itself (`sqlite_readers.rs`; sqlx's pool only runs the
//!   migrations).
//!   The busy timeout covers writers in other processes, e.g. `baton kb` next to the server. WAL
//!   lets readers run while a write is in progress. With `sqlite_synchronous = "full"` a commit
//!   returns only once an fsync of the WAL covers it, one fsync for all the commits that finished
//!   meanwhile (group commit, `wal_sync.rs`). Finished turns and agent replies that queue while
//!   the writer is busy are written together in one transaction (`write_batch.rs`).
//! - PostgreSQL: every write that adds to a conversation first updates that conversation's row,
//!   which locks it until commit. Writes to one conversation therefore commit in id order, so a
//!   client that resumes "after message N" cannot miss a message that committed late with a smaller
//!   id, and duplicate customer inserts are serialised before they reach the unique index.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};

use super::{
    ConversationAtInsert, ConversationRecord, ConversationState, CustomerInsert, DocumentSummary,
    EventRecord, MessageRecord, Millis, NewMessage, Role, Store, StoreError, TurnCompletion,
    WriterStats,
};
use crate::model::{Chunk, Document, DocumentKind};

// The `HandoffStore` half of `SqlStore`, in its own file; a child module so that it shares the
// private helpers here and in `rows`.
mod handoff;
mod rows;
mod sqlite_readers;
mod sqlite_writer;
mod wal_sync;
mod write_batch;

use rows::{
    conversation_from_row, document_from_rows, document_kind_name, document_summary_from_row,
    event_from_row, message_from_row,
};
use sqlite_readers::{ReadConnection, SqliteReaders};
use sqlite_writer::{SqliteWrite, SqliteWriter};
use wal_sync::WalSync;
use write_batch::WriteBatcher;

/// A wait that every write shares (the writer slot, the group fsync of the WAL) is logged when it
/// takes this long: at debug level from `STALL_DEBUG`, as a warning from `STALL_WARNING`. The same
/// bounds for both, so that the two logs line up against a latency tail.
const STALL_DEBUG: std::time::Duration = std::time::Duration::from_millis(10);
const STALL_WARNING: std::time::Duration = std::time::Duration::from_millis(250);

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// Applied to every new SQLite connection. Foreign keys are per connection in SQLite (and off by
/// default). The busy timeout (ms) is how long a statement waits for another process's write lock
/// before failing with "database is locked". Writers of this process never wait on it (they take
/// turns on `sqlite_writer`), so it only has to outlast a concurrent ingest transaction.
const SQLITE_CONNECTION_PRAGMAS: &str = "PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON;";
/// How hard SQLite syncs a commit to disk (`database.sqlite_synchronous`). Both keep every
/// acknowledged message across a crash of the process (kill -9, a panic, an OOM kill): in WAL mode
/// a commit is in the log before it is acknowledged either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqliteSynchronous {
    /// Every commit is synced to disk before it returns, so acknowledged messages also survive
    /// power loss and an OS crash. The commits that finish while one fsync runs share the next
    /// (group commit, wal_sync.rs). Another connection may read a commit during the fsync that
    /// makes it durable (about a millisecond); only power loss in that window can then undo it.
    #[default]
    Full,
    /// fsync at checkpoints only: faster; after power loss or an OS crash the last commits
    /// before it may be lost.
    Normal,
}

impl SqliteSynchronous {
    /// SQLite itself always runs at NORMAL; `Full` adds the group fsync of the WAL after each
    /// commit (see wal_sync.rs), which is what SQLite's FULL does per commit, shared by the
    /// commits that finish together.
    fn pragma(self) -> &'static str {
        "PRAGMA synchronous = NORMAL;"
    }
}

/// SQLite's read connections (`sqlite_readers.rs`); writes have one of their own
/// (`sqlite_writer.rs`).
const SQLITE_READ_CONNECTIONS: u32 = 4;
const POSTGRES_MAX_CONNECTIONS: u32 = 10;

/// Column lists shared by the queries that build records, so `SELECT` and `RETURNING` cannot drift
/// apart. Macros rather than consts because `concat!` only accepts literals.
macro_rules! message_columns {
    () => {
        "id, conversation_id, role, text, client_message_id, understanding, result, created_at, \
         author_id, kind, meta"
    };
}
macro_rules! conversation_columns {
    () => {
        "id, token_hash, state, created_at, updated_at"
    };
}
macro_rules! event_columns {
    () => {
        "id, conversation_id, kind, payload, created_at"
    };
}
macro_rules! document_summary_columns {
    () => {
        "d.id, d.source, d.title, d.url, d.kind, d.content_hash, d.updated_at, \
         (SELECT COUNT(*) FROM chunks c WHERE c.document_id = d.id) AS chunk_count"
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// A database URL taken apart: which dialect, the URL the driver gets, and for SQLite the file.
#[derive(Debug, PartialEq)]
struct DatabaseTarget {
    dialect: Dialect,
    driver_url: String,
    sqlite_file: Option<PathBuf>,
}

impl DatabaseTarget {
    fn parse(url: &str) -> Result<Self, StoreError> {
        let unsupported = || StoreError::UnsupportedUrl(url.to_string());
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseTarget {
                dialect: Dialect::Postgres,
                driver_url: url.to_string(),
                sqlite_file: None,
            });
        }
        let location = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(unsupported)?;
        let (database, params) = match location.split_once('?') {
            Some((database, params)) => (database, Some(params)),
            None => (location, None),
        };
        // The `Any` driver re-parses the URL for every pooled connection, and sqlx gives each parse
        // of an in-memory URL a fresh database: every connection would see a different, empty store.
        let in_memory = database == ":memory:"
            || params.is_some_and(|params| params.split('&').any(|pair| pair == "mode=memory"));
        if database.is_empty() || in_memory {
            return Err(unsupported());
        }
        // Let sqlx decode the file name (percent escapes) exactly as it will when opening it.
        let options = SqliteConnectOptions::from_str(url).map_err(|_| unsupported())?;
        let sqlite_file = options.get_filename().to_path_buf();
        let explicit_mode =
            params.is_some_and(|params| params.split('&').any(|pair| pair.starts_with("mode=")));
        let driver_url = match (params, explicit_mode) {
            (_, true) => url.to_string(),
            (Some(_), false) => format!("{url}&mode=rwc"),
            (None, false) => format!("{url}?mode=rwc"),
        };
        Ok(DatabaseTarget {
            dialect: Dialect::Sqlite,
            driver_url,
            sqlite_file: Some(sqlite_file),
        })
    }
}

/// The SQL store. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite only: the connection this process's writers take turns on (see the module docs).
    sqlite_writer: Option<Arc<SqliteWriter>>,
    /// SQLite only: finished turns committed together (`write_batch.rs`).
    write_batcher: Option<WriteBatcher>,
    /// SQLite only: the connections reads run on (PostgreSQL reads from `pool`).
    sqlite_readers: Option<SqliteReaders>,
    /// SQLite with `sqlite_synchronous = "full"`: the group fsync every commit waits for.
    wal_sync: Option<Arc<WalSync>>,
}

impl SqlStore {
    /// Connect to `sqlite://PATH` (the file and its directory are created when missing) or
    /// `postgres://...`, and bring the schema up to date.
    pub async fn connect(url: &str) -> Result<SqlStore, StoreError> {
        Self::connect_with(url, SqliteSynchronous::default()).await
    }

    /// As [`SqlStore::connect`], with SQLite's sync level (ignored for PostgreSQL).
    pub async fn connect_with(
        url: &str,
        synchronous: SqliteSynchronous,
    ) -> Result<SqlStore, StoreError> {
        let target = DatabaseTarget::parse(url)?;
        sqlx::any::install_default_drivers();
        let store = match target.dialect {
            Dialect::Sqlite => Self::connect_sqlite(&target, synchronous).await?,
            Dialect::Postgres => Self::connect_postgres(&target).await?,
        };
        let migrator = match target.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATOR,
            Dialect::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator
            .run(&store.pool)
            .await
            .map_err(StoreError::Migrate)?;
        Ok(store)
    }

    async fn connect_sqlite(
        target: &DatabaseTarget,
        synchronous: SqliteSynchronous,
    ) -> Result<SqlStore, StoreError> {
        if let Some(directory) = target.sqlite_file.as_deref().and_then(Path::parent) {
            if !directory.as_os_str().is_empty() {
                tokio::fs::create_dir_all(directory)
                    .await
                    .map_err(|source| StoreError::CreateDirectory {
                        path: directory.to_path_buf(),
                        source,
                    })?;
            }
        }
        // sqlx's pool runs the migrations and sets the journal mode; reads and writes have
        // connections of their own (see the module docs). The `Any` driver only takes a URL,
        // which cannot carry these settings.
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    connection.execute(SQLITE_CONNECTION_PRAGMAS).await?;
                    connection.execute(synchronous.pragma()).await?;
                    Ok(())
                })
            })
            .connect(&target.driver_url)
            .await
            .map_err(StoreError::Connect)?;
        // WAL is a property of the database file, so setting it once suffices; doing it per
        // connection would need an exclusive lock that the busy timeout cannot wait for.
        let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
            .fetch_one(&pool)
            .await
            .map_err(StoreError::Connect)?;
        if !journal_mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Connect(sqlx::Error::Configuration(
                format!("SQLite refused WAL journal mode (it reports {journal_mode:?})").into(),
            )));
        }
        let wal_sync = match (synchronous, target.sqlite_file.as_deref()) {
            (SqliteSynchronous::Full, Some(file)) => Some(Arc::new(WalSync::new(file))),
            _ => None,
        };
        let pragmas = [SQLITE_CONNECTION_PRAGMAS, synchronous.pragma()];
        // Opened once the file is in WAL mode (switching needs no other connection mid-transaction).
        let writer = Arc::new(
            SqliteWriter::connect(&target.driver_url, pragmas)
                .await
                .map_err(StoreError::Connect)?,
        );
        Ok(SqlStore {
            pool,
            dialect: Dialect::Sqlite,
            write_batcher: Some(WriteBatcher::new(Arc::clone(&writer), wal_sync.clone())),
            sqlite_writer: Some(writer),
            sqlite_readers: Some(SqliteReaders::new(
                &target.driver_url,
                pragmas,
                SQLITE_READ_CONNECTIONS,
            )),
            wal_sync,
        })
    }

    async fn connect_postgres(target: &DatabaseTarget) -> Result<SqlStore, StoreError> {
        let pool = AnyPoolOptions::new()
            .max_connections(POSTGRES_MAX_CONNECTIONS)
            .connect(&target.driver_url)
            .await
            .map_err(StoreError::Connect)?;
        Ok(SqlStore {
            pool,
            dialect: Dialect::Postgres,
            sqlite_writer: None,
            write_batcher: None,
            sqlite_readers: None,
            wal_sync: None,
        })
    }

    /// Close every connection, waiting for those in use to be returned. Later calls fail.
    pub async fn close(&self) {
        if let Some(writer) = &self.sqlite_writer {
            writer.close().await;
        }
        if let Some(readers) = &self.sqlite_readers {
            readers.close().await;
        }
        self.pool.close().await;
    }

    /// A connection to read on, until dropped.
    async fn read(&self) -> Result<ReadConnection<'_>, StoreError> {
        const CONTEXT: &str = "getting a connection to read on";
        Ok(match &self.sqlite_readers {
            Some(readers) => ReadConnection::Sqlite(readers.acquire().await.context(CONTEXT)?),
            None => ReadConnection::Pooled(self.pool.acquire().await.context(CONTEXT)?),
        })
    }

    /// Start a write transaction; see the module docs for why SQLite needs more than `BEGIN`.
    async fn begin_write(&self, context: &'static str) -> Result<WriteTransaction<'_>, StoreError> {
        let transaction = match &self.sqlite_writer {
            Some(writer) => OpenWrite::Sqlite(writer.begin().await.context(context)?),
            None => OpenWrite::Pooled(self.pool.begin().await.context(context)?),
        };
        Ok(WriteTransaction {
            transaction,
            wal_sync: self.wal_sync.as_deref(),
        })
    }
}

/// A write transaction; dropping it rolls back. On SQLite it holds this process's writer slot
/// until it commits or is dropped.
struct WriteTransaction<'store> {
    transaction: OpenWrite,
    wal_sync: Option<&'store WalSync>,
}

enum OpenWrite {
    /// SQLite: on the writer's own connection.
    Sqlite(SqliteWrite),
    /// PostgreSQL: on a pooled connection (its writers need no queue; row locks order them).
    Pooled(Transaction<'static, Any>),
}

impl WriteTransaction<'_> {
    fn connection(&mut self) -> &mut AnyConnection {
        match &mut self.transaction {
            OpenWrite::Sqlite(write) => write.connection(),
            OpenWrite::Pooled(transaction) => transaction,
        }
    }

    /// Commit, give up the writer slot (the next writer may start while this one waits), then
    /// wait until the commit is on disk when the group fsync is on.
    async fn commit(self, context: &'static str) -> Result<(), StoreError> {
        let WriteTransaction {
            transaction,
            wal_sync,
        } = self;
        match transaction {
            OpenWrite::Sqlite(write) => write.commit().await,
            OpenWrite::Pooled(transaction) => transaction.commit().await,
        }
        .context(context)?;
        if let Some(wal_sync) = wal_sync {
            wal_sync
                .after_commit()
                .await
                .map_err(|source| StoreError::Database {
                    context,
                    source: sqlx::Error::Io(source),
                })?;
        }
        Ok(())
    }
}

trait DatabaseContext<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> DatabaseContext<T> for Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Database { context, source })
    }
}

fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database_error) if database_error.is_foreign_key_violation())
}

fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since_epoch| Millis::try_from(since_epoch.as_millis()).unwrap_or(Millis::MAX))
        .unwrap_or(0)
}

/// Bump the conversation's `updated_at`, which also locks its row until commit (PostgreSQL; SQLite
/// is locked whole anyway). Fails with `ConversationNotFound` when it does not exist.
async fn touch_conversation(
    connection: &mut AnyConnection,
    conversation_id: &str,
    now: Millis,
) -> Result<(), StoreError> {
    let touched = sqlx::query("UPDATE conversations SET updated_at = $2 WHERE id = $1")
        .bind(conversation_id)
        .bind(now)
        .execute(connection)
        .await
        .context("updating a conversation")?;
    if touched.rows_affected() == 0 {
        return Err(StoreError::ConversationNotFound(
            conversation_id.to_string(),
        ));
    }
    Ok(())
}

/// [`touch_conversation`] that also returns the conversation's state and holder, in the same
/// statement.
async fn touch_conversation_reading_state(
    connection: &mut AnyConnection,
    conversation_id: &str,
    now: Millis,
) -> Result<ConversationAtInsert, StoreError> {
    let found: Option<(String, Option<String>)> = sqlx::query_as(
        "UPDATE conversations SET updated_at = $2 WHERE id = $1 RETURNING state, agent_id",
    )
    .bind(conversation_id)
    .bind(now)
    .fetch_optional(connection)
    .await
    .context("updating a conversation")?;
    let (state, agent_id) =
        found.ok_or_else(|| StoreError::ConversationNotFound(conversation_id.to_string()))?;
    Ok(ConversationAtInsert {
        state: rows::conversation_state(conversation_id, &state)?,
        agent_id,
    })
}

async fn insert_message_row(
    connection: &mut AnyConnection,
    conversation_id: &str,
    message: &NewMessage,
    now: Millis,
) -> Result<MessageRecord, StoreError> {
    let row = sqlx::query(concat!(
        "INSERT INTO messages (conversation_id, role, text, created_at, author_id, kind, meta) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
        message_columns!()
    ))
    .bind(conversation_id)
    .bind(message.role.as_str())
    .bind(message.text.as_str())
    .bind(now)
    .bind(message.author_id.as_deref())
    .bind(message.kind.as_deref())
    .bind(message.meta.as_ref().map(|meta| meta.to_string()))
    .fetch_one(connection)
    .await
    .context("inserting a message")?;
    message_from_row(&row)
}

const COMPLETING_A_TURN: &str = "completing a turn";

/// A turn's understanding and result, on its customer message if that has none yet. Binds:
/// message id, understanding, result, conversation id, the customer role.
const RECORD_TURN_RESULT: &str = "UPDATE messages SET understanding = $2, result = $3 \
     WHERE id = $1 AND conversation_id = $4 AND role = $5 AND result IS NULL";

/// An agent reply's message, inserted only if the statement before it changed a row. Binds:
/// conversation id, role, text, created_at, author id, kind, meta, the reply's position in the
/// batch (returned as `batch_position`). SQLite only (`changes()`): run by the write batch.
pub(super) const INSERT_AGENT_MESSAGE_IF_RECORDED: &str = concat!(
    "INSERT INTO messages (conversation_id, role, text, created_at, author_id, kind, meta) \
     SELECT $1, $2, $3, $4, $5, $6, $7 WHERE changes() = 1 RETURNING ",
    message_columns!(),
    ", $8 AS batch_position"
);

/// Binds: conversation id, kind, payload, created_at.
const INSERT_TURN_EVENT: &str =
    "INSERT INTO events (conversation_id, kind, payload, created_at) VALUES ($1, $2, $3, $4)";

/// Write everything a finished turn records (see [`Store::complete_turn`]) inside the caller's
/// write transaction. On an error some of it may be written: the caller rolls back.
async fn write_turn(
    connection: &mut AnyConnection,
    turn: &TurnCompletion,
    now: Millis,
) -> Result<Option<MessageRecord>, StoreError> {
    let conversation_id = turn.conversation_id.as_str();
    // The conversation row first (its first statement bumps `updated_at`), as in every other
    // write, so that lock order is the same everywhere and transactions cannot deadlock.
    // Whether the message is a customer message of this conversation is checked when its
    // result is written below; a refusal there rolls this back.
    handoff::apply_turn_state(
        &mut *connection,
        conversation_id,
        turn.customer_message_id,
        turn.new_state,
        turn.enqueue.as_ref(),
        now,
    )
    .await?;
    // The reply first: its id goes into the stored result, so a retried request gets the
    // same `reply_message_id` the first one did.
    let reply = match &turn.reply {
        Some(reply) => {
            Some(insert_message_row(&mut *connection, conversation_id, reply, now).await?)
        }
        None => None,
    };
    let mut result = turn.result.clone();
    if let (Some(reply), Some(object)) = (&reply, result.as_object_mut()) {
        object.insert("reply_message_id".into(), serde_json::Value::from(reply.id));
    }
    let completed = sqlx::query(RECORD_TURN_RESULT)
        .bind(turn.customer_message_id)
        .bind(turn.understanding.to_string())
        .bind(result.to_string())
        .bind(conversation_id)
        .bind(Role::Customer.as_str())
        .execute(&mut *connection)
        .await
        .context(COMPLETING_A_TURN)?;
    if completed.rows_affected() == 0 {
        // The caller's rollback undoes the state change and the reply above. Only this
        // refusal reads the message, to say which one it is.
        let exists: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM messages WHERE id = $1 AND conversation_id = $2 AND role = $3",
        )
        .bind(turn.customer_message_id)
        .bind(conversation_id)
        .bind(Role::Customer.as_str())
        .fetch_optional(&mut *connection)
        .await
        .context(COMPLETING_A_TURN)?;
        return Err(match exists {
            Some(_) => StoreError::TurnAlreadyCompleted(turn.customer_message_id),
            None => StoreError::MessageNotFound(turn.customer_message_id),
        });
    }
    for (kind, payload) in &turn.events {
        sqlx::query(INSERT_TURN_EVENT)
            .bind(conversation_id)
            .bind(kind.as_str())
            .bind(payload.to_string())
            .bind(now)
            .execute(&mut *connection)
            .await
            .context(COMPLETING_A_TURN)?;
    }
    Ok(reply)
}

#[async_trait]
impl Store for SqlStore {
    fn writer_stats(&self) -> Option<WriterStats> {
        let mut stats = self.sqlite_writer.as_deref().map(SqliteWriter::stats)?;
        if let Some(batcher) = &self.write_batcher {
            let batches = batcher.stats();
            stats.batch_commits = batches.commits;
            stats.batched_writes = batches.writes;
        }
        Some(stats)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&mut self.read().await?)
            .await
            .context("pinging the database")?;
        Ok(())
    }

    async fn create_conversation(
        &self,
        id: &str,
        token_hash: &str,
    ) -> Result<ConversationRecord, StoreError> {
        const CONTEXT: &str = "creating a conversation";
        let now = now_millis();
        let mut write = self.begin_write(CONTEXT).await?;
        let row = sqlx::query(concat!(
            "INSERT INTO conversations (id, token_hash, state, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) RETURNING ",
            conversation_columns!()
        ))
        .bind(id)
        .bind(token_hash)
        .bind(ConversationState::Bot.as_str())
        .bind(now)
        .fetch_one(write.connection())
        .await
        .context(CONTEXT)?;
        let conversation = conversation_from_row(&row)?;
        write.commit(CONTEXT).await?;
        Ok(conversation)
    }

    async fn get_conversation(&self, id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut self.read().await?)
        .await
        .context("reading a conversation")?;
        row.as_ref().map(conversation_from_row).transpose()
    }

    async fn set_conversation_state(
        &self,
        id: &str,
        state: ConversationState,
    ) -> Result<(), StoreError> {
        const CONTEXT: &str = "changing a conversation's state";
        let mut write = self.begin_write(CONTEXT).await?;
        let updated =
            sqlx::query("UPDATE conversations SET state = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(state.as_str())
                .bind(now_millis())
                .execute(write.connection())
                .await
                .context(CONTEXT)?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::ConversationNotFound(id.to_string()));
        }
        write.commit(CONTEXT).await
    }

    async fn insert_customer_message_with_state(
        &self,
        conversation_id: &str,
        text: &str,
        client_message_id: Option<&str>,
    ) -> Result<(CustomerInsert, ConversationAtInsert), StoreError> {
        const CONTEXT: &str = "inserting a customer message";
        let now = now_millis();
        let mut write = self.begin_write(CONTEXT).await?;
        // Locks the conversation, so a racing duplicate waits here until this insert commits and
        // then finds it.
        let conversation =
            touch_conversation_reading_state(write.connection(), conversation_id, now).await?;
        // ON CONFLICT is the backstop should a writer ever skip that lock: the unique index, not
        // the lock, is what guarantees a single row.
        let inserted = sqlx::query(concat!(
            "INSERT INTO messages (conversation_id, role, text, client_message_id, created_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (conversation_id, client_message_id) DO NOTHING RETURNING ",
            message_columns!()
        ))
        .bind(conversation_id)
        .bind(Role::Customer.as_str())
        .bind(text)
        .bind(client_message_id)
        .bind(now)
        .fetch_optional(write.connection())
        .await
        .context(CONTEXT)?;
        if let Some(row) = inserted {
            let message = message_from_row(&row)?;
            write.commit(CONTEXT).await?;
            return Ok((CustomerInsert::New(message), conversation));
        }
        // Only a repeated client_message_id conflicts (NULLs never do), so it is Some here.
        let existing = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE conversation_id = $1 AND client_message_id = $2"
        ))
        .bind(conversation_id)
        .bind(client_message_id)
        .fetch_one(write.connection())
        .await
        .context("reading a repeated customer message")?;
        // Dropping `write` rolls back the updated_at bump: a retry changes nothing.
        Ok((
            CustomerInsert::Existing(message_from_row(&existing)?),
            conversation,
        ))
    }

    async fn complete_turn(
        &self,
        turn: TurnCompletion,
    ) -> Result<Option<MessageRecord>, StoreError> {
        match &self.write_batcher {
            // SQLite: the turns finishing together commit together (see `write_batch.rs`).
            Some(batcher) => batcher.complete(turn).await,
            None => {
                let mut write = self.begin_write(COMPLETING_A_TURN).await?;
                let reply = write_turn(write.connection(), &turn, now_millis()).await?;
                write.commit(COMPLETING_A_TURN).await?;
                Ok(reply)
            }
        }
    }

    async fn insert_message(
        &self,
        conversation_id: &str,
        message: NewMessage,
    ) -> Result<MessageRecord, StoreError> {
        const CONTEXT: &str = "inserting a message";
        let now = now_millis();
        let mut write = self.begin_write(CONTEXT).await?;
        touch_conversation(write.connection(), conversation_id, now).await?;
        let stored = insert_message_row(write.connection(), conversation_id, &message, now).await?;
        write.commit(CONTEXT).await?;
        Ok(stored)
    }

    async fn list_messages(
        &self,
        conversation_id: &str,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        // Ids start at 1, so "after 0" is "from the start"; a constant keeps the query one shape.
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE conversation_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(conversation_id)
        .bind(after.unwrap_or(0))
        .bind(limit.max(0))
        .fetch_all(&mut self.read().await?)
        .await
        .context("listing messages")?;
        rows.iter().map(message_from_row).collect()
    }

    async fn recent_messages(
        &self,
        conversation_id: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE conversation_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
        ))
        .bind(conversation_id)
        .bind(before)
        .bind(limit.max(0))
        .fetch_all(&mut self.read().await?)
        .await
        .context("listing recent messages")?;
        let mut messages = rows
            .iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        messages.reverse();
        Ok(messages)
    }

    async fn append_event(
        &self,
        conversation_id: Option<&str>,
        kind: &str,
        payload: &serde_json::Value,
    ) -> Result<EventRecord, StoreError> {
        const CONTEXT: &str = "appending an event";
        let mut write = self.begin_write(CONTEXT).await?;
        let inserted = sqlx::query(concat!(
            "INSERT INTO events (conversation_id, kind, payload, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING ",
            event_columns!()
        ))
        .bind(conversation_id)
        .bind(kind)
        .bind(payload.to_string())
        .bind(now_millis())
        .fetch_one(write.connection())
        .await;
        let row = match (inserted, conversation_id) {
            (Err(error), Some(conversation_id)) if is_foreign_key_violation(&error) => {
                return Err(StoreError::ConversationNotFound(
                    conversation_id.to_string(),
                ));
            }
            (inserted, _) => inserted.context(CONTEXT)?,
        };
        let event = event_from_row(&row)?;
        write.commit(CONTEXT).await?;
        Ok(event)
    }

    async fn list_events(
        &self,
        conversation_id: Option<&str>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        const CONTEXT: &str = "listing events";
        let after = after.unwrap_or(0);
        let limit = limit.max(0);
        // Two statements rather than `($1 IS NULL OR conversation_id = $1)`, which would keep
        // the planner from using the (conversation_id, id) index.
        let rows = match conversation_id {
            Some(conversation_id) => {
                sqlx::query(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events WHERE conversation_id = $1 AND id > $2 ORDER BY id LIMIT $3"
                ))
                .bind(conversation_id)
                .bind(after)
                .bind(limit)
                .fetch_all(&mut self.read().await?)
                .await
            }
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events WHERE id > $1 ORDER BY id LIMIT $2"
                ))
                .bind(after)
                .bind(limit)
                .fetch_all(&mut self.read().await?)
                .await
            }
        }
        .context(CONTEXT)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn settled_events(&self, after: i64, limit: i64) -> Result<Vec<EventRecord>, StoreError> {
        const CONTEXT: &str = "listing settled events";
        // With PostgreSQL an event's id is taken at insert and the event becomes visible at
        // commit, so a later id can be seen first; reading only events whose writing transactions
        // have all ended keeps a cursor from passing one still committing
        // (migrations/postgres/0004_cluster.sql). SQLite has one writer: ids appear in order.
        let query = match self.dialect {
            Dialect::Sqlite => concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE id > $1 ORDER BY id LIMIT $2"
            ),
            Dialect::Postgres => concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE id > $1 \
                 AND tx < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY id LIMIT $2"
            ),
        };
        let rows = sqlx::query(query)
            .bind(after)
            .bind(limit.max(0))
            .fetch_all(&mut self.read().await?)
            .await
            .context(CONTEXT)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn upsert_document(&self, document: &Document) -> Result<(), StoreError> {
        const CONTEXT: &str = "storing a document";
        let mut write = self.begin_write(CONTEXT).await?;
        // A source has one document. Should the id scheme for a source ever change, the old
        // document (and through the cascade its chunks) makes way instead of failing the insert
        // on the unique source.
        sqlx::query("DELETE FROM documents WHERE source = $1 AND id <> $2")
            .bind(document.source.as_str())
            .bind(document.id.as_str())
            .execute(write.connection())
            .await
            .context(CONTEXT)?;
        sqlx::query(
            "INSERT INTO documents (id, source, title, url, kind, content_hash, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET source = excluded.source, title = excluded.title, \
             url = excluded.url, kind = excluded.kind, content_hash = excluded.content_hash, \
             updated_at = excluded.updated_at",
        )
        .bind(document.id.as_str())
        .bind(document.source.as_str())
        .bind(document.title.as_str())
        .bind(document.url.as_deref())
        .bind(document_kind_name(document.kind))
        .bind(document.content_hash.as_str())
        .bind(now_millis())
        .execute(write.connection())
        .await
        .context(CONTEXT)?;
        sqlx::query("DELETE FROM chunks WHERE document_id = $1")
            .bind(document.id.as_str())
            .execute(write.connection())
            .await
            .context(CONTEXT)?;
        for chunk in &document.chunks {
            let heading_path = serde_json::Value::from(chunk.heading_path.clone()).to_string();
            sqlx::query(
                "INSERT INTO chunks (id, document_id, ordinal, heading_path, text, question, \
                 content_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(chunk.id.as_str())
            .bind(document.id.as_str())
            .bind(i64::from(chunk.ordinal))
            .bind(heading_path)
            .bind(chunk.text.as_str())
            .bind(chunk.question.as_deref())
            .bind(chunk.content_hash.as_str())
            .execute(write.connection())
            .await
            .context(CONTEXT)?;
        }
        write.commit(CONTEXT).await
    }

    async fn get_document(&self, id: &str) -> Result<Option<Document>, StoreError> {
        // One statement, so the document and its chunks come from one snapshot even while an
        // upsert replaces them.
        let rows = sqlx::query(
            "SELECT d.id, d.source, d.title, d.url, d.kind, d.content_hash, \
             c.id AS chunk_id, c.ordinal, c.heading_path, c.text, c.question, \
             c.content_hash AS chunk_content_hash \
             FROM documents d LEFT JOIN chunks c ON c.document_id = d.id \
             WHERE d.id = $1 ORDER BY c.ordinal",
        )
        .bind(id)
        .fetch_all(&mut self.read().await?)
        .await
        .context("reading a document")?;
        document_from_rows(&rows)
    }

    async fn find_document_by_source(
        &self,
        source: &str,
    ) -> Result<Option<DocumentSummary>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            document_summary_columns!(),
            " FROM documents d WHERE d.source = $1"
        ))
        .bind(source)
        .fetch_optional(&mut self.read().await?)
        .await
        .context("finding a document by source")?;
        row.as_ref().map(document_summary_from_row).transpose()
    }

    async fn list_documents(&self) -> Result<Vec<DocumentSummary>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            document_summary_columns!(),
            " FROM documents d ORDER BY d.source"
        ))
        .fetch_all(&mut self.read().await?)
        .await
        .context("listing documents")?;
        rows.iter().map(document_summary_from_row).collect()
    }

    async fn delete_document(&self, id: &str) -> Result<bool, StoreError> {
        const CONTEXT: &str = "deleting a document";
        let mut write = self.begin_write(CONTEXT).await?;
        let deleted = sqlx::query("DELETE FROM documents WHERE id = $1")
            .bind(id)
            .execute(write.connection())
            .await
            .context(CONTEXT)?;
        write.commit(CONTEXT).await?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn index_encoder(&self) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM index_state WHERE name = 'encoder'")
            .fetch_optional(&mut self.read().await?)
            .await
            .context("reading the index's encoder")?;
        row.map(|row| sqlx::Row::try_get::<String, _>(&row, "value"))
            .transpose()
            .context("reading the index's encoder")
    }

    async fn set_index_encoder(&self, digest: &str) -> Result<(), StoreError> {
        const CONTEXT: &str = "recording the index's encoder";
        let mut write = self.begin_write(CONTEXT).await?;
        sqlx::query(
            "INSERT INTO index_state (name, value) VALUES ('encoder', $1) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(digest)
        .execute(write.connection())
        .await
        .context(CONTEXT)?;
        write.commit(CONTEXT).await
    }
}

#[cfg(test)]
mod tests {
    use super::rows::parse_document_kind;
    use super::*;

    #[test]
    fn postgres_urls_pass_through_unchanged() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/baton",
            "postgresql://user:secret@db/baton?sslmode=require",
        ] {
            let target = DatabaseTarget::parse(url).expect("a PostgreSQL URL");
            assert_eq!(target.dialect, Dialect::Postgres);
            assert_eq!(target.driver_url, url);
            assert_eq!(target.sqlite_file, None);
        }
    }

    #[test]
    fn sqlite_urls_name_the_file_and_ask_for_it_to_be_created() {
        let relative = DatabaseTarget::parse("sqlite://data/baton.db").expect("relative path");
        assert_eq!(relative.dialect, Dialect::Sqlite);
        assert_eq!(relative.driver_url, "sqlite://data/baton.db?mode=rwc");
        assert_eq!(relative.sqlite_file, Some(PathBuf::from("data/baton.db")));

        let absolute = DatabaseTarget::parse("sqlite:///var/lib/baton/baton.db").expect("absolute");
        assert_eq!(
            absolute.sqlite_file,
            Some(PathBuf::from("/var/lib/baton/baton.db"))
        );

        let with_params =
            DatabaseTarget::parse("sqlite://baton.db?cache=private").expect("with params");
        assert_eq!(
            with_params.driver_url,
            "sqlite://baton.db?cache=private&mode=rwc"
        );

        let short_form = DatabaseTarget::parse("sqlite:baton.db").expect("short form");
        assert_eq!(short_form.driver_url, "sqlite:baton.db?mode=rwc");
        assert_eq!(short_form.sqlite_file, Some(PathBuf::from("baton.db")));

        let escaped = DatabaseTarget::parse("sqlite://my%20data/baton.db").expect("escaped");
        assert_eq!(escaped.sqlite_file, Some(PathBuf::from("my data/baton.db")));
    }

    #[test]
    fn an_explicit_sqlite_mode_is_kept() {
        let read_only = DatabaseTarget::parse("sqlite://baton.db?mode=ro").expect("read-only");
        assert_eq!(read_only.driver_url, "sqlite://baton.db?mode=ro");
    }

    #[test]
    fn in_memory_and_foreign_urls_are_rejected() {
        for url in [
            "sqlite::memory:",
            "sqlite://baton.db?mode=memory",
            "sqlite://",
            "mysql://root@localhost/baton",
            "baton.db",
        ] {
            assert!(
                matches!(DatabaseTarget::parse(url), Err(StoreError::UnsupportedUrl(rejected)) if rejected == url),
                "{url} should be rejected"
            );
        }
    }

    #[test]
    fn document_kind_names_round_trip_and_match_the_api_names() {
        for kind in [
            DocumentKind::Markdown,
            DocumentKind::Text,
            DocumentKind::Html,
            DocumentKind::Pdf,
            DocumentKind::Faq,
        ] {
            let name = document_kind_name(kind);
            assert_eq!(parse_document_kind(name), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).expect("serialisable"),
                serde_json::Value::from(name)
            );
        }
        assert_eq!(parse_document_kind("spreadsheet"), None);
    }

    #[tokio::test]
    async fn sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout() {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = directory.path().join("not/yet/there/baton.db");
        let store = SqlStore::connect(&format!("sqlite://{}", file.display()))
            .await
            .expect("connect creates the directories and the file");
        assert!(file.exists());

        // Hold two read connections at once so that a second one is opened: the settings must
        // apply to every connection, not just the first.
        let mut first = store.read().await.expect("first connection");
        let mut second = store.read().await.expect("second connection");
        for connection in [&mut first, &mut second] {
            let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *connection)
                .await
                .expect("journal_mode");
            assert_eq!(journal_mode, "wal");
            let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(&mut *connection)
                .await
                .expect("foreign_keys");
            assert_eq!(foreign_keys, 1);
            let busy_timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(&mut *connection)
                .await
                .expect("busy_timeout");
            assert_eq!(busy_timeout, 30_000);
            let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *connection)
                .await
                .expect("synchronous");
            // NORMAL on the connection either way: "full" is the group fsync after each commit.
            assert_eq!(synchronous, 1);
        }
        drop((first, second));
        // The writer's own connection too.
        let mut write = store
            .begin_write("a test write")
            .await
            .expect("begin a write");
        for (pragma, expected) in [
            ("PRAGMA foreign_keys", 1),
            ("PRAGMA busy_timeout", 30_000),
            ("PRAGMA synchronous", 1),
        ] {
            let value: i64 = sqlx::query_scalar(pragma)
                .fetch_one(write.connection())
                .await
                .expect(pragma);
            assert_eq!(value, expected, "{pragma} on the writer's connection");
        }
        drop(write);
        assert!(
            store.wal_sync.is_some(),
            "full (the default) syncs every commit"
        );
        let normal = SqlStore::connect_with(
            &format!("sqlite://{}", file.display()),
            SqliteSynchronous::Normal,
        )
        .await
        .expect("connect");
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut normal.read().await.expect("a read connection"))
            .await
            .expect("synchronous");
        assert_eq!(synchronous, 1);
        assert!(
            normal.wal_sync.is_none(),
            "normal leaves syncing to checkpoints"
        );
    }

    #[tokio::test]
    async fn connect_reports_an_unusable_url_before_touching_the_disk() {
        let error = SqlStore::connect("sqlite::memory:")
            .await
            .expect_err("in-memory SQLite is refused");
        assert!(matches!(error, StoreError::UnsupportedUrl(_)));
    }
}
