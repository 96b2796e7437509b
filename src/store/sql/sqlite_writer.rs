//! SQLite's one writer: a connection of its own, outside the pool, on which this process's write
//! transactions take turns (FIFO, through a tokio mutex).
//!
//! Why not a pooled connection, as before: sqlx pings a pooled connection before it hands it out
//! and again, from a spawned task, when it is given back, and each ping is a round trip to the
//! connection's own thread. A writer also had to wait for a free pooled connection behind the
//! readers. All of that happened while it held the writer slot, and at 1,000 messages a second
//! the hand-over between writers, not the SQL, was what queued them (evals/RESULTS.md, stops 35
//! and 36). Here the next writer starts with `BEGIN IMMEDIATE` as soon as the last one commits.
//!
//! Transactions are plain `BEGIN IMMEDIATE` / `COMMIT` / `ROLLBACK` statements on the connection
//! (sqlx's own `Transaction` must borrow the connection, which the slot's guard already owns). A
//! write that is dropped without committing (an error returned with `?`, a cancelled request)
//! hands its slot to a task that rolls back before the next writer gets it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{AnyConnection, Connection, Executor};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::store::WriterStats;

/// The writer connection and its queue.
#[derive(Debug)]
pub(super) struct SqliteWriter {
    driver_url: String,
    /// Run on every connection this writer opens (the same as on the pool's connections).
    pragmas: [&'static str; 2],
    slot: Arc<Mutex<WriterSlot>>,
    stats: Arc<WriterCounters>,
}

/// How busy the writer slot is, for `/metrics`: every write of this process queues behind it,
/// so when its held time nears one second per second, writes wait (evals/RESULTS.md, stop 37).
#[derive(Debug, Default)]
struct WriterCounters {
    writes: AtomicU64,
    waited_micros: AtomicU64,
    held_micros: AtomicU64,
}

impl WriterCounters {
    fn add_wait(&self, since: Instant) {
        self.waited_micros
            .fetch_add(micros_since(since), Ordering::Relaxed);
    }

