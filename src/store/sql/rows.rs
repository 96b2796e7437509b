//! Row decoding. A value that does not decode means the database holds something this code never
//! writes: it is reported as corrupt data with its location rather than a panic.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::*;
use crate::nlp::intents::Priority;
use crate::store::{AgentRecord, AgentStatus, HandoffRecord};

pub(super) fn column<'row, T>(row: &'row AnyRow, table: &str, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'row, Any> + sqlx::Type<Any>,
{
    row.try_get(name)
        .map_err(|error| StoreError::Corrupt(format!("{table}.{name}: {error}")))
}

pub(super) fn parse_json(
    text: &str,
    location: impl FnOnce() -> String,
) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("{}: invalid JSON: {error}", location())))
}

pub(super) fn parse_optional_json(
    text: Option<String>,
    location: impl FnOnce() -> String,
) -> Result<Option<serde_json::Value>, StoreError> {
    text.map(|text| parse_json(&text, location)).transpose()
}

/// A stored `conversations.state`, or `Corrupt` naming the conversation.
pub(super) fn conversation_state(id: &str, state: &str) -> Result<ConversationState, StoreError> {
    ConversationState::parse(state).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "conversations.state of {id}: unknown state {state:?}"
        ))
    })
}

pub(super) fn conversation_from_row(row: &AnyRow) -> Result<ConversationRecord, StoreError> {
    let id: String = column(row, "conversations", "id")?;
    let state: String = column(row, "conversations", "state")?;
    let state = conversation_state(&id, &state)?;
    Ok(ConversationRecord {
        token_hash: column(row, "conversations", "token_hash")?,
        state,
        created_at: column(row, "conversations", "created_at")?,
        updated_at: column(row, "conversations", "updated_at")?,
        id,
    })
}

pub(super) fn message_from_row(row: &AnyRow) -> Result<MessageRecord, StoreError> {
    let id: i64 = column(row, "messages", "id")?;
    let role: String = column(row, "messages", "role")?;
    let role = Role::parse(&role).ok_or_else(|| {
        StoreError::Corrupt(format!("messages.role of {id}: unknown role {role:?}"))
    })?;
    Ok(MessageRecord {
        conversation_id: column(row, "messages", "conversation_id")?,
        role,
        text: column(row, "messages", "text")?,
        client_message_id: column(row, "messages", "client_message_id")?,
        understanding: parse_optional_json(column(row, "messages", "understanding")?, || {
            format!("messages.understanding of {id}")
        })?,
        result: parse_optional_json(column(row, "messages", "result")?, || {
            format!("messages.result of {id}")
        })?,
        created_at: column(row, "messages", "created_at")?,
        author_id: column(row, "messages", "author_id")?,
        kind: column(row, "messages", "kind")?,
        meta: parse_optional_json(column(row, "messages", "meta")?, || {
            format!("messages.meta of {id}")
        })?,
        id,
    })
}

pub(super) fn event_from_row(row: &AnyRow) -> Result<EventRecord, StoreError> {
    let id: i64 = column(row, "events", "id")?;
    let payload: String = column(row, "events", "payload")?;
    Ok(EventRecord {
        conversation_id: column(row, "events", "conversation_id")?,
        kind: column(row, "events", "kind")?,
        payload: parse_json(&payload, || format!("events.payload of {id}"))?,
        created_at: column(row, "events", "created_at")?,
        id,
    })
}

/// The stored name of each document kind. The match is exhaustive so a new kind cannot be added
/// without choosing its name; `parse_document_kind` must learn it too.
pub(super) fn document_kind_name(kind: DocumentKind) -> &'static str {
    match kind {
        DocumentKind::Markdown => "markdown",
        DocumentKind::Text => "text",
        DocumentKind::Html => "html",
        DocumentKind::Pdf => "pdf",
        DocumentKind::Faq => "faq",
    }
}

