//! Outgoing webhooks. The event log is the outbox: each target remembers (in the store) the last
//! event it was sent, reads the log after it, and POSTs the events it subscribes to, signed with
//! HMAC-SHA256, retrying with exponential backoff. A restart resumes where it stopped, so an event
//! is delivered at least once (receivers de-duplicate by `X-Baton-Delivery`, the event id).

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::config::WebhookTarget;
use crate::metrics::Metrics;
use crate::store::{EventRecord, HandoffStore, Store, StoreError};

/// First retry delay; doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Events read from the log per round.
const BATCH: i64 = 100;

/// `sha256=<hex>` of the body under the target's secret.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The JSON body sent for an event.
pub fn body(event: &EventRecord) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": event.id,
        "kind": event.kind,
        "conversation_id": event.conversation_id,
        "payload": event.payload,
        "created_at": event.created_at,
    }))
    .unwrap_or_default()
}

pub struct WebhookWorker {
    target: WebhookTarget,
    store: Arc<dyn Store>,
    handoffs: Arc<dyn HandoffStore>,
    client: reqwest::Client,
    metrics: Metrics,
}

impl WebhookWorker {
    pub fn new(
        target: WebhookTarget,
        store: Arc<dyn Store>,
        handoffs: Arc<dyn HandoffStore>,
        metrics: Metrics,
    ) -> Self {
        Self {
            target,
            store,
            handoffs,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            metrics,
        }
    }

    /// Deliver until `stop` resolves, polling the log every `poll`, in rounds when `leading()`
    /// (with several instances only the leader delivers, so no event goes out twice).
    pub async fn run(
        self,
        poll: Duration,
        leading: impl Fn() -> bool,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            if !leading() {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(poll) => continue,
                }
            }
            match self.deliver_pending(&mut stop).await {
                Ok(true) => return, // stopped while delivering
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(target = %self.target.name, error = %err, "webhook round failed")
                }
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Send everything after the cursor. Returns true if `stop` fired during a backoff.
    async fn deliver_pending(
        &self,
        stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<bool, StoreError> {
        loop {
            let cursor = self.handoffs.webhook_cursor(&self.target.name).await?;
            let events = self.store.settled_events(cursor, BATCH).await?;
            if events.is_empty() {
                return Ok(false);
            }
            for event in events {
                let subscribed = self.target.events.iter().any(|kind| kind == &event.kind);
                if subscribed && self.deliver(&event, stop).await {
                    return Ok(true);
                }
                self.handoffs
                    .set_webhook_cursor(&self.target.name, event.id)
                    .await?;
            }
        }
    }

    /// One event, with retries. Returns true if `stop` fired while waiting to retry.
    async fn deliver(
        &self,
        event: &EventRecord,
        stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> bool {
        let body = body(event);
        let signature = signature(&self.target.secret, &body);
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=self.target.max_attempts.max(1) {
            let sent = self
                .client
                .post(&self.target.url)
                .header("content-type", "application/json")
                .header("x-baton-signature", &signature)
                .header("x-baton-event", &event.kind)
                .header("x-baton-delivery", event.id.to_string())
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    self.metrics
                        .webhooks
                        .with_label_values(&[&self.target.name, "delivered"])
                        .inc();
                    return false;
                }
                Ok(response) => {
                    tracing::warn!(target = %self.target.name, event = event.id, attempt, status = %response.status(), "webhook refused");
                }
                Err(err) => {
                    tracing::warn!(target = %self.target.name, event = event.id, attempt, error = %err, "webhook failed");
                }
            }
            self.metrics
                .webhooks
                .with_label_values(&[&self.target.name, "retried"])
                .inc();
            if attempt < self.target.max_attempts {
                tokio::select! {
                    _ = stop.as_mut() => return true,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        tracing::error!(target = %self.target.name, event = event.id, "webhook given up after {} attempts", self.target.max_attempts);
        self.metrics
            .webhooks
            .with_label_values(&[&self.target.name, "given_up"])
            .inc();
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let signature = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            signature,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
