//! Presence across instances: each instance writes how many sockets each agent has to it
//! (`agent_presence`) and a heartbeat (`instances`); everyone reads the other instances' rows
//! and its own hub.
//!
//! An agent is connected when this instance holds one of their sockets, or another instance whose
//! heartbeat is fresh (within `instance_ttl_ms`) says it does. An agent connected only to an
//! instance that stopped answering counts as disconnected from that instance's last heartbeat, so
//! the grace period runs from when it died, whichever instance sweeps.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{PgPool, Row};

use crate::handoff::hub::Hub;
use crate::handoff::presence::{PresenceDirectory, PresenceSnapshot};
use crate::store::{Millis, StoreError};

pub struct DatabasePresence {
    pool: PgPool,
    instance_id: String,
    hub: Arc<Hub>,
    instance_ttl: Millis,
    /// One write at a time, each with the count read inside it: two sockets opening and closing
    /// at once cannot leave a stale count in the table.
    writing: tokio::sync::Mutex<()>,
}

impl DatabasePresence {
    pub fn new(pool: PgPool, instance_id: String, hub: Arc<Hub>, instance_ttl: Millis) -> Self {
        Self {
            pool,
            instance_id,
            hub,
            instance_ttl,
            writing: tokio::sync::Mutex::new(()),
        }
    }
}

fn database(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { context, source }
}

#[async_trait]
impl PresenceDirectory for DatabasePresence {
    async fn record(&self, agent_id: &str, now: Millis) -> Result<(), StoreError> {
        let _one_at_a_time = self.writing.lock().await;
        let connections = self.hub.agent_connections(agent_id) as i64;
        sqlx::query(
            "INSERT INTO agent_presence (instance_id, agent_id, connections, changed_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (instance_id, agent_id) \
             DO UPDATE SET connections = excluded.connections, changed_at = excluded.changed_at",
        )
        .bind(&self.instance_id)
        .bind(agent_id)
        .bind(connections)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(database("recording an agent's sockets"))?;
        Ok(())
    }

    async fn snapshot(&self, now: Millis) -> Result<PresenceSnapshot, StoreError> {
        let rows = sqlx::query(
            "SELECT p.agent_id, p.connections, p.changed_at, i.heartbeat_at \
             FROM agent_presence p JOIN instances i ON i.id = p.instance_id \
             WHERE p.instance_id <> $1",
        )
        .bind(&self.instance_id)
        .fetch_all(&self.pool)
        .await
        .map_err(database("reading who is connected"))?;
        // This instance knows its own sockets better than its rows do.
        let mut snapshot = PresenceSnapshot::of(&self.hub);
        for row in rows {
            let agent: String = row.get("agent_id");
            let connections: i64 = row.get("connections");
            let changed_at: Millis = row.get("changed_at");
            let heartbeat_at: Millis = row.get("heartbeat_at");
            let alive = now - heartbeat_at < self.instance_ttl;
            if connections > 0 && alive {
                snapshot.connected.insert(agent);
                continue;
            }
            // Closed sockets count from when they closed; those of a dead instance from its last
            // heartbeat.
            let since = if connections > 0 {
                heartbeat_at
            } else {
                changed_at
            };
            let entry = snapshot.gone_since.entry(agent).or_insert(since);
            *entry = (*entry).max(since);
        }
        for agent in &snapshot.connected {
            snapshot.gone_since.remove(agent);
        }
        Ok(snapshot)
    }
}