pub(super) fn parse_document_kind(name: &str) -> Option<DocumentKind> {
    match name {
        "markdown" => Some(DocumentKind::Markdown),
        "text" => Some(DocumentKind::Text),
        "html" => Some(DocumentKind::Html),
        "pdf" => Some(DocumentKind::Pdf),
        "faq" => Some(DocumentKind::Faq),
        _ => None,
    }
}

pub(super) fn document_kind_column(
    row: &AnyRow,
    document_id: &str,
) -> Result<DocumentKind, StoreError> {
    let kind: String = column(row, "documents", "kind")?;
    parse_document_kind(&kind).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "documents.kind of {document_id}: unknown kind {kind:?}"
        ))
    })
}

pub(super) fn document_summary_from_row(row: &AnyRow) -> Result<DocumentSummary, StoreError> {
    let id: String = column(row, "documents", "id")?;
    Ok(DocumentSummary {
        source: column(row, "documents", "source")?,
        title: column(row, "documents", "title")?,
        url: column(row, "documents", "url")?,
        kind: document_kind_name(document_kind_column(row, &id)?).to_string(),
        content_hash: column(row, "documents", "content_hash")?,
        chunk_count: column(row, "chunks", "chunk_count")?,
        updated_at: column(row, "documents", "updated_at")?,
        id,
    })
}

/// Rebuild a document from `documents LEFT JOIN chunks` rows (ordered by ordinal; a document
/// without chunks yields one row whose chunk columns are NULL).
pub(super) fn document_from_rows(rows: &[AnyRow]) -> Result<Option<Document>, StoreError> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let id: String = column(first, "documents", "id")?;
    let mut document = Document {
        source: column(first, "documents", "source")?,
        title: column(first, "documents", "title")?,
        url: column(first, "documents", "url")?,
        kind: document_kind_column(first, &id)?,
        content_hash: column(first, "documents", "content_hash")?,
        chunks: Vec::with_capacity(rows.len()),
        id,
    };
    for row in rows {
        let Some(chunk_id) = column::<Option<String>>(row, "chunks", "chunk_id")? else {
            continue;
        };
        let ordinal: i64 = column(row, "chunks", "ordinal")?;
        let ordinal = u32::try_from(ordinal).map_err(|_| {
            StoreError::Corrupt(format!(
                "chunks.ordinal of {chunk_id}: {ordinal} is out of range"
            ))
        })?;
        let heading_path: String = column(row, "chunks", "heading_path")?;
        let heading_path = serde_json::from_str(&heading_path).map_err(|error| {
            StoreError::Corrupt(format!(
                "chunks.heading_path of {chunk_id}: not a JSON list of strings: {error}"
            ))
        })?;
        document.chunks.push(Chunk {
            document_id: document.id.clone(),
            ordinal,
            title: document.title.clone(),
            heading_path,
            text: column(row, "chunks", "text")?,
            question: column(row, "chunks", "question")?,
            source: document.source.clone(),
            url: document.url.clone(),
            content_hash: column(row, "chunks", "chunk_content_hash")?,
            id: chunk_id,
        });
    }
    Ok(Some(document))
}

// The handoff side: agents and the queue columns of conversations.

/// The stored rank of each priority: the queue sorts by it, so the order of the ranks is the
/// order of urgency. The match is exhaustive so a new priority cannot be added without a rank;
/// `priority_from_rank` must learn it too.
pub(super) fn priority_rank(priority: Priority) -> i64 {
    match priority {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
        Priority::Urgent => 3,
    }
}

pub(super) fn priority_from_rank(rank: i64) -> Option<Priority> {
    match rank {
        0 => Some(Priority::Low),
        1 => Some(Priority::Normal),
        2 => Some(Priority::High),
        3 => Some(Priority::Urgent),
        _ => None,
    }
}

pub(super) fn string_list_json(items: &[String]) -> String {
    serde_json::Value::from(items.to_vec()).to_string()
}

pub(super) fn parse_string_list(
    text: &str,
    location: impl FnOnce() -> String,
) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|error| {
        StoreError::Corrupt(format!(
            "{}: not a JSON list of strings: {error}",
            location()
        ))
    })
}

