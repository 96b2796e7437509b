//! The WebSocket protocol (`baton.v1`, documented in docs/protocol.md): JSON frames tagged by
//! `type`, one enum per direction and side. Messages themselves are durable (stored before they are
//! sent) and carry their id, so a client that reconnects asks for everything after the last id it
//! saw; typing indicators and queue positions are ephemeral.

use serde::{Deserialize, Serialize};

use crate::nlp::intents::Priority;
use crate::store::{AgentStatus, ConversationState, MessageRecord, Millis, Role};

pub const PROTOCOL: &str = "baton.v1";

/// A message as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: i64,
    pub role: Role,
    pub text: String,
    pub created_at: Millis,
    /// The agent's display name, for agent messages.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub author: Option<String>,
    /// For system messages: `queued`, `agent_joined`, `agent_left`, `reassigning`, `offline`,
    /// `resolved`, `handed_back`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<String>,
    /// Bot replies: decision, sources and options; system messages: their details.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub meta: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_message_id: Option<String>,
}

impl From<&MessageRecord> for MessageView {
    fn from(message: &MessageRecord) -> Self {
        let author = message
            .meta
            .as_ref()
            .and_then(|meta| meta.get("author"))
            .and_then(|author| author.as_str())
            .map(str::to_string);
        Self {
            id: message.id,
            role: message.role,
            text: message.text.clone(),
            created_at: message.created_at,
            author,
            kind: message.kind.clone(),
            meta: message.meta.clone(),
            client_message_id: message.client_message_id.clone(),
        }
    }
}

/// Who is typing, for the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Typist {
    Bot,
    Agent,
}

/// Server -> customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CustomerFrame {
    Hello {
        protocol: String,
        conversation_id: String,
        state: ConversationState,
        /// The newest message id stored for this conversation (resume from the last one you saw).
        last_message_id: Option<i64>,
    },
    Message {
        message: MessageView,
    },
    Typing {
        who: Typist,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        name: Option<String>,
        on: bool,
    },
    /// While waiting for a person.
    Queue {
        position: usize,
        estimated_wait_secs: u64,
        agents_online: usize,
    },
    State {
        state: ConversationState,
    },
    /// Part of the bot's answer while an LLM writes it, to show as a draft: each frame's text
    /// follows the previous one. The stored reply then arrives as a `message` and replaces the
    /// draft; it is what counts (citations checked, or a handoff when the model declined).
    Delta {
        text: String,
    },
    /// A customer message was stored (its id; the reply follows as its own message).
    Ack {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        client_message_id: Option<String>,
        message_id: i64,
    },
    Error {
        code: String,
        message: String,
    },
    Pong,
}

