//! One leader among the instances, for the work that must run once: the timeouts sweep (offers,
//! silent agents, grace periods), webhook deliveries and the cluster's own clean-up.
//!
//! The leader holds a PostgreSQL session advisory lock on a connection of its own. The server
//! releases it when that session ends, including when the process is killed (the socket closes),
//! so the next instance to try, within one heartbeat, takes over. Every heartbeat the leader checks
//! its session is alive and steps down if not. Each sweep step is its own transaction with
//! conditional updates, so a sweep cut short by a kill leaves nothing half done for the next
//! leader, and a short overlap of two leaders cannot assign a conversation twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgConnection;

use super::{lock_key, lock_session, Cluster};
use crate::store::Millis;

/// Spilled hub frames are read within milliseconds; older ones are garbage.
const SPILL_TTL_MILLIS: Millis = 60_000;
/// Instances silent this long are forgotten (with their presence rows).
const DEAD_INSTANCE_TTL_MILLIS: Millis = 3_600_000;

/// Whether this instance leads now. Cheap to clone and read.
#[derive(Clone, Debug)]
pub struct Leadership(Arc<AtomicBool>);

impl Leadership {
    pub(super) fn new() -> (Self, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        (Self(flag.clone()), flag)
    }

    /// A single instance always leads.
    pub fn alone() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }

    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Heartbeat, election and clean-up, every `heartbeat_ms` until `stop`.
pub(super) async fn run(
    cluster: Arc<Cluster>,
    leading: Arc<AtomicBool>,
    stop: impl std::future::Future<Output = ()>,
) {
    let key = lock_key(&cluster.settings.channel, "leader");
    let mut interval =
        tokio::time::interval(Duration::from_millis(cluster.settings.heartbeat_ms.max(10)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut election = Election::default();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = interval.tick() => {}
        }
        if let Err(err) = heartbeat(&cluster).await {
            tracing::warn!(error = %err, "cluster: heartbeat failed");
        }
        let was_leader = leading.load(Ordering::Acquire);
        let is_leader = election.run(&cluster, key).await;
        leading.store(is_leader, Ordering::Release);
        match (was_leader, is_leader) {
            (false, true) => {
                tracing::info!(instance = %cluster.instance_id, "this instance now leads the sweeps and webhooks")
            }
            (true, false) => {
                tracing::warn!(instance = %cluster.instance_id, "this instance lost the leadership")
            }
            _ => {}
        }
        if is_leader {
            clean_up(&cluster).await;
        }
    }
    leading.store(false, Ordering::Release);
    // Closing the session releases the lock at once for the next leader.
    if let Some(session) = election.session.take() {
        let _ = sqlx::Connection::close(session).await;
    }
}

async fn heartbeat(cluster: &Cluster) -> Result<(), sqlx::Error> {
    let now = cluster.clock.now();
    let updated = sqlx::query("UPDATE instances SET heartbeat_at = $2 WHERE id = $1")
        .bind(&cluster.instance_id)
        .bind(now)
        .execute(&cluster.pool)
        .await?;
    if updated.rows_affected() == 0 {
        // Forgotten after a long silence (a paused VM, a partition): come back.
        sqlx::query(
            "INSERT INTO instances (id, started_at, heartbeat_at) VALUES ($1, $2, $2) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(&cluster.instance_id)
        .bind(now)
        .execute(&cluster.pool)
        .await?;
    }
    Ok(())
}

/// The election session: a connection of its own, and whether it holds the lock.
#[derive(Default)]
struct Election {
    session: Option<PgConnection>,
    holds_lock: bool,
}

impl Election {
    /// Keep or try to take the lock; true when this instance holds it.
    async fn run(&mut self, cluster: &Cluster, key: i64) -> bool {
        if self.holds_lock {
            let connection = self.session.as_mut().expect("a held lock has its session");
            // Still ours only while the session that took it lives.
            return match sqlx::query("SELECT 1").execute(&mut *connection).await {
                Ok(_) => true,
                Err(err) => {
                    tracing::warn!(error = %err, "cluster: the leader's session is gone");
                    *self = Self::default();
                    false
                }
            };
        }
        if self.session.is_none() {
            match lock_session(&cluster.options).await {
                Ok(connection) => self.session = Some(connection),
                Err(err) => {
                    tracing::warn!(error = %err, "cluster: cannot open the election session");
                    return false;
                }
            }
        }
        let connection = self.session.as_mut().expect("opened above");
        match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *connection)
            .await
        {
            Ok(taken) => {
                self.holds_lock = taken;
                taken
            }
            Err(err) => {
                tracing::warn!(error = %err, "cluster: the election failed");
                *self = Self::default();
                false
            }
        }
    }
}

async fn clean_up(cluster: &Cluster) {
    let now = cluster.clock.now();
    let wall = crate::handoff::clock::Clock::now(&crate::handoff::clock::SystemClock);
    let spill = sqlx::query("DELETE FROM hub_spill WHERE created_at < $1")
        .bind(wall - SPILL_TTL_MILLIS)
        .execute(&cluster.pool)
        .await;
    let instances = sqlx::query("DELETE FROM instances WHERE heartbeat_at < $1")
        .bind(now - DEAD_INSTANCE_TTL_MILLIS)
        .execute(&cluster.pool)
        .await;
    for result in [spill, instances] {
        if let Err(err) = result {
            tracing::warn!(error = %err, "cluster: clean-up failed");
        }
    }
}
