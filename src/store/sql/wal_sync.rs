//! Group commit for SQLite: `database.sqlite_synchronous = "full"` keeps its promise (a commit is on
//! disk, through power loss, before it is acknowledged) with one fsync for all the commits that
//! finished while the previous fsync ran, instead of one per commit.
//!
//! SQLite runs with `synchronous = NORMAL` (in WAL mode a commit appends to the WAL file without
//! syncing it; checkpoints still sync) and every write transaction, after its commit and after
//! giving up the writer slot, waits here until the WAL file has been synced past it. A commit that
//! waits while an fsync runs is covered by the next one, which also covers every commit behind it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;

#[derive(Debug)]
pub(super) struct WalSync {
    wal: PathBuf,
    /// Tickets handed out: commit N took ticket N once it had committed.
    committed: AtomicU64,
    /// Every ticket up to this one is on disk. Held while an fsync runs, so one runs at a time.
    synced: Mutex<u64>,
}

impl WalSync {
    /// For the database file at `database` (its WAL is `<database>-wal`).
    pub(super) fn new(database: &std::path::Path) -> Self {
        let mut wal = database.as_os_str().to_owned();
        wal.push("-wal");
        Self {
            wal: PathBuf::from(wal),
            committed: AtomicU64::new(0),
            synced: Mutex::new(0),
        }
    }

    /// Wait until a commit that has just returned is on disk.
    pub(super) async fn after_commit(&self) -> std::io::Result<()> {
        let ticket = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().await;
        if *synced >= ticket {
            // An fsync that started after this commit returned has covered it.
            return Ok(());
        }
        // Every ticket handed out so far belongs to a commit that has returned: this fsync covers
        // them all.
        let covered = self.committed.load(Ordering::SeqCst);
        let wal = self.wal.clone();
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || sync_file(&wal))
            .await
            .map_err(std::io::Error::other)??;
        log_slow_sync(started.elapsed(), covered - *synced);
        *synced = covered;
        Ok(())
    }
}

/// Every commit waits for its group's fsync, so a slow one is a stall for all of them: say so,
/// with the moment, to match against latency tails (`baton loadtest` prints the slowest seconds).
fn log_slow_sync(took: std::time::Duration, commits: u64) {
    let took_ms = took.as_secs_f64() * 1000.0;
    if took >= super::STALL_WARNING {
        tracing::warn!(
            took_ms,
            commits,
            "slow fsync of the SQLite WAL: commits waited for the disk"
        );
    } else if took >= super::STALL_DEBUG {
        tracing::debug!(took_ms, commits, "slow fsync of the SQLite WAL");
    }
}

/// fdatasync the file, opened afresh (SQLite may have deleted and recreated the WAL since the last
/// call). No WAL file means nothing is waiting in one: SQLite removes it only after checkpointing
/// it into the database file, which it syncs.
fn sync_file(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::File::open(path) {
        Ok(file) => file.sync_data(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_fsyncs_and_all_return_synced() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("baton.db");
        std::fs::write(dir.path().join("baton.db-wal"), b"frames").unwrap();
        let sync = std::sync::Arc::new(WalSync::new(&database));
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let sync = sync.clone();
                tokio::spawn(async move { sync.after_commit().await })
            })
            .collect();
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        assert_eq!(*sync.synced.lock().await, 50, "every ticket is covered");
        // No WAL file (checkpointed and removed): nothing to sync, not an error.
        std::fs::remove_file(dir.path().join("baton.db-wal")).unwrap();
        sync.after_commit().await.unwrap();
    }
}