    fn add_hold(&self, since: Instant) {
        self.held_micros
            .fetch_add(micros_since(since), Ordering::Relaxed);
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

fn micros_since(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[derive(Debug)]
struct WriterSlot {
    /// `None` before the first write, after the connection's thread died (the next write opens a
    /// new one) and after `close`.
    connection: Option<AnyConnection>,
    closed: bool,
}

impl SqliteWriter {
    /// Open the writer's connection to `driver_url` (a URL the `Any` driver takes) and run
    /// `pragmas` on it.
    pub(super) async fn connect(
        driver_url: &str,
        pragmas: [&'static str; 2],
    ) -> Result<Self, sqlx::Error> {
        let connection = open(driver_url, pragmas).await?;
        Ok(Self {
            driver_url: driver_url.to_string(),
            pragmas,
            slot: Arc::new(Mutex::new(WriterSlot {
                connection: Some(connection),
                closed: false,
            })),
            stats: Arc::default(),
        })
    }

    pub(super) fn stats(&self) -> WriterStats {
        WriterStats {
            writes: self.stats.writes.load(Ordering::Relaxed),
            waited_micros: self.stats.waited_micros.load(Ordering::Relaxed),
            held_micros: self.stats.held_micros.load(Ordering::Relaxed),
            // Counted by the write batcher, which `SqlStore::writer_stats` asks.
            batch_commits: 0,
            batched_writes: 0,
        }
    }

    /// Wait for this process's earlier writers, then start a write transaction.
    pub(super) async fn begin(&self) -> Result<SqliteWrite, sqlx::Error> {
        let asked = Instant::now();
        let mut slot = Arc::clone(&self.slot).lock_owned().await;
        self.stats.add_wait(asked);
        if slot.closed {
            return Err(sqlx::Error::PoolClosed);
        }
        if slot.connection.is_none() {
            slot.connection = Some(open(&self.driver_url, self.pragmas).await?);
        }
        // From here a drop (this future cancelled, BEGIN failed) rolls back whatever BEGIN left.
        let mut write = SqliteWrite {
            slot: Some(slot),
            held_since: Instant::now(),
            stats: Arc::clone(&self.stats),
        };
        // IMMEDIATE takes the database's write lock now, so that no statement of the transaction
        // has to upgrade a read lock (SQLite refuses that with "database is locked" at once).
        if let Err(error) = write.connection().execute("BEGIN IMMEDIATE").await {
            write.forget_if_dead(&error);
            return Err(error);
        }
        Ok(write)
    }

    /// Close the writer's connection once the current writer is done. Later writes fail with
    /// `PoolClosed`, as the pool's reads do.
    pub(super) async fn close(&self) {
        let mut slot = self.slot.lock().await;
        slot.closed = true;
        if let Some(connection) = slot.connection.take() {
            if let Err(error) = connection.close().await {
                tracing::warn!(%error, "closing the SQLite writer connection");
            }
        }
    }
}

impl WriterSlot {
    /// After an error that means the connection's thread is gone, drop the connection so that
    /// the next writer opens a new one instead of failing forever.
    fn forget_if_dead(&mut self, error: &sqlx::Error) {
        if connection_is_gone(error) {
            tracing::warn!("the SQLite writer connection's thread stopped; reopening it");
            self.connection = None;
        }
    }
}

/// A new SQLite connection with this store's `pragmas` (the writer's, and the readers').
pub(super) async fn open(
    driver_url: &str,
    pragmas: [&'static str; 2],
) -> Result<AnyConnection, sqlx::Error> {
    let mut connection = AnyConnection::connect(driver_url).await?;
    for pragma in pragmas {
        connection.execute(pragma).await?;
    }
    Ok(connection)
}

/// Whether `error` means the connection's own thread has stopped, so that every later statement
/// on it would fail the same way (the writer reopens it, the readers close it).
pub(super) fn connection_is_gone(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::WorkerCrashed)
}

/// An open write transaction holding the writer slot: commit it, or drop it to roll back.
#[derive(Debug)]
pub(super) struct SqliteWrite {
    /// `Some` until `commit` or `drop` takes it.
    slot: Option<OwnedMutexGuard<WriterSlot>>,
    held_since: Instant,
    stats: Arc<WriterCounters>,
}

impl SqliteWrite {
    pub(super) fn connection(&mut self) -> &mut AnyConnection {
        self.slot
            .as_mut()
            .and_then(|slot| slot.connection.as_mut())
            .expect("an open write holds the writer connection")
    }

    /// Commit and give up the slot. When the commit fails, dropping `self` rolls back whatever
    /// SQLite left open.
    pub(super) async fn commit(mut self) -> Result<(), sqlx::Error> {
        let committing = Instant::now();
        match self.connection().execute("COMMIT").await {
            Ok(_) => {
                // Committed: the next writer may start.
                self.slot.take();
                self.stats.add_hold(self.held_since);
                log_slow_write(self.held_since.elapsed(), committing.elapsed());
                Ok(())
            }
            Err(error) => {
                self.forget_if_dead(&error);
                Err(error)
            }
        }
    }

    fn forget_if_dead(&mut self, error: &sqlx::Error) {
        if let Some(slot) = self.slot.as_mut() {
            slot.forget_if_dead(error);
        }
    }
}

/// Every other write of this process waits while one holds the writer, so a slow one stalls them
/// all: say so, with the moment, to match against latency tails (`baton loadtest` prints the
/// slowest seconds). The COMMIT is timed apart because SQLite checkpoints inside the commit that
/// takes the WAL past 1,000 pages (about ten times a second at 1,000 msg/s), with an fsync of the
/// WAL and one of the database file while the writer is held: a disk that stalls shows there
/// (evals/RESULTS.md, "Load", stop 40).
fn log_slow_write(held: Duration, commit: Duration) {
    let (held_ms, commit_ms) = (held.as_secs_f64() * 1000.0, commit.as_secs_f64() * 1000.0);
    if held >= super::STALL_WARNING {
        tracing::warn!(
            held_ms,
            commit_ms,
            "slow SQLite write: every other write of this process waited for it"
        );
    } else if held >= super::STALL_DEBUG {
        tracing::debug!(held_ms, commit_ms, "slow SQLite write");
    }
}

impl Drop for SqliteWrite {
    fn drop(&mut self) {
        let Some(mut slot) = self.slot.take() else {
            return;
        };
        let (stats, held_since) = (Arc::clone(&self.stats), self.held_since);
        if slot.connection.is_none() {
            stats.add_hold(held_since);
            return;
        }
        // Dropping cannot wait, so a task rolls back while still holding the slot: the next
        // writer starts on a clean connection. Without a runtime (it is shutting down) the
        // connection is closed instead, and SQLite rolls back as it closes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            slot.connection = None;
            stats.add_hold(held_since);
            return;
        };
        // Nobody waits for the task: the slot it holds is what orders it before the next write.
        drop(runtime.spawn(async move {
            if let Some(connection) = slot.connection.as_mut() {
                // Fails harmlessly ("no transaction is active") when SQLite already rolled back,
                // e.g. after a failed COMMIT.
                if let Err(error) = connection.execute("ROLLBACK").await {
                    tracing::debug!(%error, "rolling back an abandoned SQLite write");
                    slot.forget_if_dead(&error);
                }
            }
            stats.add_hold(held_since);
        }));
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll};

    use super::*;

    const PRAGMAS: [&str; 2] = ["PRAGMA busy_timeout = 30000;", "PRAGMA foreign_keys = ON;"];

    /// A writer on a fresh WAL database with one table, and a separate connection to read it with.
    async fn writer_and_reader() -> (tempfile::TempDir, SqliteWriter, AnyConnection) {
        sqlx::any::install_default_drivers();
        let directory = tempfile::tempdir().expect("tempdir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            directory.path().join("writer.db").display()
        );
        let mut reader = AnyConnection::connect(&url).await.expect("reader");
        reader
            .execute("PRAGMA journal_mode = WAL; CREATE TABLE notes (text TEXT NOT NULL)")
            .await
            .expect("schema");
        let writer = SqliteWriter::connect(&url, PRAGMAS).await.expect("writer");
        (directory, writer, reader)
    }

    async fn notes(reader: &mut AnyConnection) -> Vec<String> {
        sqlx::query_scalar("SELECT text FROM notes ORDER BY rowid")
            .fetch_all(reader)
            .await
            .expect("read notes")
    }

    async fn insert(write: &mut SqliteWrite, text: &str) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO notes (text) VALUES ($1)")
            .bind(text)
            .execute(write.connection())
            .await
            .map(drop)
    }

    #[tokio::test]
    async fn a_committed_write_is_read_by_other_connections() {
        let (_directory, writer, mut reader) = writer_and_reader().await;
        let mut write = writer.begin().await.expect("begin");
        insert(&mut write, "kept").await.expect("insert");
        assert!(notes(&mut reader).await.is_empty(), "not before the commit");
        write.commit().await.expect("commit");
        assert_eq!(notes(&mut reader).await, ["kept"]);
    }

    #[tokio::test]
    async fn a_dropped_write_is_rolled_back_before_the_next_write_starts() {
        let (_directory, writer, mut reader) = writer_and_reader().await;
        let mut abandoned = writer.begin().await.expect("begin");
        insert(&mut abandoned, "abandoned").await.expect("insert");
        drop(abandoned);
        // The next writer gets the slot only after the rollback: BEGIN would fail inside the
        // abandoned transaction ("cannot start a transaction within a transaction").
        let mut next = writer.begin().await.expect("the next write starts");
        insert(&mut next, "kept").await.expect("insert");
        next.commit().await.expect("commit");
        assert_eq!(notes(&mut reader).await, ["kept"]);
    }

    /// The counters `/metrics` shows: a write is counted when it ends, committed or rolled back
    /// (the rollback's time included), and a writer that queued adds its wait.
    #[tokio::test]
    async fn the_counters_count_ended_writes_their_hold_and_the_waits() {
        let (_directory, writer, _reader) = writer_and_reader().await;
        assert_eq!(writer.stats(), WriterStats::default());
        let mut first = writer.begin().await.expect("begin");
        insert(&mut first, "one").await.expect("insert");
        tokio::join!(
            async {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                first.commit().await.expect("commit");
            },
            async { drop(writer.begin().await.expect("the queued write starts")) },
        );
        // Its rollback runs on a task that holds the slot: the next BEGIN waits for it.
        drop(writer.begin().await.expect("begin after the rollback"));
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                if writer.stats().writes == 3 {
                    break writer.stats();
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the last rollback is counted");
        assert!(
            ended.held_micros >= 50_000,
            "the first write held the slot while the other waited: {ended:?}"
        );
        assert!(
            ended.waited_micros >= 50_000,
            "the queued write waited for it: {ended:?}"
        );
    }

    #[tokio::test]
    async fn a_write_cancelled_mid_statement_leaves_the_writer_usable() {
        let (_directory, writer, mut reader) = writer_and_reader().await;
        {
            // Polled once (BEGIN is sent to the connection's thread), then dropped mid-flight, as
            // when a client's request is cancelled.
            let mut cancelled = pin!(async {
                let mut write = writer.begin().await.expect("begin");
                insert(&mut write, "cancelled").await.expect("insert");
                write.commit().await.expect("commit");
            });
            let mut context = Context::from_waker(std::task::Waker::noop());
            assert!(matches!(
                cancelled.as_mut().poll(&mut context),
                Poll::Pending
            ));
        }
        for text in ["one", "two"] {
            let mut write = writer.begin().await.expect("begin after a cancelled write");
            insert(&mut write, text).await.expect("insert");
            write.commit().await.expect("commit");
        }
        let stored = notes(&mut reader).await;
        assert!(
            stored == ["one", "two"] || stored == ["cancelled", "one", "two"],
            "a cancelled write commits whole or not at all: {stored:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_statement_keeps_the_transaction_for_the_caller_to_drop() {
        let (_directory, writer, mut reader) = writer_and_reader().await;
        let mut write = writer.begin().await.expect("begin");
        insert(&mut write, "first").await.expect("insert");
        let error = sqlx::query("INSERT INTO missing (text) VALUES ('x')")
            .execute(write.connection())
            .await
            .expect_err("no such table");
        assert!(matches!(error, sqlx::Error::Database(_)), "{error:?}");
        drop(write);
        let write = writer.begin().await.expect("begin");
        write.commit().await.expect("an empty write commits");
        assert!(
            notes(&mut reader).await.is_empty(),
            "the first insert went with the rollback"
        );
    }

    #[tokio::test]
    async fn a_writer_whose_connection_is_gone_opens_a_new_one() {
        let (_directory, writer, mut reader) = writer_and_reader().await;
        // What `forget_if_dead` leaves after the connection's thread stopped.
        writer.slot.lock().await.connection = None;
        let mut write = writer.begin().await.expect("begin on a new connection");
        insert(&mut write, "after").await.expect("insert");
        write.commit().await.expect("commit");
        assert_eq!(notes(&mut reader).await, ["after"]);
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(writer.begin().await.expect("begin").connection())
            .await
            .expect("foreign_keys");
        assert_eq!(foreign_keys, 1, "the new connection gets the pragmas too");
    }

    #[tokio::test]
    async fn writes_after_close_are_refused() {
        let (_directory, writer, _reader) = writer_and_reader().await;
        writer.close().await;
        assert!(matches!(writer.begin().await, Err(sqlx::Error::PoolClosed)));
    }
}
