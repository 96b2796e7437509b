//! Who is connected, and how to reach them. Every connection has a small bounded queue of frames
//! and a wake-up for new messages:
//! - messages are durable, so a connection is only *woken* and reads what it has not sent yet from
//!   the store (in id order, never twice, nothing skipped, also across reconnects);
//! - ephemeral frames (typing, queue position, offers) go through the bounded queue; a client too
//!   slow to drain it is disconnected rather than buffered without limit, and recovers with the
//!   resume protocol.
//!
//! With several instances (the cluster module) a [`Relay`] carries every wake and frame to the
//! other instances, which [`Hub::deliver`] it to their own connections; after a relay lost
//! notifications, [`Hub::catch_up`] makes every local connection re-read what it shows.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use super::protocol::{AgentFrame, CustomerFrame};
use crate::store::Millis;

/// One delivery the hub makes, as it travels between instances.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Signal {
    WakeCustomer {
        conversation_id: String,
    },
    WakeAgent {
        agent_id: String,
        conversation_id: String,
    },
    Customer {
        conversation_id: String,
        frame: CustomerFrame,
    },
    Agent {
        agent_id: String,
        frame: AgentFrame,
    },
    AllAgents {
        frame: AgentFrame,
    },
}

/// Carries the hub's deliveries to the other instances. `publish` must not block: it is called
/// with no await point, from inside the handoff service's steps.
pub trait Relay: Send + Sync {
    fn publish(&self, signal: Signal);
}

/// What the WebSocket loop of one customer connection listens to.
pub struct CustomerInbox {
    pub id: u64,
    pub frames: mpsc::Receiver<CustomerFrame>,
    pub wake: Arc<Notify>,
}

/// What the WebSocket loop of one agent connection listens to.
pub struct AgentInbox {
    pub id: u64,
    pub frames: mpsc::Receiver<AgentFrame>,
    pub wake: Arc<Notify>,
    /// Conversations with messages to sync.
    pub dirty: Arc<Mutex<HashSet<String>>>,
    /// Set when notifications may have been lost: the connection must compare what it shows with
    /// what the agent holds now, then sync every conversation.
    pub resync: Arc<AtomicBool>,
}

struct CustomerLink {
    id: u64,
    frames: mpsc::Sender<CustomerFrame>,
    wake: Arc<Notify>,
}

struct AgentLink {
    id: u64,
    frames: mpsc::Sender<AgentFrame>,
    wake: Arc<Notify>,
    dirty: Arc<Mutex<HashSet<String>>>,
    resync: Arc<AtomicBool>,
}

/// In-memory presence of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    pub connections: usize,
    /// When the last connection closed (None while connected).
    pub disconnected_at: Option<Millis>,
}

#[derive(Default)]
pub struct Hub {
    next_id: AtomicU64,
    capacity: usize,
    customers: Mutex<HashMap<String, Vec<CustomerLink>>>,
    agents: Mutex<HashMap<String, Vec<AgentLink>>>,
    presence: Mutex<HashMap<String, Presence>>,
    /// Connections dropped for not keeping up, for metrics.
    pub overflows: AtomicU64,
    /// Flipped once when the server shuts down; every socket loop watches it.
    closing: Option<tokio::sync::watch::Sender<bool>>,
    /// The other instances, when there are any (set once, at start-up).
    relay: std::sync::OnceLock<Arc<dyn Relay>>,
}

