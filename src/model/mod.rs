//! Shared models at the bottom of the house: documents and chunks (what the knowledge base, the
//! vector index and the store speak about) and conversations with their messages (what the store
//! keeps and the bot, the handoff side and the HTTP layer read), with no dependency on any of them.

pub mod conversation;
pub mod document;

pub use conversation::{ConversationRecord, ConversationState, MessageRecord, Millis, Role};
pub use document::{Chunk, Document, DocumentKind};
