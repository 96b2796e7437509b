//! SQLite's read connections: a few connections the store keeps and lends to one reader at a
//! time, instead of sqlx's pool.
//!
//! Why: sqlx's pool spawns a task each time a connection is given back, and that task pings the
//! connection (a round trip to the connection's own thread) before the next reader may have it.
//! A message in a human-owned conversation costs several reads, so those hand-overs were a large
//! share of the server's thread switches (evals/RESULTS.md, stop 36). Here a connection goes back
//! to the idle list when the reader drops it.
//!
//! What the ping was for: noticing a connection whose thread is gone. Here the statements' own
//! errors tell: queries run on [`ReadConnection`], which marks its connection on `WorkerCrashed`,
//! and a marked connection is closed instead of lent again.

use std::sync::{Mutex, PoisonError};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use sqlx::any::{AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Connection, Either, Execute, Executor};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::sqlite_writer::{connection_is_gone, open};

#[derive(Debug)]
pub(super) struct SqliteReaders {
    driver_url: String,
    pragmas: [&'static str; 2],
    size: u32,
    /// Connections not lent out; opened when first needed.
    idle: Mutex<Vec<AnyConnection>>,
    /// One per connection that may be lent; closed by `close`.
    permits: Semaphore,
}

impl SqliteReaders {
    pub(super) fn new(driver_url: &str, pragmas: [&'static str; 2], size: u32) -> Self {
        Self {
            driver_url: driver_url.to_string(),
            pragmas,
            size,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size as usize),
        }
    }

    /// Wait for a free connection (readers are served in order) and lend it.
    pub(super) async fn acquire(&self) -> Result<SqliteRead<'_>, sqlx::Error> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_closed| sqlx::Error::PoolClosed)?;
        let idle = self.idle_list().pop();
        let connection = match idle {
            Some(connection) => connection,
            None => open(&self.driver_url, self.pragmas).await?,
        };
        Ok(SqliteRead {
            readers: self,
            connection: Some(connection),
            dead: false,
            _permit: permit,
        })
    }

    /// Wait for the readers in flight, then close every connection. Later reads fail with
    /// `PoolClosed`, as the pool's did.
    pub(super) async fn close(&self) {
        // Queued behind the readers already waiting, it gets every permit once they are done.
        if let Ok(every_permit) = self.permits.acquire_many(self.size).await {
            every_permit.forget();
        }
        self.permits.close();
        let connections = std::mem::take(&mut *self.idle_list());
        for connection in connections {
            if let Err(error) = connection.close().await {
                tracing::warn!(%error, "closing a SQLite read connection");
            }
        }
    }

    fn idle_list(&self) -> std::sync::MutexGuard<'_, Vec<AnyConnection>> {
        // The list is only pushed to and popped from, so a panic elsewhere cannot leave it torn.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection lent to one reader; it goes back when dropped.
#[derive(Debug)]
pub(super) struct SqliteRead<'readers> {
    readers: &'readers SqliteReaders,
    /// `Some` until dropped.
    connection: Option<AnyConnection>,
    /// A statement failed with `WorkerCrashed`: the connection's thread is gone.
    dead: bool,
    _permit: SemaphorePermit<'readers>,
}

impl Drop for SqliteRead<'_> {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if self.dead {
            tracing::warn!("a SQLite read connection's thread stopped; opening another");
            return;
        }
        // Before the permit goes (fields drop after this), so the next reader finds it idle.
        self.readers.idle_list().push(connection);
    }
}

/// What a read runs on: SQLite's own read connections, or (PostgreSQL) a pooled connection.
#[derive(Debug)]
pub(super) enum ReadConnection<'store> {
    Sqlite(SqliteRead<'store>),
    Pooled(PoolConnection<Any>),
}

impl ReadConnection<'_> {
    /// The connection, and where to mark it dead (SQLite only).
    fn parts(&mut self) -> (&mut AnyConnection, Option<&mut bool>) {
        match self {
            ReadConnection::Sqlite(read) => (
                read.connection
                    .as_mut()
                    .expect("a lent connection is there until it is dropped"),
                Some(&mut read.dead),
            ),
            ReadConnection::Pooled(connection) => (connection, None),
        }
    }
}

