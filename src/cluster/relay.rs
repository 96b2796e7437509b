//! The hub's deliveries between instances, over PostgreSQL LISTEN/NOTIFY.
//!
//! Publishing never blocks the handoff service: signals go into a channel that one task drains,
//! sending everything queued as one `pg_notify` statement (one round trip per burst). A payload
//! over NOTIFY's 8000-byte limit (an offer with a long transcript, a long queue) is written to
//! `hub_spill` and the notification carries its id.
//!
//! Every instance LISTENs on the channel and hands what others published to its own hub. When the
//! listening connection is lost, notifications sent meanwhile are gone: the listener reconnects
//! and then calls [`Hub::catch_up`], which makes every local socket re-read the durable state
//! (messages after the last one it sent; for agents, what they hold). Messages are stored before
//! anyone is woken, so a lost notification delays a message, never loses it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::handoff::hub::{Hub, Relay, Signal};

/// NOTIFY refuses payloads of 8000 bytes or more; leave room for the envelope.
const MAX_INLINE_PAYLOAD: usize = 7_800;
/// Signals sent in one statement at most.
const MAX_BATCH: usize = 256;

/// What travels on the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Envelope {
    /// The publishing instance (an instance ignores its own).
    from: String,
    #[serde(flatten)]
    body: Body,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Body {
    Hub(Box<Signal>),
    /// A hub signal too large to travel inline: the `hub_spill` row holding it.
    Spill(i64),
    Control(Control),
}

/// Cluster housekeeping messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// An instance retrained its intents: the others retrain too.
    IntentsChanged,
}

pub struct PgRelay {
    pool: PgPool,
    instance_id: String,
    channel: String,
    sender: mpsc::UnboundedSender<Body>,
    /// Taken by the publisher task when it starts.
    receiver: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<Body>>>,
}

impl Relay for PgRelay {
    fn publish(&self, signal: Signal) {
        // Fails only once the publisher has stopped (shutdown): nothing left to tell.
        let _ = self.sender.send(Body::Hub(Box::new(signal)));
    }
}