/// Customer -> server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CustomerCommand {
    /// Send every message with an id greater than `after` (0: the whole conversation).
    Resume {
        after: i64,
    },
    Message {
        text: String,
        #[serde(default)]
        client_message_id: Option<String>,
    },
    Typing {
        on: bool,
    },
    /// Nobody is available: leave contact details and a message for the next agent.
    LeaveMessage {
        email: String,
        text: String,
    },
    /// Satisfaction at the end (1..5).
    Rate {
        score: u8,
        #[serde(default)]
        comment: Option<String>,
    },
    Ping,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentView {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub skills: Vec<String>,
    pub capacity: i64,
    pub status: AgentStatus,
    pub active: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NoteView {
    pub author: String,
    pub text: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IntentView {
    pub name: String,
    pub confidence: f32,
}

/// Everything an agent needs to take over without asking the customer to repeat themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConversationContext {
    pub conversation_id: String,
    pub state: ConversationState,
    pub skill: String,
    pub priority: Priority,
    /// Why the bot handed off.
    pub reasons: Vec<String>,
    pub frustration: f32,
    pub queued_at: Millis,
    pub intent: Option<IntentView>,
    /// The sentiment of the latest customer message, when a sentiment model is present.
    pub sentiment: Option<serde_json::Value>,
    /// The knowledge chunks the bot found for the latest customer message (suggestions).
    pub knowledge: Vec<serde_json::Value>,
    /// A short summary for a first look.
    pub summary: String,
    pub transcript: Vec<MessageView>,
    /// Internal notes, never shown to the customer.
    pub notes: Vec<NoteView>,
    /// Per customer message, oldest first: sentiment and frustration as the bot saw them (the
    /// trend an agent reads at a glance).
    pub mood: Vec<MoodPoint>,
    pub contact_email: Option<String>,
    pub contact_note: Option<String>,
    pub reassignments: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MoodPoint {
    pub message_id: i64,
    /// Probability that the message is negative (None without a sentiment model).
    pub negative: Option<f32>,
    pub frustration: Option<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueItem {
    pub conversation_id: String,
    pub skill: String,
    pub priority: Priority,
    pub frustration: f32,
    pub waiting_secs: u64,
    pub reasons: Vec<String>,
    pub intent: Option<String>,
    pub preview: String,
}

/// Server -> agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentFrame {
    Hello {
        protocol: String,
        agent: AgentView,
        conversations: Vec<ConversationContext>,
        queue: Vec<QueueItem>,
    },
    /// Accept within `expires_at` (offer mode).
    Offer {
        conversation: ConversationContext,
        expires_at: Millis,
    },
    Assigned {
        conversation: ConversationContext,
    },
    /// The conversation is no longer yours.
    Unassigned {
        conversation_id: String,
        reason: String,
    },
    Message {
        conversation_id: String,
        message: MessageView,
    },
    Typing {
        conversation_id: String,
        on: bool,
    },
    Note {
        conversation_id: String,
        note: NoteView,
    },
    Queue {
        queue: Vec<QueueItem>,
    },
    Presence {
        status: AgentStatus,
        active: i64,
        capacity: i64,
    },
    Rated {
        conversation_id: String,
        score: u8,
    },
    Error {
        code: String,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        conversation_id: Option<String>,
    },
    Pong,
}

/// Agent -> server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentCommand {
    Message {
        conversation_id: String,
        text: String,
        #[serde(default)]
        client_message_id: Option<String>,
    },
    Typing {
        conversation_id: String,
        on: bool,
    },
    Note {
        conversation_id: String,
        text: String,
    },
    Accept {
        conversation_id: String,
    },
    Decline {
        conversation_id: String,
    },
    /// Take a conversation from the queue.
    Claim {
        conversation_id: String,
    },
    Transfer {
        conversation_id: String,
        #[serde(default)]
        to_agent: Option<String>,
        #[serde(default)]
        to_skill: Option<String>,
        #[serde(default)]
        note: Option<String>,
    },
    Resolve {
        conversation_id: String,
    },
    HandBack {
        conversation_id: String,
    },
    Presence {
        status: AgentStatus,
    },
    /// Send the conversation's messages after `after` again (after a reconnect).
    Sync {
        conversation_id: String,
        after: i64,
    },
    Ping,
}

impl AgentCommand {
    /// The conversation the command acts on, if any: an error answering it names the conversation.
    pub fn conversation_id(&self) -> Option<&str> {
        match self {
            AgentCommand::Message {
                conversation_id, ..
            }
            | AgentCommand::Typing {
                conversation_id, ..
            }
            | AgentCommand::Note {
                conversation_id, ..
            }
            | AgentCommand::Accept { conversation_id }
            | AgentCommand::Decline { conversation_id }
            | AgentCommand::Claim { conversation_id }
            | AgentCommand::Transfer {
                conversation_id, ..
            }
            | AgentCommand::Resolve { conversation_id }
            | AgentCommand::HandBack { conversation_id }
            | AgentCommand::Sync {
                conversation_id, ..
            } => Some(conversation_id),
            AgentCommand::Presence { .. } | AgentCommand::Ping => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_tagged_json() {
        let frame = CustomerFrame::Typing {
            who: Typist::Bot,
            name: None,
            on: true,
        };
        assert_eq!(
            serde_json::to_value(&frame).unwrap(),
            serde_json::json!({"type": "typing", "who": "bot", "on": true})
        );
        let command: CustomerCommand =
            serde_json::from_str(r#"{"type":"resume","after":12}"#).unwrap();
        assert_eq!(command, CustomerCommand::Resume { after: 12 });
        let command: AgentCommand = serde_json::from_str(
            r#"{"type":"transfer","conversation_id":"c","to_skill":"billing"}"#,
        )
        .unwrap();
        assert!(matches!(
            command,
            AgentCommand::Transfer {
                to_skill: Some(_),
                ..
            }
        ));
        assert!(
            serde_json::from_str::<CustomerCommand>(r#"{"type":"resume","after":1,"x":2}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<CustomerCommand>(r#"{"type":"explode"}"#).is_err());
    }
}

/// Every command a client can send survives the trip through JSON unchanged, and any mangled
/// frame is either a command or an error, never a panic.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::test_support::{mutated, noise};

    fn text() -> impl Strategy<Value = String> {
        // Any Unicode, including quotes, backslashes, control characters and emoji.
        any::<String>()
    }

    fn customer_command() -> impl Strategy<Value = CustomerCommand> {
        prop_oneof![
            any::<i64>().prop_map(|after| CustomerCommand::Resume { after }),
            (text(), prop::option::of(text())).prop_map(|(text, client_message_id)| {
                CustomerCommand::Message {
                    text,
                    client_message_id,
                }
            }),
            any::<bool>().prop_map(|on| CustomerCommand::Typing { on }),
            (text(), text())
                .prop_map(|(email, text)| CustomerCommand::LeaveMessage { email, text }),
            (any::<u8>(), prop::option::of(text()))
                .prop_map(|(score, comment)| CustomerCommand::Rate { score, comment }),
            Just(CustomerCommand::Ping),
        ]
    }

    fn agent_command() -> impl Strategy<Value = AgentCommand> {
        let id = text;
        prop_oneof![
            (id(), text(), prop::option::of(text())).prop_map(
                |(conversation_id, text, client_message_id)| AgentCommand::Message {
                    conversation_id,
                    text,
                    client_message_id,
                }
            ),
            (id(), any::<bool>()).prop_map(|(conversation_id, on)| AgentCommand::Typing {
                conversation_id,
                on
            }),
            (id(), text()).prop_map(|(conversation_id, text)| AgentCommand::Note {
                conversation_id,
                text
            }),
            id().prop_map(|conversation_id| AgentCommand::Accept { conversation_id }),
            id().prop_map(|conversation_id| AgentCommand::Decline { conversation_id }),
            id().prop_map(|conversation_id| AgentCommand::Claim { conversation_id }),
            (
                id(),
                prop::option::of(text()),
                prop::option::of(text()),
                prop::option::of(text())
            )
                .prop_map(|(conversation_id, to_agent, to_skill, note)| {
                    AgentCommand::Transfer {
                        conversation_id,
                        to_agent,
                        to_skill,
                        note,
                    }
                }),
            id().prop_map(|conversation_id| AgentCommand::Resolve { conversation_id }),
            id().prop_map(|conversation_id| AgentCommand::HandBack { conversation_id }),
            prop_oneof![
                Just(AgentStatus::Online),
                Just(AgentStatus::Away),
                Just(AgentStatus::Offline)
            ]
            .prop_map(|status| AgentCommand::Presence { status }),
            (id(), any::<i64>()).prop_map(|(conversation_id, after)| AgentCommand::Sync {
                conversation_id,
                after
            }),
            Just(AgentCommand::Ping),
        ]
    }

    const CUSTOMER_FRAMES: &[u8] =
        br#"{"type":"message","text":"where is my parcel?","client_message_id":"c-1"}"#;
    const AGENT_FRAMES: &[u8] = br#"{"type":"transfer","conversation_id":"5b8e","to_skill":"billing","note":"over to you"}"#;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn customer_commands_round_trip(command in customer_command()) {
            let json = serde_json::to_string(&command).unwrap();
            prop_assert_eq!(serde_json::from_str::<CustomerCommand>(&json).unwrap(), command);
        }

        #[test]
        fn agent_commands_round_trip(command in agent_command()) {
            let json = serde_json::to_string(&command).unwrap();
            prop_assert_eq!(serde_json::from_str::<AgentCommand>(&json).unwrap(), command);
        }

        #[test]
        fn mangled_frames_are_commands_or_errors(
            customer in mutated(CUSTOMER_FRAMES),
            agent in mutated(AGENT_FRAMES),
            junk in noise(512),
        ) {
            for bytes in [&customer, &agent, &junk] {
                let text = String::from_utf8_lossy(bytes);
                let _ = serde_json::from_str::<CustomerCommand>(&text);
                let _ = serde_json::from_str::<AgentCommand>(&text);
            }
        }
    }
}
