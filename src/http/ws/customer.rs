//! The customer's socket: messages to the bot (or the agent), typing, resume after a reconnect,
//! leaving a message, rating.

use std::sync::Arc;

use axum::extract::ws::WebSocket;
use futures::stream::SplitStream;
use futures::{FutureExt, StreamExt};
use tokio::sync::Notify;

use super::session::{
    error_parts, messages_after, read_frame, Heartbeat, Incoming, Outbox, SYNC_PAGE,
};
use super::{CLOSE_GOING_AWAY, CLOSE_PING_TIMEOUT, CLOSE_TOO_SLOW};
use crate::handoff::protocol::{CustomerCommand, CustomerFrame, MessageView, Typist, PROTOCOL};
use crate::http::error::{AppError, ErrorCode};
use crate::http::validate;
use crate::state::AppState;
use crate::store::ConversationState;

pub struct CustomerSession {
    state: AppState,
    conversation_id: String,
    outbox: Outbox,
    inbound: SplitStream<WebSocket>,
    /// The id of the last message this socket has shown.
    last_sent: i64,
    /// The hub's wake-up for this socket, once it is connected (see [`Self::sync`]).
    wake: Option<Arc<Notify>>,
}

/// Resolves when the hub wakes this socket (never when the socket has no wake-up yet).
async fn woken(wake: Option<&Notify>) {
    match wake {
        Some(wake) => wake.notified().await,
        None => std::future::pending().await,
    }
}

/// How a command ended for the socket.
enum Outcome {
    /// Nothing more to send (or already sent).
    Done,
    Reply(CustomerFrame),
    /// The socket failed while answering.
    SocketGone,
}

impl CustomerSession {
    /// A session for a socket whose token was checked for `conversation_id`.
    pub fn new(state: AppState, conversation_id: String, socket: WebSocket) -> Self {
        let (outbox, inbound) = Outbox::split(socket);
        CustomerSession {
            state,
            conversation_id,
            outbox,
            inbound,
            last_sent: 0,
            wake: None,
        }
    }

    /// Serve the socket until the client leaves, falls behind or goes silent, or the server
    /// shuts down.
    pub async fn run(mut self) {
        let hub = self.state.handoff.hub().clone();
        let mut inbox = hub.connect_customer(&self.conversation_id);
        self.wake = Some(inbox.wake.clone());
        self.count_connected();
        let mut heartbeat = Heartbeat::start(self.state.settings.handoff.ping_interval_secs).await;
        let closing = hub.closing();
        tokio::pin!(closing);

        if self.greet().await {
            loop {
                tokio::select! {
                    _ = &mut closing => {
                        self.outbox.close(CLOSE_GOING_AWAY, "server shutting down: reconnect and resume").await;
                        break;
                    }
                    incoming = self.inbound.next() => {
                        let Some(Ok(message)) = incoming else { break };
                        heartbeat.heard();
                        let outcome = match read_frame::<CustomerCommand>(message) {
                            Incoming::Command(command) => self.command(command).await,
                            Incoming::Bad(err) => Outcome::Reply(error_frame(&err)),
                            Incoming::Closed => break,
                            Incoming::Nothing => Outcome::Done,
                        };
                        let alive = match outcome {
                            Outcome::Done => true,
                            Outcome::Reply(frame) => self.outbox.send(&frame).await,
                            Outcome::SocketGone => false,
                        };
                        if !alive {
                            break;
                        }
                    }
                    frame = inbox.frames.recv() => match frame {
                        Some(frame) => if !self.outbox.send(&frame).await { break },
                        None => {
                            self.outbox.close(CLOSE_TOO_SLOW, "too slow: reconnect and resume").await;
                            break;
                        }
                    },
                    _ = inbox.wake.notified() => {
                        if !self.sync().await { break; }
                    }
                    _ = heartbeat.tick() => {
                        if heartbeat.client_silent() {
                            self.outbox.close(CLOSE_PING_TIMEOUT, "no pong").await;
                            break;
                        }
                        if !self.outbox.ping().await { break; }
                    }
                }
            }
        }
        hub.disconnect_customer(&self.conversation_id, inbox.id);
        self.count_connected();
    }