impl PgRelay {
    pub fn new(pool: PgPool, instance_id: String, channel: String) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            pool,
            instance_id,
            channel,
            sender,
            receiver: parking_lot::Mutex::new(Some(receiver)),
        }
    }

    pub fn control(&self, control: Control) {
        let _ = self.sender.send(Body::Control(control));
    }

    /// Sends what is published, in order, until `stop`; then sends what is left.
    pub async fn run_publisher(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let Some(mut receiver) = self.receiver.lock().take() else {
            tracing::error!("the cluster relay's publisher was started twice");
            return;
        };
        tokio::pin!(stop);
        let mut stopping = false;
        loop {
            let first = if stopping {
                match receiver.try_recv() {
                    Ok(first) => first,
                    Err(_) => return,
                }
            } else {
                tokio::select! {
                    _ = &mut stop => { stopping = true; continue; }
                    next = receiver.recv() => match next {
                        Some(first) => first,
                        None => return,
                    },
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            // PostgreSQL down means the whole instance is failing; keep the order and retry
            // rather than drop a wake another instance is waiting for.
            let mut backoff = Duration::from_millis(50);
            while let Err(err) = self.send(&batch).await {
                tracing::warn!(error = %err, signals = batch.len(), "cluster relay: could not notify; retrying");
                if stopping {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }

    async fn send(&self, batch: &[Body]) -> Result<(), sqlx::Error> {
        let mut payloads = Vec::with_capacity(batch.len());
        for body in batch {
            let payload = self.envelope(body);
            let Body::Hub(signal) = body else {
                // Spill ids and control messages are a few bytes.
                payloads.push(payload);
                continue;
            };
            if payload.len() <= MAX_INLINE_PAYLOAD {
                payloads.push(payload);
                continue;
            }
            let spilled = serde_json::to_string(signal).expect("hub signals serialise");
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO hub_spill (payload, created_at) VALUES ($1, $2) RETURNING id",
            )
            .bind(spilled)
            .bind(crate::handoff::clock::Clock::now(
                &crate::handoff::clock::SystemClock,
            ))
            .fetch_one(&self.pool)
            .await?;
            payloads.push(self.envelope(&Body::Spill(id)));
        }
        // unnest yields the payloads in array order and pg_notify runs once per row; one
        // statement is one transaction, whose notifications arrive together and in order.
        sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
            .bind(&self.channel)
            .bind(&payloads)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn envelope(&self, body: &Body) -> String {
        serde_json::to_string(&Envelope {
            from: self.instance_id.clone(),
            body: body.clone(),
        })
        .expect("envelopes serialise")
    }

    /// Hands what other instances publish to `hub` until `stop`; reconnects and catches up
    /// after a lost connection.
    pub async fn run_listener(
        self: Arc<Self>,
        hub: Arc<Hub>,
        on_intents_changed: Arc<dyn Fn() + Send + Sync>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut first_connection = true;
        'connect: loop {
            let mut listener = tokio::select! {
                _ = &mut stop => return,
                listener = self.listen() => listener,
            };
            if !first_connection {
                tracing::info!(
                    "cluster relay: listening again; every socket re-reads what it shows"
                );
                hub.catch_up();
            }
            first_connection = false;
            loop {
                let next = tokio::select! {
                    _ = &mut stop => return,
                    next = listener.try_recv() => next,
                };
                match next {
                    Ok(Some(notification)) => {
                        self.handle(notification.payload(), &hub, &on_intents_changed)
                            .await
                    }
                    // The connection was lost; what was sent meanwhile is gone.
                    Ok(None) => {
                        tracing::warn!("cluster relay: the listening connection was lost");
                        continue 'connect;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cluster relay: listening failed");
                        continue 'connect;
                    }
                }
            }
        }
    }

    /// A listening connection, retried until there is one.
    async fn listen(&self) -> PgListener {
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = async {
                let mut listener = PgListener::connect_with(&self.pool).await?;
                listener.listen(&self.channel).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            match attempt.await {
                Ok(listener) => return listener,
                Err(err) => {
                    tracing::warn!(error = %err, "cluster relay: cannot listen; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn handle(
        &self,
        payload: &str,
        hub: &Hub,
        on_intents_changed: &Arc<dyn Fn() + Send + Sync>,
    ) {
        let envelope: Envelope = match serde_json::from_str(payload) {
            Ok(envelope) => envelope,
            Err(err) => {
                tracing::warn!(error = %err, "cluster relay: ignoring a notification that is not Baton's");
                return;
            }
        };
        if envelope.from == self.instance_id {
            return;
        }
        match envelope.body {
            Body::Hub(signal) => hub.deliver(*signal),
            Body::Spill(id) => match self.unspill(id).await {
                Ok(signal) => hub.deliver(signal),
                Err(err) => {
                    tracing::warn!(id, error = %err, "cluster relay: a spilled signal could not be read; catching up");
                    hub.catch_up();
                }
            },
            Body::Control(Control::IntentsChanged) => on_intents_changed(),
        }
    }

    async fn unspill(&self, id: i64) -> Result<Signal, String> {
        let payload: Option<String> =
            sqlx::query_scalar("SELECT payload FROM hub_spill WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|err| err.to_string())?;
        let payload = payload.ok_or_else(|| "no such row (cleaned up already?)".to_string())?;
        serde_json::from_str(&payload).map_err(|err| err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::protocol::{CustomerFrame, Typist};

    #[test]
    fn envelopes_round_trip_and_stay_small() {
        let envelope = Envelope {
            from: "a".repeat(32),
            body: Body::Hub(Box::new(Signal::Customer {
                conversation_id: "c".repeat(36),
                frame: CustomerFrame::Typing {
                    who: Typist::Agent,
                    name: Some("Maya".into()),
                    on: true,
                },
            })),
        };
        let text = serde_json::to_string(&envelope).unwrap();
        assert!(text.len() < 300, "{text}");
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), envelope);
        for body in [Body::Spill(7), Body::Control(Control::IntentsChanged)] {
            let envelope = Envelope {
                from: "b".into(),
                body,
            };
            let text = serde_json::to_string(&envelope).unwrap();
            assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), envelope);
        }
    }
}
