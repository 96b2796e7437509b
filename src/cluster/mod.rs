//! Several Baton instances behind a load balancer, coordinated through their one PostgreSQL
//! database (no broker of our own):
//! - [`relay`]: the hub's wakes and frames fanned out with LISTEN/NOTIFY, so a customer on one
//!   instance and an agent on another meet; a listener that lost its connection makes every local
//!   socket re-read the durable state (catch-up);
//! - [`presence`]: each instance's agent sockets and heartbeat in the database, so dispatch and the
//!   sweep see agents connected anywhere, and an instance that died stops counting;
//! - [`leader`]: one instance (a session advisory lock) runs the timeouts sweep and the webhook
//!   deliveries; when its connection dies another takes over;
//! - [`Cluster::exclusively`]: start-up work that must not run twice at once (the knowledge sync).
//!
//! Claims and capacity need nothing from here: the store's conditional updates lock the rows, so a
//! conversation gets one agent and an agent stays within capacity whichever instance asks.
//! Messages are durable before anyone is woken; a lost notification delays, never loses, them.

pub mod leader;
pub mod presence;
pub mod relay;

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::config::ClusterSettings;
use crate::handoff::clock::Clock;
use crate::handoff::hub::Hub;
use crate::handoff::presence::PresenceDirectory;
use crate::store::Millis;

pub use leader::Leadership;
use presence::DatabasePresence;
use relay::{Control, PgRelay};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster: cannot connect to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cluster: database error while {context}: {source}")]
    Database {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

fn database(context: &'static str) -> impl FnOnce(sqlx::Error) -> ClusterError {
    move |source| ClusterError::Database { context, source }
}

/// This instance's membership of the cluster.
pub struct Cluster {
    instance_id: String,
    options: PgConnectOptions,
    pool: PgPool,
    settings: ClusterSettings,
    clock: Arc<dyn Clock>,
    relay: Arc<PgRelay>,
    hub: Arc<Hub>,
    presence: Arc<DatabasePresence>,
    leadership: Leadership,
    leading: Arc<std::sync::atomic::AtomicBool>,
}

impl Cluster {
    /// Join the cluster on `database_url` (migrated already by the store): register this
    /// instance and prepare the relay for `hub`. Nothing runs until [`Cluster::start`].
    pub async fn join(
        database_url: &str,
        settings: &ClusterSettings,
        clock: Arc<dyn Clock>,
        hub: Arc<Hub>,
    ) -> Result<Self, ClusterError> {
        let options: PgConnectOptions = database_url.parse().map_err(ClusterError::Connect)?;
        // Statements here are few and small; the log would drown in heartbeats otherwise.
        let options = options.disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(ClusterError::Connect)?;
        let instance_id = uuid::Uuid::new_v4().simple().to_string();
        let now = clock.now();
        sqlx::query("INSERT INTO instances (id, started_at, heartbeat_at) VALUES ($1, $2, $2)")
            .bind(&instance_id)
            .bind(now)
            .execute(&pool)
            .await
            .map_err(database("registering this instance"))?;
        let relay = Arc::new(PgRelay::new(
            pool.clone(),
            instance_id.clone(),
            settings.channel.clone(),
        ));
        let presence = Arc::new(DatabasePresence::new(
            pool.clone(),
            instance_id.clone(),
            hub.clone(),
            settings.instance_ttl_ms as Millis,
        ));
        tracing::info!(instance = %instance_id, channel = %settings.channel, "joined the cluster");
        let (leadership, leading) = Leadership::new();
        Ok(Self {
            leadership,
            leading,
            instance_id,
            options,
            pool,
            settings: settings.clone(),
            clock,
            relay,
            hub,
            presence,
        })
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Whether this instance leads (runs the sweeps and webhooks) now.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// What the hub hands its deliveries to.
    pub fn relay(&self) -> Arc<dyn crate::handoff::hub::Relay> {
        self.relay.clone()
    }

    /// Presence across every instance.
    pub fn presence(&self) -> Arc<dyn PresenceDirectory> {
        self.presence.clone()
    }

    /// Tell every other instance to retrain its intents (after this one did).
    pub fn announce_intents_changed(&self) {
        self.relay.control(Control::IntentsChanged);
    }

    /// Run `work` while holding the cluster-wide lock `name`: instances starting together do it
    /// one after the other (the second finds the knowledge already synced, for instance).
    pub async fn exclusively<T, F>(&self, name: &str, work: F) -> Result<T, ClusterError>
    where
        F: std::future::Future<Output = T>,
    {
        let mut connection = lock_session(&self.options).await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(lock_key(&self.settings.channel, name))
            .execute(&mut connection)
            .await
            .map_err(database("waiting for a cluster lock"))?;
        let result = work.await;
        // Closing the session releases the lock, also when the unlock itself fails.
        let _ = connection.close().await;
        Ok(result)
    }

    /// Start the relay's publisher and listener, the heartbeat and the leader election.
    /// `on_intents_changed` runs when another instance retrained its intents.
    pub fn start(
        self: &Arc<Self>,
        on_intents_changed: Arc<dyn Fn() + Send + Sync>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let stop = move || {
            let mut stop = stop.clone();
            async move {
                let _ = stop.wait_for(|stop| *stop).await;
            }
        };
        vec![
            tokio::spawn(self.relay.clone().run_publisher(stop())),
            tokio::spawn(self.relay.clone().run_listener(
                self.hub.clone(),
                on_intents_changed,
                stop(),
            )),
            tokio::spawn(leader::run(self.clone(), self.leading.clone(), stop())),
        ]
    }

    /// Leaving on a clean shutdown: this instance's sockets are closed now, so its agents count
    /// as disconnected from now (the grace period starts), and the heartbeat stops.
    pub async fn leave(&self) {
        let now = self.clock.now();
        let result = sqlx::query(
            "UPDATE agent_presence SET connections = 0, changed_at = $2 WHERE instance_id = $1",
        )
        .bind(&self.instance_id)
        .bind(now)
        .execute(&self.pool)
        .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "could not record the agents' sockets as closed on leaving");
        }
        let _ = sqlx::query("UPDATE instances SET heartbeat_at = $2 WHERE id = $1")
            .bind(&self.instance_id)
            .bind(now - self.settings.instance_ttl_ms as Millis)
            .execute(&self.pool)
            .await;
        self.pool.close().await;
    }
}

/// The advisory lock key for `name` in the deployment using `channel` (FNV-1a), so deployments
/// sharing a PostgreSQL server with different channels do not share locks.
fn lock_key(channel: &str, name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in channel.bytes().chain([b'/']).chain(name.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

/// A session of its own (not pooled): advisory locks belong to the session that took them.
async fn lock_session(options: &PgConnectOptions) -> Result<PgConnection, ClusterError> {
    options.connect().await.map_err(ClusterError::Connect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_differ_by_channel_and_name() {
        let leader = lock_key("baton_hub", "leader");
        assert_eq!(leader, lock_key("baton_hub", "leader"));
        assert_ne!(leader, lock_key("baton_hub", "knowledge"));
        assert_ne!(leader, lock_key("other_hub", "leader"));
    }
}