    fn count_connected(&self) {
        let hub = self.state.handoff.hub();
        self.state
            .metrics
            .connected_customers
            .set(hub.connected_customer_count() as i64);
    }

    /// `hello`, then the place in the queue for a waiting customer (straight away, not at the
    /// next queue change). Until the client asks to resume from an earlier id, it gets messages
    /// newer than now.
    async fn greet(&mut self) -> bool {
        let store = self.state.engine.store();
        let conversation = store
            .get_conversation(&self.conversation_id)
            .await
            .ok()
            .flatten();
        let last_id = store
            .recent_messages(&self.conversation_id, i64::MAX, 1)
            .await
            .ok()
            .and_then(|m| m.last().map(|m| m.id));
        self.last_sent = last_id.unwrap_or(0);
        let hello = CustomerFrame::Hello {
            protocol: PROTOCOL.into(),
            conversation_id: self.conversation_id.clone(),
            state: conversation
                .map(|c| c.state)
                .unwrap_or(ConversationState::Bot),
            last_message_id: last_id,
        };
        if !self.outbox.send(&hello).await {
            return false;
        }
        match self
            .state
            .handoff
            .queue_position(&self.conversation_id)
            .await
        {
            Ok(Some(position)) => self.outbox.send(&position).await,
            _ => true,
        }
    }

    async fn command(&mut self, command: CustomerCommand) -> Outcome {
        let done = |result: Result<(), AppError>| match result {
            Ok(()) => Outcome::Done,
            Err(err) => Outcome::Reply(error_frame(&err)),
        };
        match command {
            CustomerCommand::Ping => Outcome::Reply(CustomerFrame::Pong),
            CustomerCommand::Resume { after } => {
                self.last_sent = after.max(0);
                if self.sync().await {
                    Outcome::Done
                } else {
                    Outcome::Reply(error_frame(&AppError::Resync {
                        code: ErrorCode::ResumeFailed,
                        message: "could not send the conversation",
                    }))
                }
            }
            CustomerCommand::Message {
                text,
                client_message_id,
            } => match self.message(&text, client_message_id).await {
                Ok(outcome) => outcome,
                Err(err) => Outcome::Reply(error_frame(&err)),
            },
            CustomerCommand::Typing { on } => {
                let agent = self
                    .state
                    .handoff
                    .handoff_store()
                    .get_handoff(&self.conversation_id)
                    .await
                    .ok()
                    .flatten()
                    .filter(|h| h.state == ConversationState::Assigned)
                    .and_then(|h| h.agent_id);
                self.state
                    .handoff
                    .customer_typing(agent.as_deref(), &self.conversation_id, on);
                Outcome::Done
            }
            CustomerCommand::LeaveMessage { email, text } => done(
                self.state
                    .handoff
                    .leave_message(&self.conversation_id, &email, &text)
                    .await
                    .map_err(AppError::from),
            ),
            CustomerCommand::Rate { score, comment } => done(
                self.state
                    .handoff
                    .rate(&self.conversation_id, score, comment.as_deref())
                    .await
                    .map_err(AppError::from),
            ),
        }
    }

