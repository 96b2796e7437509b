//! The agent's socket: offers, the conversations the agent holds and their messages, and the
//! agent's actions (reply, note, accept, decline, claim, transfer, resolve, hand back, presence).

use std::collections::{HashMap, HashSet};

use axum::extract::ws::WebSocket;
use futures::stream::SplitStream;
use futures::StreamExt;

use super::session::{
    error_parts, messages_after, read_frame, Heartbeat, Incoming, Outbox, SYNC_PAGE,
};
use super::{CLOSE_GOING_AWAY, CLOSE_PING_TIMEOUT, CLOSE_TOO_SLOW};
use crate::handoff::hub::AgentInbox;
use crate::handoff::protocol::{AgentCommand, AgentFrame, MessageView};
use crate::handoff::{Actor, HandoffError, TransferTarget};
use crate::http::error::AppError;
use crate::state::AppState;
use crate::store::AgentRecord;

pub struct AgentSession {
    state: AppState,
    agent: AgentRecord,
    outbox: Outbox,
    inbound: SplitStream<WebSocket>,
    /// Per conversation this socket shows: the last message id it has sent.
    last_sent: HashMap<String, i64>,
}

impl AgentSession {
    /// A session for a socket whose token was checked for `agent`.
    pub fn new(state: AppState, agent: AgentRecord, socket: WebSocket) -> Self {
        let (outbox, inbound) = Outbox::split(socket);
        AgentSession {
            state,
            agent,
            outbox,
            inbound,
            last_sent: HashMap::new(),
        }
    }

    /// Serve the socket until the agent leaves, falls behind or goes silent, or the server shuts
    /// down. Connecting makes the agent available to dispatch; leaving releases what the
    /// handoff rules say (after a grace period).
    pub async fn run(mut self) {
        let service = self.state.handoff.clone();
        let hub = service.hub().clone();
        let mut inbox = hub.connect_agent(&self.agent.id);
        let mut heartbeat = Heartbeat::start(self.state.settings.handoff.ping_interval_secs).await;

        let hello = match service.agent_connected(&self.agent).await {
            Ok(hello) => hello,
            Err(err) => {
                tracing::error!(agent = %self.agent.id, error = %err, "agent connection failed");
                service.agent_disconnected(&self.agent.id, inbox.id).await;
                return;
            }
        };
        let mut alive = self.send(&hello).await;
        if alive {
            if let Err(err) = service.dispatch().await {
                tracing::warn!(error = %err, "dispatch after an agent connected failed");
            }
        }
        let closing = hub.closing();
        tokio::pin!(closing);
        while alive {
            tokio::select! {
                _ = &mut closing => {
                    self.outbox.close(CLOSE_GOING_AWAY, "server shutting down: reconnect").await;
                    break;
                }
                incoming = self.inbound.next() => {
                    let Some(Ok(message)) = incoming else { break };
                    heartbeat.heard();
                    let reply = match read_frame::<AgentCommand>(message) {
                        Incoming::Command(command) => {
                            let conversation_id = command.conversation_id().map(str::to_string);
                            match self.command(command).await {
                                Ok(reply) => reply,
                                Err(err) => Some(error_frame(&err, conversation_id)),
                            }
                        }
                        Incoming::Bad(err) => Some(error_frame(&err, None)),
                        Incoming::Closed => break,
                        Incoming::Nothing => None,
                    };
                    if let Some(reply) = reply {
                        alive = self.outbox.send(&reply).await;
                    }
                }
                frame = inbox.frames.recv() => match frame {
                    Some(frame) => alive = self.send(&frame).await,
                    None => {
                        self.outbox.close(CLOSE_TOO_SLOW, "too slow: reconnect").await;
                        break;
                    }
                },
                _ = inbox.wake.notified() => alive = self.woken(&inbox).await,
                _ = heartbeat.tick() => {
                    if heartbeat.client_silent() {
                        self.outbox.close(CLOSE_PING_TIMEOUT, "no pong").await;
                        break;
                    }
                    alive = self.outbox.ping().await;
                }
            }
        }
        service.agent_disconnected(&self.agent.id, inbox.id).await;
    }

    /// Send a frame from the handoff side, remembering which conversations it shows.
    async fn send(&mut self, frame: &AgentFrame) -> bool {
        self.track(frame);
        self.outbox.send(frame).await
    }