fn mark_if_dead(dead: &mut Option<&mut bool>, error: &sqlx::Error) {
    if let Some(dead) = dead {
        if connection_is_gone(error) {
            **dead = true;
        }
    }
}

// The two statement-running methods mark the connection; the others only prepare or describe.
impl<'c> Executor<'c> for &'c mut ReadConnection<'_> {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let (connection, mut dead) = self.parts();
        connection
            .fetch_many(query)
            .inspect_err(move |error| mark_if_dead(&mut dead, error))
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let (connection, mut dead) = self.parts();
        async move {
            let row = connection.fetch_optional(query).await;
            if let Err(error) = &row {
                mark_if_dead(&mut dead, error);
            }
            row
        }
        .boxed()
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.parts().0.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Any>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.parts().0.describe(sql)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const PRAGMAS: [&str; 2] = ["PRAGMA busy_timeout = 30000;", "PRAGMA foreign_keys = ON;"];
    const A_MOMENT: Duration = Duration::from_millis(50);

    fn readers(size: u32) -> (tempfile::TempDir, SqliteReaders) {
        sqlx::any::install_default_drivers();
        let directory = tempfile::tempdir().expect("tempdir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            directory.path().join("readers.db").display()
        );
        (directory, SqliteReaders::new(&url, PRAGMAS, size))
    }

    /// Run a statement through the executor the store's reads use, then give the connection back.
    async fn answer(read: SqliteRead<'_>) -> i64 {
        let mut connection = ReadConnection::Sqlite(read);
        sqlx::query_scalar("SELECT 42")
            .fetch_one(&mut connection)
            .await
            .expect("select")
    }

    #[tokio::test]
    async fn a_connection_goes_back_when_dropped_and_is_lent_again() {
        let (_directory, readers) = readers(2);
        assert_eq!(answer(readers.acquire().await.expect("read")).await, 42);
        assert_eq!(readers.idle_list().len(), 1);
        let read = readers.acquire().await.expect("read again");
        assert_eq!(readers.idle_list().len(), 0, "the idle connection was lent");
        drop(read);
        assert_eq!(readers.idle_list().len(), 1, "and no second one was opened");
    }

    #[tokio::test]
    async fn a_dead_connection_is_closed_not_lent_again() {
        let (_directory, readers) = readers(2);
        let mut read = readers.acquire().await.expect("read");
        // What a `WorkerCrashed` error from one of its statements leaves.
        mark_if_dead(&mut Some(&mut read.dead), &sqlx::Error::WorkerCrashed);
        assert!(read.dead);
        drop(read);
        assert!(readers.idle_list().is_empty());
        assert_eq!(
            answer(readers.acquire().await.expect("a new one")).await,
            42
        );
        // Other errors leave the connection in use.
        let mut read = readers.acquire().await.expect("read");
        mark_if_dead(&mut Some(&mut read.dead), &sqlx::Error::RowNotFound);
        assert!(!read.dead);
    }

    #[tokio::test]
    async fn readers_beyond_the_size_wait_for_a_connection() {
        let (_directory, readers) = readers(2);
        let first = readers.acquire().await.expect("first");
        let _second = readers.acquire().await.expect("second");
        assert!(
            tokio::time::timeout(A_MOMENT, readers.acquire())
                .await
                .is_err(),
            "a third reader waits"
        );
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), readers.acquire())
            .await
            .expect("served once a connection is back")
            .expect("third");
        assert_eq!(answer(third).await, 42);
    }

    #[tokio::test]
    async fn close_waits_for_readers_in_flight_then_refuses_reads() {
        let (_directory, readers) = readers(2);
        let read = readers.acquire().await.expect("read");
        let mut closing = std::pin::pin!(readers.close());
        assert!(
            tokio::time::timeout(A_MOMENT, closing.as_mut())
                .await
                .is_err(),
            "close waits for the reader"
        );
        drop(read);
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .expect("close finishes once the reader is done");
        assert!(readers.idle_list().is_empty(), "every connection closed");
        assert!(matches!(
            readers.acquire().await,
            Err(sqlx::Error::PoolClosed)
        ));
    }
}