    /// A customer message: checked as over HTTP, refused before it is stored when over the rate
    /// limit (the client may send it again after the wait), then the turn, with the bot shown
    /// typing and an LLM's answer forwarded as `delta` frames while it is written; then the
    /// `ack` and the stored messages.
    async fn message(
        &mut self,
        text: &str,
        client_message_id: Option<String>,
    ) -> Result<Outcome, AppError> {
        let state = self.state.clone();
        // Owned: the session catches its socket up (`&mut self`) while this is still in use.
        let conversation_id = self.conversation_id.clone();
        let conversation_id = conversation_id.as_str();
        let text = validate::message_text(text, state.settings.server.max_message_chars)?;
        validate::client_message_id(client_message_id.as_deref())?;
        state.limits.check_message(conversation_id)?;
        let bot_answers = state
            .engine
            .store()
            .get_conversation(conversation_id)
            .await
            .ok()
            .flatten()
            .is_some_and(|c| !c.state.human_owned());
        if bot_answers && !self.outbox.send(&bot_typing(true)).await {
            return Ok(Outcome::SocketGone);
        }
        let (deltas, mut written) = tokio::sync::mpsc::unbounded_channel();
        // The turn runs as its own task: it goes on when the customer leaves (its reply is
        // stored either way), and it keeps running while this session writes to the socket. A
        // turn future left unpolled while the session awaited a read of its own could hold a
        // database connection the read needs.
        let mut turn = tokio::spawn({
            let state = state.clone();
            let conversation_id = conversation_id.to_string();
            let text = text.to_string();
            let client_message_id = client_message_id.clone();
            async move {
                state
                    .engine
                    .handle_customer_message_streaming(
                        &conversation_id,
                        &text,
                        client_message_id.as_deref(),
                        Some(&deltas),
                    )
                    .await
            }
        });
        let mut customer_gone = false;
        // Messages stored while the turn runs go out at once. In a conversation a person owns
        // the agent sees the customer's message as soon as it is stored and may answer before
        // the turn's silent reading (a sentiment pass, then a commit) is done; under load that
        // reading waits behind others, and the answer must not wait with it.
        let wake = self.wake.clone();
        let mut synced_during_turn = false;
        let result = loop {
            tokio::select! {
                finished = &mut turn => break finished,
                Some(text) = written.recv(), if !customer_gone => {
                    customer_gone = !self.outbox.send(&CustomerFrame::Delta { text }).await;
                }
                _ = woken(wake.as_deref()), if !customer_gone => {
                    customer_gone = !self.sync().await;
                    synced_during_turn = true;
                }
            }
        };
        if customer_gone {
            return Ok(Outcome::SocketGone);
        }
        if bot_answers {
            let _ = self.outbox.send(&bot_typing(false)).await;
        }
        let result = match result {
            Ok(Ok(result)) => result,
            Ok(Err(err)) => {
                // Not an internal error for the customer: nothing was lost, they can send again.
                tracing::warn!(conversation_id, error = %err, "customer message over WebSocket failed");
                return Err(AppError::Unavailable(
                    "your message could not be processed; send it again".into(),
                ));
            }
            Err(err) => {
                // The turn's task panicked or the runtime is stopping. The message may be
                // stored: sending it again with the same client_message_id does not store it twice.
                tracing::error!(conversation_id, error = %err, "a customer message's turn did not finish");
                return Err(AppError::Unavailable(
                    "your message could not be processed; send it again".into(),
                ));
            }
        };
        // The stored messages (the customer's and the reply) follow through the sync.
        let ack = CustomerFrame::Ack {
            client_message_id,
            message_id: result.message_id,
        };
        if !self.outbox.send(&ack).await {
            return Ok(Outcome::SocketGone);
        }
        // Every message stored since that catch-up woke the socket again; without such a wake
        // there is nothing new to read.
        let woken_since = wake
            .as_deref()
            .is_some_and(|wake| wake.notified().now_or_never().is_some());
        if synced_during_turn && !woken_since {
            return Ok(Outcome::Done);
        }
        if self.sync().await {
            Ok(Outcome::Done)
        } else {
            Err(AppError::Resync {
                code: ErrorCode::SyncFailed,
                message: "could not send the reply",
            })
        }
    }

    /// Send every message after `last_sent`; false when the socket failed.
    async fn sync(&mut self) -> bool {
        // A wake-up given before this read is answered by it (the socket's own message and the
        // reply woke it during its turn, say): taken now, it would only read again and find
        // nothing. Taken before the read, so a wake for anything stored after it still stands.
        if let Some(wake) = &self.wake {
            let _ = wake.notified().now_or_never();
        }
        loop {
            let messages = messages_after(&self.state, &self.conversation_id, self.last_sent).await;
            let full_page = messages.len() as i64 == SYNC_PAGE;
            for message in &messages {
                let frame = CustomerFrame::Message {
                    message: MessageView::from(message),
                };
                if !self.outbox.send(&frame).await {
                    return false;
                }
                self.last_sent = message.id;
            }
            if !full_page {
                return true;
            }
        }
    }
}

fn bot_typing(on: bool) -> CustomerFrame {
    CustomerFrame::Typing {
        who: Typist::Bot,
        name: None,
        on,
    }
}

fn error_frame(err: &AppError) -> CustomerFrame {
    let (code, message) = error_parts(err);
    CustomerFrame::Error { code, message }
}