    /// New durable messages (or, after the cluster relay lost notifications, a resync of what
    /// the agent holds): send what this socket has not shown yet.
    async fn woken(&mut self, inbox: &AgentInbox) -> bool {
        if inbox
            .resync
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            let shown: HashSet<String> = self.last_sent.keys().cloned().collect();
            match self
                .state
                .handoff
                .agent_resync(&self.agent.id, &shown)
                .await
            {
                Ok(frames) => {
                    for frame in frames {
                        if !self.send(&frame).await {
                            return false;
                        }
                    }
                    inbox.dirty.lock().extend(self.last_sent.keys().cloned());
                }
                Err(err) => {
                    tracing::warn!(agent = %self.agent.id, error = %err, "agent resync failed")
                }
            }
        }
        let dirty: Vec<String> = inbox.dirty.lock().drain().collect();
        for conversation_id in dirty {
            if !self.sync(&conversation_id).await {
                return false;
            }
        }
        true
    }

    /// Remember which conversations this connection shows, from the frames it sends.
    fn track(&mut self, frame: &AgentFrame) {
        match frame {
            AgentFrame::Hello { conversations, .. } => {
                for conversation in conversations {
                    let last = conversation.transcript.last().map(|m| m.id).unwrap_or(0);
                    self.last_sent
                        .insert(conversation.conversation_id.clone(), last);
                }
            }
            AgentFrame::Offer { conversation, .. } | AgentFrame::Assigned { conversation } => {
                let last = conversation.transcript.last().map(|m| m.id).unwrap_or(0);
                let entry = self
                    .last_sent
                    .entry(conversation.conversation_id.clone())
                    .or_insert(0);
                *entry = (*entry).max(last);
            }
            AgentFrame::Unassigned {
                conversation_id, ..
            } => {
                self.last_sent.remove(conversation_id);
            }
            _ => {}
        }
    }

    /// Send the messages of a shown conversation after the last one sent; false when the socket
    /// failed.
    async fn sync(&mut self, conversation_id: &str) -> bool {
        let Some(mut after) = self.last_sent.get(conversation_id).copied() else {
            return true;
        };
        loop {
            let messages = messages_after(&self.state, conversation_id, after).await;
            let full_page = messages.len() as i64 == SYNC_PAGE;
            for message in &messages {
                let frame = AgentFrame::Message {
                    conversation_id: conversation_id.to_string(),
                    message: MessageView::from(message),
                };
                if !self.outbox.send(&frame).await {
                    return false;
                }
                after = message.id;
                self.last_sent.insert(conversation_id.to_string(), after);
            }
            if !full_page {
                return true;
            }
        }
    }

    /// One command: the reply frame to send, if any. What the handoff service refuses is an
    /// error frame naming the conversation.
    async fn command(&mut self, command: AgentCommand) -> Result<Option<AgentFrame>, AppError> {
        let service = self.state.handoff.clone();
        let agent = &self.agent;
        let actor = Actor::Agent(agent.clone());
        match command {
            AgentCommand::Ping => return Ok(Some(AgentFrame::Pong)),
            AgentCommand::Message {
                conversation_id,
                text,
                ..
            } => {
                service
                    .agent_message(agent, &conversation_id, &text)
                    .await?;
            }
            AgentCommand::Typing {
                conversation_id,
                on,
            } => service.agent_typing(agent, &conversation_id, on).await?,
            AgentCommand::Note {
                conversation_id,
                text,
            } => {
                service.note(agent, &conversation_id, &text).await?;
            }
            AgentCommand::Accept { conversation_id } => {
                service.accept(agent, &conversation_id).await?
            }
            AgentCommand::Decline { conversation_id } => {
                service.decline(agent, &conversation_id).await?
            }
            AgentCommand::Claim { conversation_id } => {
                service.claim(agent, &conversation_id).await?
            }
            AgentCommand::Transfer {
                conversation_id,
                to_agent,
                to_skill,
                note,
            } => {
                let target = match (to_agent, to_skill) {
                    (Some(agent), None) => TransferTarget::Agent(agent),
                    (None, Some(skill)) => TransferTarget::Skill(skill),
                    _ => {
                        return Err(HandoffError::Invalid(
                            "give exactly one of to_agent and to_skill".into(),
                        )
                        .into())
                    }
                };
                service
                    .transfer(&actor, &conversation_id, target, note.as_deref())
                    .await?
            }
            AgentCommand::Resolve { conversation_id } => {
                service.resolve(&actor, &conversation_id).await?
            }
            AgentCommand::HandBack { conversation_id } => {
                service.hand_back(&actor, &conversation_id).await?
            }
            AgentCommand::Presence { status } => service.set_presence(&agent.id, status).await?,
            AgentCommand::Sync {
                conversation_id,
                after,
            } => {
                if !self.last_sent.contains_key(&conversation_id) {
                    return Err(HandoffError::NotHeld(conversation_id).into());
                }
                self.last_sent.insert(conversation_id.clone(), after.max(0));
                // A socket that fails here is noticed by the next write.
                self.sync(&conversation_id).await;
            }
        }
        Ok(None)
    }
}

fn error_frame(err: &AppError, conversation_id: Option<String>) -> AgentFrame {
    let (code, message) = error_parts(err);
    AgentFrame::Error {
        code,
        message,
        conversation_id,
    }
}