pub(super) fn agent_from_row(row: &AnyRow) -> Result<AgentRecord, StoreError> {
    let id: String = column(row, "agents", "id")?;
    let skills: String = column(row, "agents", "skills")?;
    let skills = parse_string_list(&skills, || format!("agents.skills of {id}"))?;
    let status: String = column(row, "agents", "status")?;
    let status = AgentStatus::parse(&status).ok_or_else(|| {
        StoreError::Corrupt(format!("agents.status of {id}: unknown status {status:?}"))
    })?;
    Ok(AgentRecord {
        name: column(row, "agents", "name")?,
        display_name: column(row, "agents", "display_name")?,
        password_hash: column(row, "agents", "password_hash")?,
        skills,
        capacity: column(row, "agents", "capacity")?,
        status,
        active: column(row, "agents", "active")?,
        created_at: column(row, "agents", "created_at")?,
        updated_at: column(row, "agents", "updated_at")?,
        id,
    })
}

/// A column every handed-off conversation has (they are all written together when it queues).
pub(super) fn handoff_column<'row, T>(
    row: &'row AnyRow,
    name: &str,
    conversation_id: &str,
) -> Result<T, StoreError>
where
    T: sqlx::Decode<'row, Any> + sqlx::Type<Any>,
{
    column::<Option<T>>(row, "conversations", name)?.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "conversations.{name} of {conversation_id}: missing although it was handed off"
        ))
    })
}

/// Rows selected with `handoff_columns!` and `skill IS NOT NULL`.
pub(super) fn handoff_from_row(row: &AnyRow) -> Result<HandoffRecord, StoreError> {
    let id: String = column(row, "conversations", "id")?;
    let state: String = column(row, "conversations", "state")?;
    let state = conversation_state(&id, &state)?;
    let rank: i64 = handoff_column(row, "priority", &id)?;
    let priority = priority_from_rank(rank).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "conversations.priority of {id}: unknown rank {rank}"
        ))
    })?;
    let reasons: String = handoff_column(row, "handoff_reasons", &id)?;
    let reasons = parse_string_list(&reasons, || {
        format!("conversations.handoff_reasons of {id}")
    })?;
    let frustration: f64 = handoff_column(row, "frustration", &id)?;
    let at_head: i64 = column(row, "conversations", "at_head")?;
    Ok(HandoffRecord {
        state,
        skill: handoff_column(row, "skill", &id)?,
        priority,
        reasons,
        // Written from an f32, so narrowing back loses nothing.
        frustration: frustration as f32,
        queued_at: handoff_column(row, "queued_at", &id)?,
        at_head: at_head != 0,
        agent_id: column(row, "conversations", "agent_id")?,
        offer_expires_at: column(row, "conversations", "offer_expires_at")?,
        assigned_at: column(row, "conversations", "assigned_at")?,
        first_response_at: column(row, "conversations", "first_response_at")?,
        waiting_since: column(row, "conversations", "waiting_since")?,
        reassignments: column(row, "conversations", "reassignments")?,
        contact_email: column(row, "conversations", "contact_email")?,
        contact_note: column(row, "conversations", "contact_note")?,
        intent: column(row, "conversations", "handoff_intent")?,
        preview: column::<Option<String>>(row, "conversations", "handoff_preview")?
            .unwrap_or_default(),
        conversation_id: id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_ranks_round_trip_and_sort_by_urgency() {
        let priorities = [
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Urgent,
        ];
        for priority in priorities {
            assert_eq!(priority_from_rank(priority_rank(priority)), Some(priority));
        }
        let ranks: Vec<i64> = priorities.iter().map(|p| priority_rank(*p)).collect();
        let mut sorted = ranks.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(ranks, sorted, "ranks follow the enum's order of urgency");
        assert_eq!(priority_from_rank(4), None);
        assert_eq!(priority_from_rank(-1), None);
    }
}