impl Hub {
    /// `capacity`: frames queued per connection before it counts as too slow.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(8),
            closing: Some(tokio::sync::watch::channel(false).0),
            ..Self::default()
        }
    }

    /// Send every delivery to the other instances too. Only the first call counts.
    pub fn set_relay(&self, relay: Arc<dyn Relay>) {
        if self.relay.set(relay).is_err() {
            tracing::error!("the hub's relay was set twice; keeping the first");
        }
    }

    fn relay(&self, signal: impl FnOnce() -> Signal) {
        if let Some(relay) = self.relay.get() {
            relay.publish(signal());
        }
    }

    /// A delivery that another instance made: to this instance's connections only.
    pub fn deliver(&self, signal: Signal) {
        match signal {
            Signal::WakeCustomer { conversation_id } => self.wake_customer_here(&conversation_id),
            Signal::WakeAgent {
                agent_id,
                conversation_id,
            } => self.wake_agent_here(&agent_id, &conversation_id),
            Signal::Customer {
                conversation_id,
                frame,
            } => self.send_customer_here(&conversation_id, frame),
            Signal::Agent { agent_id, frame } => self.send_agent_here(&agent_id, frame),
            Signal::AllAgents { frame } => self.broadcast_agents_here(frame),
        }
    }

    /// Notifications from other instances may have been lost: every customer connection re-reads
    /// its messages, every agent connection re-reads what the agent holds and its messages. The
    /// store holds the truth, so this catches up on everything durable.
    pub fn catch_up(&self) {
        for links in self.customers.lock().values() {
            for link in links {
                link.wake.notify_one();
            }
        }
        for links in self.agents.lock().values() {
            for link in links {
                link.resync.store(true, Ordering::Release);
                link.wake.notify_one();
            }
        }
    }

    /// Resolves when the server shuts down.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let receiver = self.closing.as_ref().map(|sender| sender.subscribe());
        async move {
            match receiver {
                Some(mut receiver) => {
                    let _ = receiver.wait_for(|closing| *closing).await;
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Tell every socket loop to close (server shutdown).
    pub fn close_all(&self) {
        if let Some(sender) = &self.closing {
            let _ = sender.send(true);
        }
    }

    pub fn connect_customer(&self, conversation_id: &str) -> CustomerInbox {
        let (sender, frames) = mpsc::channel(self.capacity);
        let wake = Arc::new(Notify::new());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.customers
            .lock()
            .entry(conversation_id.to_string())
            .or_default()
            .push(CustomerLink {
                id,
                frames: sender,
                wake: wake.clone(),
            });
        CustomerInbox { id, frames, wake }
    }

    pub fn disconnect_customer(&self, conversation_id: &str, id: u64) {
        let mut customers = self.customers.lock();
        if let Some(links) = customers.get_mut(conversation_id) {
            links.retain(|link| link.id != id);
            if links.is_empty() {
                customers.remove(conversation_id);
            }
        }
    }

    /// Registers an agent connection; `now` marks them connected.
    pub fn connect_agent(&self, agent_id: &str) -> AgentInbox {
        let (sender, frames) = mpsc::channel(self.capacity);
        let wake = Arc::new(Notify::new());
        let dirty = Arc::new(Mutex::new(HashSet::new()));
        let resync = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut agents = self.agents.lock();
        let links = agents.entry(agent_id.to_string()).or_default();
        links.push(AgentLink {
            id,
            frames: sender,
            wake: wake.clone(),
            dirty: dirty.clone(),
            resync: resync.clone(),
        });
        let connections = links.len();
        drop(agents);
        self.presence.lock().insert(
            agent_id.to_string(),
            Presence {
                connections,
                disconnected_at: None,
            },
        );
        AgentInbox {
            id,
            frames,
            wake,
            dirty,
            resync,
        }
    }

    /// Unregisters an agent connection; returns true when it was their last one.
    pub fn disconnect_agent(&self, agent_id: &str, id: u64, now: Millis) -> bool {
        let mut agents = self.agents.lock();
        let remaining = match agents.get_mut(agent_id) {
            Some(links) => {
                links.retain(|link| link.id != id);
                links.len()
            }
            None => 0,
        };
        if remaining == 0 {
            agents.remove(agent_id);
        }
        drop(agents);
        let mut presence = self.presence.lock();
        let entry = presence.entry(agent_id.to_string()).or_insert(Presence {
            connections: 0,
            disconnected_at: None,
        });
        entry.connections = remaining;
        if remaining == 0 {
            entry.disconnected_at = Some(now);
        }
        remaining == 0
    }

    /// Whether the agent has at least one live connection to this instance.
    pub fn agent_connected(&self, agent_id: &str) -> bool {
        self.agent_connections(agent_id) > 0
    }

    /// How many connections the agent has to this instance.
    pub fn agent_connections(&self, agent_id: &str) -> usize {
        self.agents.lock().get(agent_id).map_or(0, Vec::len)
    }

    /// When an agent's last connection closed (None: connected, or never seen by this process).
    pub fn agent_disconnected_at(&self, agent_id: &str) -> Option<Millis> {
        self.presence
            .lock()
            .get(agent_id)
            .and_then(|p| p.disconnected_at)
    }

    /// An agent this process has not seen since it started counts as disconnected from `since`
    /// (the start-up), so conversations held before a restart wait a grace period for them.
    pub fn note_unseen_agent(&self, agent_id: &str, since: Millis) {
        self.presence
            .lock()
            .entry(agent_id.to_string())
            .or_insert(Presence {
                connections: 0,
                disconnected_at: Some(since),
            });
    }

    /// For the agents this instance has seen and that have no connection now: since when.
    pub fn gone_since(&self) -> HashMap<String, Millis> {
        self.presence
            .lock()
            .iter()
            .filter_map(|(agent, presence)| {
                presence.disconnected_at.map(|since| (agent.clone(), since))
            })
            .collect()
    }

    pub fn connected_agents(&self) -> Vec<String> {
        self.agents.lock().keys().cloned().collect()
    }

    pub fn connected_customer_count(&self) -> usize {
        self.customers.lock().values().map(Vec::len).sum()
    }

    pub fn connected_agent_count(&self) -> usize {
        self.agents.lock().values().map(Vec::len).sum()
    }

    /// New messages in a conversation: wake its customer connections (on every instance).
    pub fn wake_customer(&self, conversation_id: &str) {
        self.wake_customer_here(conversation_id);
        self.relay(|| Signal::WakeCustomer {
            conversation_id: conversation_id.to_string(),
        });
    }

    /// New messages in a conversation an agent holds: wake their connections (on every instance).
    pub fn wake_agent(&self, agent_id: &str, conversation_id: &str) {
        self.wake_agent_here(agent_id, conversation_id);
        self.relay(|| Signal::WakeAgent {
            agent_id: agent_id.to_string(),
            conversation_id: conversation_id.to_string(),
        });
    }

    pub fn send_customer(&self, conversation_id: &str, frame: CustomerFrame) {
        self.relay(|| Signal::Customer {
            conversation_id: conversation_id.to_string(),
            frame: frame.clone(),
        });
        self.send_customer_here(conversation_id, frame);
    }

    pub fn send_agent(&self, agent_id: &str, frame: AgentFrame) {
        self.relay(|| Signal::Agent {
            agent_id: agent_id.to_string(),
            frame: frame.clone(),
        });
        self.send_agent_here(agent_id, frame);
    }

    /// Send to every connected agent (queue updates), on every instance.
    pub fn broadcast_agents(&self, frame: AgentFrame) {
        self.relay(|| Signal::AllAgents {
            frame: frame.clone(),
        });
        self.broadcast_agents_here(frame);
    }

    fn wake_customer_here(&self, conversation_id: &str) {
        if let Some(links) = self.customers.lock().get(conversation_id) {
            for link in links {
                link.wake.notify_one();
            }
        }
    }

    fn wake_agent_here(&self, agent_id: &str, conversation_id: &str) {
        if let Some(links) = self.agents.lock().get(agent_id) {
            for link in links {
                link.dirty.lock().insert(conversation_id.to_string());
                link.wake.notify_one();
            }
        }
    }

    fn send_customer_here(&self, conversation_id: &str, frame: CustomerFrame) {
        let mut customers = self.customers.lock();
        if let Some(links) = customers.get_mut(conversation_id) {
            // A full queue means the client is not reading: drop the link (its loop sees the
            // channel close and disconnects the client, who can resume).
            links.retain(|link| match link.frames.try_send(frame.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.overflows.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
    }

    fn send_agent_here(&self, agent_id: &str, frame: AgentFrame) {
        let mut agents = self.agents.lock();
        if let Some(links) = agents.get_mut(agent_id) {
            links.retain(|link| match link.frames.try_send(frame.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.overflows.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
    }

    fn broadcast_agents_here(&self, frame: AgentFrame) {
        for agent in self.connected_agents() {
            self.send_agent_here(&agent, frame.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::protocol::Typist;

    fn typing() -> CustomerFrame {
        CustomerFrame::Typing {
            who: Typist::Agent,
            name: None,
            on: true,
        }
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_is_dropped_not_buffered() {
        let hub = Hub::new(8);
        let mut inbox = hub.connect_customer("c1");
        for _ in 0..8 {
            hub.send_customer("c1", typing());
        }
        assert_eq!(hub.overflows.load(Ordering::Relaxed), 0);
        hub.send_customer("c1", typing());
        assert_eq!(hub.overflows.load(Ordering::Relaxed), 1);
        // The 8 queued frames drain, then the channel reports closed.
        for _ in 0..8 {
            assert!(inbox.frames.recv().await.is_some());
        }
        assert!(inbox.frames.recv().await.is_none());
    }

    #[tokio::test]
    async fn wakes_reach_every_connection_of_the_conversation() {
        let hub = Hub::new(8);
        let first = hub.connect_customer("c1");
        let second = hub.connect_customer("c1");
        let other = hub.connect_customer("c2");
        hub.wake_customer("c1");
        first.wake.notified().await;
        second.wake.notified().await;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), other.wake.notified())
                .await
                .is_err()
        );
        hub.disconnect_customer("c1", first.id);
        assert_eq!(hub.connected_customer_count(), 2);
    }

    #[test]
    fn presence_tracks_the_last_connection() {
        let hub = Hub::new(8);
        let a = hub.connect_agent("maya");
        let b = hub.connect_agent("maya");
        assert!(hub.agent_connected("maya"));
        assert!(!hub.disconnect_agent("maya", a.id, 1_000));
        assert_eq!(hub.agent_disconnected_at("maya"), None);
        assert!(hub.disconnect_agent("maya", b.id, 2_000));
        assert!(!hub.agent_connected("maya"));
        assert_eq!(hub.agent_disconnected_at("maya"), Some(2_000));
        hub.note_unseen_agent("maya", 5_000);
        assert_eq!(
            hub.agent_disconnected_at("maya"),
            Some(2_000),
            "a known agent keeps its time"
        );
        hub.note_unseen_agent("sam", 5_000);
        assert_eq!(hub.agent_disconnected_at("sam"), Some(5_000));
    }
}
