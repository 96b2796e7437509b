//! Which agents are connected, and since when the others are gone: what dispatch (only connected
//! agents get work) and the sweep (a disconnected agent's conversations wait a grace period) read.
//!
//! One instance knows it from its own [`Hub`] ([`LocalPresence`]). Several instances behind a load
//! balancer each see only their own sockets, so the cluster module keeps the counts in the database
//! and implements this port over them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;

use super::hub::Hub;
use crate::store::{Millis, StoreError};

/// Presence at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PresenceSnapshot {
    /// Agents with at least one live connection.
    pub connected: HashSet<String>,
    /// For agents without one: when their last connection ended (or their instance stopped
    /// answering). Absent: never seen.
    pub gone_since: HashMap<String, Millis>,
}

impl PresenceSnapshot {
    /// What one instance's hub sees.
    pub fn of(hub: &Hub) -> Self {
        PresenceSnapshot {
            connected: hub.connected_agents().into_iter().collect(),
            gone_since: hub.gone_since(),
        }
    }

    pub fn is_connected(&self, agent_id: &str) -> bool {
        self.connected.contains(agent_id)
    }

    /// None while connected, or when the agent was never seen.
    pub fn disconnected_at(&self, agent_id: &str) -> Option<Millis> {
        if self.is_connected(agent_id) {
            return None;
        }
        self.gone_since.get(agent_id).copied()
    }
}

#[async_trait]
pub trait PresenceDirectory: Send + Sync {
    /// The number of sockets `agent_id` has to this instance changed (the implementation reads
    /// the current count itself, so concurrent calls cannot store a stale one).
    async fn record(&self, agent_id: &str, now: Millis) -> Result<(), StoreError>;

    /// Who is connected, on any instance.
    async fn snapshot(&self, now: Millis) -> Result<PresenceSnapshot, StoreError>;
}

/// One instance: its hub sees every socket.
pub struct LocalPresence {
    hub: Arc<Hub>,
}

impl LocalPresence {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

#[async_trait]
impl PresenceDirectory for LocalPresence {
    async fn record(&self, _: &str, _: Millis) -> Result<(), StoreError> {
        // The hub already counted the connection.
        Ok(())
    }

    async fn snapshot(&self, _now: Millis) -> Result<PresenceSnapshot, StoreError> {
        Ok(PresenceSnapshot::of(&self.hub))
    }
}
