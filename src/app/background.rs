//! The work that runs beside the server, started and stopped here rather than in `http::serve`
//! (which only serves): the handoff sweeper, webhook delivery, and the cluster's relay, heartbeat
//! and election.

use std::sync::Arc;

use crate::cluster::{Cluster, Leadership};
use crate::state::AppState;

/// The work that runs beside the server: the handoff sweeper (offers, reply timeouts, grace
/// periods), one delivery worker per webhook target and, with several instances, the cluster's
/// relay, heartbeat and election (the sweeper and webhooks then run on the leader only). Stopped
/// with [`Background::stop`].
pub struct Background {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    cluster: Option<Arc<Cluster>>,
}

impl AppState {
    /// Start the background work on the current runtime.
    pub fn start_background(&self) -> Background {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = {
            let stopped = stopped.clone();
            move || {
                let mut receiver = stopped.clone();
                async move {
                    let _ = receiver.wait_for(|stop| *stop).await;
                }
            }
        };
        let mut tasks = Vec::new();
        let leadership = match &self.cluster {
            Some(cluster) => {
                let state = self.clone();
                let on_intents_changed: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                    let state = state.clone();
                    tokio::spawn(async move {
                        match state.retrain_intents_here().await {
                            Ok(info) => tracing::info!(
                                intents = info.intents,
                                "intents retrained after another instance did"
                            ),
                            Err(err) => {
                                tracing::error!(error = %err, "another instance retrained its intents; this one could not")
                            }
                        }
                    });
                });
                tasks.extend(cluster.start(on_intents_changed, stopped));
                cluster.leadership().clone()
            }
            None => Leadership::alone(),
        };
        let leading = {
            let leadership = leadership.clone();
            move || leadership.is_leader()
        };
        tasks.push(tokio::spawn(
            self.handoff
                .clone()
                .run_sweeper(leading.clone(), until_stopped()),
        ));
        for target in &self.settings.handoff.webhooks {
            let worker = crate::handoff::webhooks::WebhookWorker::new(
                target.clone(),
                self.engine.store().clone(),
                self.handoff.handoff_store().clone(),
                self.metrics.clone(),
            );
            tasks.push(tokio::spawn(worker.run(
                std::time::Duration::from_secs(1),
                leading.clone(),
                until_stopped(),
            )));
        }
        Background {
            stop,
            tasks,
            cluster: self.cluster.clone(),
        }
    }
}

impl Background {
    /// Ask every worker to stop and wait (up to 5 s each) for it to finish its step; leave the
    /// cluster.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
        if let Some(cluster) = self.cluster {
            cluster.leave().await;
        }
    }
}
