//! [`HandoffStore`] for [`SqlStore`]: agents and their tokens, the queue, offers, assignments and
//! webhook cursors, on the same connections, SQL subset and write discipline as the rest of the
//! store (a child module of `sql.rs`, so it shares its private helpers).
//!
//! Every change of who holds a conversation is one write transaction that
//! 1. updates the conversation row with its precondition in the `WHERE` clause ("still queued",
//!    "held by this agent"). On PostgreSQL the update locks the row; a concurrent change waits for
//!    it and then re-checks its own precondition against the committed row, so two claims of one
//!    conversation cannot both match. On SQLite writers run one at a time anyway.
//! 2. moves the agents' `active` counters, taking capacity with `active < capacity` in the
//!    `WHERE` clause (the same re-check makes concurrent claims on one agent safe), and
//! 3. appends the event,
//!
//! and is rolled back (the method returns false) as soon as a precondition matches no row.
//! Locks are always taken conversation row first, then agent rows in ascending id order, so two
//! of these transactions can never wait on each other in a cycle.

use async_trait::async_trait;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

use super::rows::{agent_from_row, handoff_from_row, priority_rank, string_list_json};
use super::{is_foreign_key_violation, now_millis, touch_conversation, DatabaseContext};
use super::{SqlStore, StoreError};
use crate::store::{
    AgentRecord, AgentStatus, AgentUpdate, ConversationState, EventDraft, HandoffRecord,
    HandoffStore, MessageRecord, Millis, NewAgent, NewMessage, QueueRequest, Release, Role,
};

/// Column lists shared by the queries that build records (see `message_columns!` in `sql.rs`).
macro_rules! agent_columns {
    () => {
        "id, name, display_name, password_hash, skills, capacity, status, active, created_at, \
         updated_at"
    };
}
macro_rules! handoff_columns {
    () => {
        "id, state, skill, priority, handoff_reasons, frustration, queued_at, at_head, agent_id, \
         offer_expires_at, assigned_at, first_response_at, waiting_since, reassignments, \
         contact_email, contact_note, handoff_intent, handoff_preview"
    };
}
/// Queue order (see `HandoffStore::list_handoffs`); the id last so that equal entries always come
/// in the same order.
macro_rules! queue_order {
    () => {
        " ORDER BY at_head DESC, priority DESC, frustration DESC, queued_at, id"
    };
}
/// Starts a handoff: the queue columns of a fresh entry, with everything a previous handoff left
/// (agent, offer, response times, reassignments, contact details) cleared. Parameters: `$1` the
/// conversation, `$2` now, `$3` skill, `$4` priority rank, `$5` reasons (JSON), `$6` frustration,
/// `$7` the new state; `$8`..`$10` are the human-owned states, which a handoff never overwrites;
/// `$11` the intent and `$12` the preview the queue shows.
macro_rules! start_handoff_statement {
    () => {
        "UPDATE conversations SET state = $7, skill = $3, priority = $4, handoff_reasons = $5, \
         frustration = $6, queued_at = $2, at_head = 0, agent_id = NULL, offer_expires_at = NULL, \
         assigned_at = NULL, first_response_at = NULL, waiting_since = NULL, reassignments = 0, \
         contact_email = NULL, contact_note = NULL, handoff_intent = $11, handoff_preview = $12, \
         updated_at = $2 WHERE id = $1 AND state NOT IN ($8, $9, $10)"
    };
}
/// How `release` and `close_queued` rewrite the conversation (see [`ReleaseWrite`]). Parameters:
/// `$1` the conversation, `$2` now, `$3` the new state, `$4` at_head, `$5` reassignments to add,
/// `$6` the new skill (NULL keeps it), `$7` the new queued_at (NULL keeps it), `$8` 1 to clear
/// waiting_since. Each caller appends its precondition from `$9` on.
macro_rules! release_statement {
    () => {
        "UPDATE conversations SET state = $3, agent_id = NULL, offer_expires_at = NULL, \
         assigned_at = NULL, at_head = $4, reassignments = reassignments + $5, \
         skill = COALESCE($6, skill), queued_at = COALESCE($7, queued_at), \
         waiting_since = CASE WHEN $8 = 1 THEN NULL ELSE waiting_since END, updated_at = $2 "
    };
}

/// Write the queue columns of a new handoff in `state` (normally `Queued`), unless humans already
/// own the conversation. True when it was written.
async fn start_handoff(
    connection: &mut AnyConnection,
    conversation_id: &str,
    state: ConversationState,
    request: &QueueRequest,
    now: Millis,
) -> Result<bool, StoreError> {
    let started = sqlx::query(start_handoff_statement!())
        .bind(conversation_id)
        .bind(now)
        .bind(request.skill.as_str())
        .bind(priority_rank(request.priority))
        .bind(string_list_json(&request.reasons))
        .bind(f64::from(request.frustration))
        .bind(state.as_str())
        .bind(ConversationState::Queued.as_str())
        .bind(ConversationState::Offered.as_str())
        .bind(ConversationState::Assigned.as_str())
        .bind(request.intent.as_deref())
        .bind(request.preview.as_str())
        .execute(connection)
        .await
        .context("queueing a conversation")?;
    Ok(started.rows_affected() > 0)
}

/// A turn that queues nothing: the conversation's state becomes the turn's unless humans own it,
/// and then its customer is waiting unless an agent wrote after the message. Binds: conversation
/// id, the turn's state, the three human-owned states (queued, offered, assigned), now, the
/// customer message id, the agent role. Also run by the write batch (`write_batch.rs`).
pub(super) const TURN_STATE_UNLESS_HUMAN_OWNED: &str = "UPDATE conversations SET updated_at = $6, \
     state = CASE WHEN state IN ($3, $4, $5) THEN state ELSE $2 END, \
     waiting_since = CASE \
         WHEN state NOT IN ($3, $4, $5) THEN waiting_since \
         WHEN EXISTS (SELECT 1 FROM messages WHERE conversation_id = $1 \
                      AND id > $7 AND role = $8) THEN waiting_since \
         ELSE COALESCE(waiting_since, $6) END \
     WHERE id = $1";

/// The state a finished customer turn leaves its conversation in, and for a handoff its place in
/// the queue. Its first statement bumps `updated_at` and so locks the conversation row (what
/// `touch_conversation` does elsewhere; for a turn without a handoff it is the same statement as
/// the state change, one round trip instead of two). Fails with `ConversationNotFound` when the
/// conversation does not exist.
///
/// A turn never takes a conversation away from the humans: the engine decides a turn on the
/// state it read before the (slow) understanding step, and meanwhile an agent may have claimed,
/// accepted or let go of the conversation. Overwriting that with the turn's stale state would
/// leave an agent holding a "queued" conversation (and its capacity) or a conversation
/// "assigned" to nobody. A silent turn's new state is the state it read, so keeping the current
/// one is exactly its intent; a bot turn racing an `enqueue` loses to the humans.
///
/// The customer who wrote is then waiting for a person, unless a person has written since their
/// message: the agent sees the message as soon as it is stored, before this completion, and may
/// already have answered (and cleared `waiting_since`).
pub(super) async fn apply_turn_state(
    connection: &mut AnyConnection,
    conversation_id: &str,
    customer_message_id: i64,
    new_state: ConversationState,
    enqueue: Option<&QueueRequest>,
    now: Millis,
) -> Result<(), StoreError> {
    match enqueue {
        Some(request) => {
            super::touch_conversation(connection, conversation_id, now).await?;
            start_handoff(connection, conversation_id, new_state, request, now).await?;
        }
        None => {
            // Humans own it: the state stays, and the customer who just wrote is now waiting
            // for an agent reply, unless an agent wrote after their message (in the same
            // transaction, so a silent turn is one commit). Otherwise the turn's state applies.
            let changed = sqlx::query(TURN_STATE_UNLESS_HUMAN_OWNED)
                .bind(conversation_id)
                .bind(new_state.as_str())
                .bind(ConversationState::Queued.as_str())
                .bind(ConversationState::Offered.as_str())
                .bind(ConversationState::Assigned.as_str())
                .bind(now)
                .bind(customer_message_id)
                .bind(Role::Agent.as_str())
                .execute(connection)
                .await
                .context("changing a conversation's state")?;
            if changed.rows_affected() == 0 {
                return Err(StoreError::ConversationNotFound(
                    conversation_id.to_string(),
                ));
            }
        }
    }
    Ok(())
}

async fn insert_event(
    connection: &mut AnyConnection,
    conversation_id: &str,
    event: &EventDraft,
    now: Millis,
    context: &'static str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (conversation_id, kind, payload, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(conversation_id)
    .bind(event.kind.as_str())
    .bind(event.payload.to_string())
    .bind(now)
    .execute(connection)
    .await
    .context(context)?;
    Ok(())
}

/// After a conditional update of a conversation matched nothing: false when the conversation
/// exists (its precondition did not hold), `ConversationNotFound` when it does not.
async fn refused(
    connection: &mut AnyConnection,
    conversation_id: &str,
    context: &'static str,
) -> Result<bool, StoreError> {
    let found: Option<String> = sqlx::query_scalar("SELECT id FROM conversations WHERE id = $1")
        .bind(conversation_id)
        .fetch_optional(connection)
        .await
        .context(context)?;
    match found {
        Some(_) => Ok(false),
        None => Err(StoreError::ConversationNotFound(
            conversation_id.to_string(),
        )),
    }
}

pub(super) const STORING_AN_AGENT_REPLY: &str = "storing an agent reply";

/// An agent's message for [`HandoffStore::insert_agent_reply`].
#[derive(Debug)]
pub(super) struct AgentReply {
    pub conversation_id: String,
    pub agent_id: String,
    pub message: NewMessage,
    pub now: Millis,
}

/// The agent's reply is recorded on the conversation if that agent holds it assigned. Binds:
/// conversation id, now, agent id, the assigned state. Also run by the write batch.
pub(super) const RECORD_AGENT_REPLY: &str =
    "UPDATE conversations SET first_response_at = COALESCE(first_response_at, $2), \
     waiting_since = NULL, updated_at = $2 WHERE id = $1 AND agent_id = $3 AND state = $4";

/// Store `reply` inside the caller's write transaction if its agent holds the conversation:
/// `None`, with nothing written, when it does not.
pub(super) async fn write_agent_reply(
    connection: &mut AnyConnection,
    reply: &AgentReply,
) -> Result<Option<MessageRecord>, StoreError> {
    // The conversation row first, as everywhere; it locks the row, so the holder checked
    // here is the holder when the message commits.
    let recorded = sqlx::query(RECORD_AGENT_REPLY)
        .bind(reply.conversation_id.as_str())
        .bind(reply.now)
        .bind(reply.agent_id.as_str())
        .bind(ConversationState::Assigned.as_str())
        .execute(&mut *connection)
        .await
        .context(STORING_AN_AGENT_REPLY)?;
    if recorded.rows_affected() == 0 {
        refused(connection, &reply.conversation_id, STORING_AN_AGENT_REPLY).await?;
        return Ok(None);
    }
    let stored = super::insert_message_row(
        connection,
        &reply.conversation_id,
        &reply.message,
        reply.now,
    )
    .await?;
    Ok(Some(stored))
}

/// One more conversation for an agent, if below capacity. False when full, `AgentNotFound` when
/// there is no such agent.
async fn take_capacity(
    connection: &mut AnyConnection,
    agent_id: &str,
    context: &'static str,
) -> Result<bool, StoreError> {
    let taken =
        sqlx::query("UPDATE agents SET active = active + 1 WHERE id = $1 AND active < capacity")
            .bind(agent_id)
            .execute(&mut *connection)
            .await
            .context(context)?;
    if taken.rows_affected() > 0 {
        return Ok(true);
    }
    let found: Option<String> = sqlx::query_scalar("SELECT id FROM agents WHERE id = $1")
        .bind(agent_id)
        .fetch_optional(connection)
        .await
        .context(context)?;
    match found {
        Some(_) => Ok(false),
        None => Err(StoreError::AgentNotFound(agent_id.to_string())),
    }
}

/// One conversation fewer for an agent. Never below zero, so that a counter that is off (a row
/// edited by hand) heals instead of granting capacity beyond the limit.
async fn free_capacity(
    connection: &mut AnyConnection,
    agent_id: &str,
    context: &'static str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE agents SET active = CASE WHEN active > 0 THEN active - 1 ELSE 0 END WHERE id = $1",
    )
    .bind(agent_id)
    .execute(connection)
    .await
    .context(context)?;
    Ok(())
}

/// What a [`Release`] writes (the parameters of `release_statement!`).
struct ReleaseWrite<'a> {
    state: ConversationState,
    at_head: i64,
    added_reassignments: i64,
    skill: Option<&'a str>,
    queued_at: Option<Millis>,
    clear_waiting: i64,
}

impl<'a> ReleaseWrite<'a> {
    fn new(to: &'a Release, now: Millis) -> Self {
        match to {
            // Back in the queue the customer is still waiting, so `waiting_since` stays; the wait
            // in the queue counts from now.
            Release::Requeue { at_head, skill } => ReleaseWrite {
                state: ConversationState::Queued,
                at_head: i64::from(*at_head),
                added_reassignments: i64::from(*at_head),
                skill: skill.as_deref(),
                queued_at: Some(now),
                clear_waiting: 0,
            },
            Release::Resolve | Release::HandBack => ReleaseWrite {
                state: if matches!(to, Release::Resolve) {
                    ConversationState::Resolved
                } else {
                    ConversationState::Bot
                },
                at_head: 0,
                added_reassignments: 0,
                skill: None,
                queued_at: None,
                clear_waiting: 1,
            },
        }
    }

    fn bind<'q>(
        &self,
        query: Query<'q, Any, AnyArguments<'q>>,
        conversation_id: &'q str,
        now: Millis,
    ) -> Query<'q, Any, AnyArguments<'q>>
    where
        'a: 'q,
    {
        query
            .bind(conversation_id)
            .bind(now)
            .bind(self.state.as_str())
            .bind(self.at_head)
            .bind(self.added_reassignments)
            .bind(self.skill)
            .bind(self.queued_at)
            .bind(self.clear_waiting)
    }
}

/// A conversation changes hands: a new holder keeps the customer's wait (if any) but restarts
/// it, so an agent's reply deadline counts from when they got the conversation, not from when the
/// customer started waiting in the queue or with the previous agent.
macro_rules! restart_wait {
    ($now:literal) => {
        concat!(
            "waiting_since = CASE WHEN waiting_since IS NULL THEN NULL ELSE ",
            $now,
            " END"
        )
    };
}

#[async_trait]
impl HandoffStore for SqlStore {
    async fn create_agent(&self, agent: &NewAgent) -> Result<AgentRecord, StoreError> {
        const CONTEXT: &str = "creating an agent";
        let now = now_millis();
        let mut write = self.begin_write(CONTEXT).await?;
        // ON CONFLICT rather than a look-up first: on PostgreSQL a concurrent insert of the same
        // name is waited for and then reported here as a conflict, not as a database error.
        let row = sqlx::query(concat!(
            "INSERT INTO agents (id, name, display_name, password_hash, skills, capacity, status, \
             active, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8) \
             ON CONFLICT (name) DO NOTHING RETURNING ",
            agent_columns!()
        ))
        .bind(agent.id.as_str())
        .bind(agent.name.as_str())
        .bind(agent.display_name.as_str())
        .bind(agent.password_hash.as_deref())
        .bind(string_list_json(&agent.skills))
        .bind(agent.capacity)
        // Signed off until they connect.
        .bind(AgentStatus::Offline.as_str())
        .bind(now)
        .fetch_optional(write.connection())
        .await
        .context(CONTEXT)?;
        let Some(row) = row else {
            return Err(StoreError::AgentExists(agent.name.clone()));
        };
        let created = agent_from_row(&row)?;
        write.commit(CONTEXT).await?;
        Ok(created)
    }

    async fn get_agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut self.read().await?)
        .await
        .context("reading an agent")?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn find_agent_by_name(&self, name: &str) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&mut self.read().await?)
        .await
        .context("finding an agent by name")?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents ORDER BY name"
        ))
        .fetch_all(&mut self.read().await?)
        .await
        .context("listing agents")?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn update_agent(
        &self,
        id: &str,
        update: &AgentUpdate,
    ) -> Result<AgentRecord, StoreError> {
        const CONTEXT: &str = "updating an agent";
        let mut write = self.begin_write(CONTEXT).await?;
        // A NULL parameter keeps the column: one statement shape for every combination of fields.
        let row = sqlx::query(concat!(
            "UPDATE agents SET display_name = COALESCE($2, display_name), \
             password_hash = COALESCE($3, password_hash), skills = COALESCE($4, skills), \
             capacity = COALESCE($5, capacity), status = COALESCE($6, status), updated_at = $7 \
             WHERE id = $1 RETURNING ",
            agent_columns!()
        ))
        .bind(id)
        .bind(update.display_name.as_deref())
        .bind(update.password_hash.as_deref())
        .bind(update.skills.as_deref().map(string_list_json))
        .bind(update.capacity)
        .bind(update.status.map(AgentStatus::as_str))
        .bind(now_millis())
        .fetch_optional(write.connection())
        .await
        .context(CONTEXT)?;
        let Some(row) = row else {
            return Err(StoreError::AgentNotFound(id.to_string()));
        };
        let updated = agent_from_row(&row)?;
        write.commit(CONTEXT).await?;
        Ok(updated)
    }

    async fn insert_agent_token(
        &self,
        agent_id: &str,
        token_hash: &str,
        now: Millis,
        expires_at: Millis,
    ) -> Result<(), StoreError> {
        const CONTEXT: &str = "storing an agent token";
        let mut write = self.begin_write(CONTEXT).await?;
        sqlx::query("DELETE FROM agent_tokens WHERE agent_id = $1 AND expires_at <= $2")
            .bind(agent_id)
            .bind(now)
            .execute(write.connection())
            .await
            .context("deleting expired agent tokens")?;
        let inserted = sqlx::query(
            "INSERT INTO agent_tokens (token_hash, agent_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(agent_id)
        .bind(now)
        .bind(expires_at)
        .execute(write.connection())
        .await;
        match inserted {
            Err(error) if is_foreign_key_violation(&error) => {
                return Err(StoreError::AgentNotFound(agent_id.to_string()));
            }
            inserted => inserted.context(CONTEXT)?,
        };
        write.commit(CONTEXT).await
    }

    async fn agent_by_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE id = \
             (SELECT agent_id FROM agent_tokens WHERE token_hash = $1 AND expires_at > $2)"
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut self.read().await?)
        .await
        .context("reading an agent by token")?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn revoke_agent_token(&self, token_hash: &str) -> Result<(), StoreError> {
        const CONTEXT: &str = "revoking an agent token";
        let mut write = self.begin_write(CONTEXT).await?;
        sqlx::query("DELETE FROM agent_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(write.connection())
            .await
            .context(CONTEXT)?;
        write.commit(CONTEXT).await
    }

    async fn get_handoff(
        &self,
        conversation_id: &str,
    ) -> Result<Option<HandoffRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            handoff_columns!(),
            " FROM conversations WHERE id = $1 AND skill IS NOT NULL"
        ))
        .bind(conversation_id)
        .fetch_optional(&mut self.read().await?)
        .await
        .context("reading a handoff")?;
        row.as_ref().map(handoff_from_row).transpose()
    }

    async fn list_handoffs(
        &self,
        states: &[ConversationState],
    ) -> Result<Vec<HandoffRecord>, StoreError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (1..=states.len())
            .map(|position| format!("${position}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            concat!(
                "SELECT ",
                handoff_columns!(),
                " FROM conversations WHERE skill IS NOT NULL AND state IN ({})",
                queue_order!()
            ),
            placeholders
        );
        let mut query = sqlx::query(&sql);
        for state in states {
            query = query.bind(state.as_str());
        }
        let rows = query
            .fetch_all(&mut self.read().await?)
            .await
            .context("listing handoffs")?;
        rows.iter().map(handoff_from_row).collect()
    }

    async fn agent_handoffs(&self, agent_id: &str) -> Result<Vec<HandoffRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            handoff_columns!(),
            " FROM conversations WHERE agent_id = $1 AND state IN ($2, $3) \
             AND skill IS NOT NULL ORDER BY assigned_at, id"
        ))
        .bind(agent_id)
        .bind(ConversationState::Offered.as_str())
        .bind(ConversationState::Assigned.as_str())
        .fetch_all(&mut self.read().await?)
        .await
        .context("listing an agent's handoffs")?;
        rows.iter().map(handoff_from_row).collect()
    }

    async fn enqueue(
        &self,
        conversation_id: &str,
        request: &QueueRequest,
        now: Millis,
        event: &EventDraft,
    ) -> Result<bool, StoreError> {
        const CONTEXT: &str = "queueing a conversation";
        let mut write = self.begin_write(CONTEXT).await?;
        if !start_handoff(
            write.connection(),
            conversation_id,
            ConversationState::Queued,
            request,
            now,
        )
        .await?
        {
            return refused(write.connection(), conversation_id, CONTEXT).await;
        }
        insert_event(write.connection(), conversation_id, event, now, CONTEXT).await?;
        write.commit(CONTEXT).await?;
        Ok(true)
    }

    async fn assign(
        &self,
        conversation_id: &str,
        agent_id: &str,
        offer_expires_at: Option<Millis>,
        now: Millis,
        event: &EventDraft,
    ) -> Result<bool, StoreError> {
        const CONTEXT: &str = "assigning a conversation";
        let state = match offer_expires_at {
            Some(_) => ConversationState::Offered,
            None => ConversationState::Assigned,
        };
        let mut write = self.begin_write(CONTEXT).await?;
        // `assigned_at` is when the agent got it, offered or not, which orders `agent_handoffs`;
        // accepting an offer restarts it.
        let claimed = sqlx::query(concat!(
            "UPDATE conversations SET state = $2, agent_id = $3, offer_expires_at = $4, \
             assigned_at = $5, ",
            restart_wait!("$5"),
            ", updated_at = $5 WHERE id = $1 AND state = $6 AND agent_id IS NULL"
        ))
        .bind(conversation_id)
        .bind(state.as_str())
        .bind(agent_id)
        .bind(offer_expires_at)
        .bind(now)
        .bind(ConversationState::Queued.as_str())
        .execute(write.connection())
        .await
        .context(CONTEXT)?;
        if claimed.rows_affected() == 0 {
            return refused(write.connection(), conversation_id, CONTEXT).await;
        }
        if !take_capacity(write.connection(), agent_id, CONTEXT).await? {
            // Dropping `write` rolls back the claim above.
            return Ok(false);
        }
        insert_event(write.connection(), conversation_id, event, now, CONTEXT).await?;
        write.commit(CONTEXT).await?;
        Ok(true)
    }

    async fn accept_offer(
        &self,
        conversation_id: &str,
        agent_id: &str,
        now: Millis,
        event: &EventDraft,
    ) -> Result<bool, StoreError> {
        const CONTEXT: &str = "accepting an offer";
        let mut write = self.begin_write(CONTEXT).await?;
        // The offer already counts against the agent's capacity, so only the state changes.
        let accepted = sqlx::query(concat!(
            "UPDATE conversations SET state = $2, offer_expires_at = NULL, assigned_at = $4, ",
            restart_wait!("$4"),
            ", updated_at = $4 WHERE id = $1 AND state = $5 AND agent_id = $3"
        ))
        .bind(conversation_id)
        .bind(ConversationState::Assigned.as_str())
        .bind(agent_id)
        .bind(now)
        .bind(ConversationState::Offered.as_str())
        .execute(write.connection())
        .await
        .context(CONTEXT)?;
        if accepted.rows_affected() == 0 {
            return refused(write.connection(), conversation_id, CONTEXT).await;
        }
        insert_event(write.connection(), conversation_id, event, now, CONTEXT).await?;
        write.commit(CONTEXT).await?;
        Ok(true)
    }

    async fn transfer_to_agent(
        &self,
        conversation_id: &str,
        from_agent: &str,
        to_agent: &str,
        now: Millis,
        event: &EventDraft,
    ) -> Result<bool, StoreError> {
        const CONTEXT: &str = "transferring a conversation";
        let mut write = self.begin_write(CONTEXT).await?;
        let moved = sqlx::query(concat!(
            "UPDATE conversations SET state = $2, agent_id = $4, offer_expires_at = NULL, \
             assigned_at = $5, ",
            restart_wait!("$5"),
            ", updated_at = $5 WHERE id = $1 AND agent_id = $3 AND state IN ($6, $2)"
        ))
        .bind(conversation_id)
        .bind(ConversationState::Assigned.as_str())
        .bind(from_agent)
        .bind(to_agent)
        .bind(now)
        .bind(ConversationState::Offered.as_str())
        .execute(write.connection())
        .await
        .context(CONTEXT)?;
        if moved.rows_affected() == 0 {
            return refused(write.connection(), conversation_id, CONTEXT).await;
        }
        // To oneself the unit of capacity stays where it is. Otherwise the two agent rows are
        // locked in id order: two opposite transfers between the same agents would otherwise
        // each hold one row and wait for the other's.
        if from_agent != to_agent {
            let (first, second) = if from_agent < to_agent {
                (from_agent, to_agent)
            } else {
                (to_agent, from_agent)
            };
            for agent in [first, second] {
                if agent == to_agent {
                    if !take_capacity(write.connection(), agent, CONTEXT).await? {
                        return Ok(false);
                    }
                } else {
                    free_capacity(write.connection(), agent, CONTEXT).await?;
                }
            }
        }
        insert_event(write.connection(), conversation_id, event, now, CONTEXT).await?;
        write.commit(CONTEXT).await?;
        Ok(true)
    }

    async fn release(
        &self,
        conversation_id: &str,
        agent_id: &str,
        to: &Release,
        now: Millis,
        event: &EventDraft,
    ) -> Result<bool, StoreError> {
        const CONTEXT: &str = "releasing a conversation";
        let write_release = ReleaseWrite::new(to, now);
        let mut write = self.begin_write(CONTEXT).await?;
        let query = sqlx::query(concat!(
            release_statement!(),
            "WHERE id = $1 AND agent_id = $9 AND state IN ($10, $11)"
        ));
        let released = write_release
            .bind(query, conversation_id, now)
            .bind(agent_id)
            .bind(ConversationState::Offered.as_str())
            .bind(ConversationState::Assigned.as_str())
            .execute(write.connection())
            .await
            .context(CONTEXT)?;
        if released.rows_affected() == 0 {
            return refused(write.connection(), conversation_id, CONTEXT).await;
        }
        free_capacity(write.connection(), agent_id, CONTEXT).await?;
        insert_event(write.connection(), conversation_id, event, now, CONTEXT).await?;
        write.commit(CONTEXT).await?;
        Ok(true)
    }

    async fn close_queued(
        &self,
        conversation_id: &str,
        to: &Release,
        now: Millis,
        event: &EventDraft,
    ) -> Result<bool, StoreError> {
        const CONTEXT: &str = "closing a queued conversation";
        let write_release = ReleaseWrite::new(to, now);
        let mut write = self.begin_write(CONTEXT).await?;
        let query = sqlx::query(concat!(
            release_statement!(),
            "WHERE id = $1 AND agent_id IS NULL AND state = $9"
        ));
        let closed = write_release
            .bind(query, conversation_id, now)
            .bind(ConversationState::Queued.as_str())
            .execute(write.connection())
            .await
            .context(CONTEXT)?;
        if closed.rows_affected() == 0 {
            return refused(write.connection(), conversation_id, CONTEXT).await;
        }
        insert_event(write.connection(), conversation_id, event, now, CONTEXT).await?;
        write.commit(CONTEXT).await?;
        Ok(true)
    }

    async fn record_agent_reply(
        &self,
        conversation_id: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        const CONTEXT: &str = "recording an agent reply";
        let mut write = self.begin_write(CONTEXT).await?;
        let recorded = sqlx::query(
            "UPDATE conversations SET first_response_at = COALESCE(first_response_at, $2), \
             waiting_since = NULL, updated_at = $2 WHERE id = $1",
        )
        .bind(conversation_id)
        .bind(now)
        .execute(write.connection())
        .await
        .context(CONTEXT)?;
        if recorded.rows_affected() == 0 {
            return Err(StoreError::ConversationNotFound(
                conversation_id.to_string(),
            ));
        }
        write.commit(CONTEXT).await
    }

    async fn insert_agent_reply(
        &self,
        conversation_id: &str,
        agent_id: &str,
        message: &NewMessage,
        now: Millis,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let reply = AgentReply {
            conversation_id: conversation_id.to_string(),
            agent_id: agent_id.to_string(),
            message: message.clone(),
            now,
        };
        match &self.write_batcher {
            // SQLite: replies written while the writer is busy commit together (`write_batch.rs`).
            Some(batcher) => batcher.agent_reply(reply).await,
            None => {
                let mut write = self.begin_write(STORING_AN_AGENT_REPLY).await?;
                let stored = write_agent_reply(write.connection(), &reply).await?;
                // A refused reply wrote nothing; committing that is as good as rolling back.
                write.commit(STORING_AN_AGENT_REPLY).await?;
                Ok(stored)
            }
        }
    }

    async fn record_customer_waiting(
        &self,
        conversation_id: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        const CONTEXT: &str = "recording a waiting customer";
        let mut write = self.begin_write(CONTEXT).await?;
        // Only while humans own it: should the conversation have gone back to the bot since the
        // caller looked, nobody is left to wait for, and a stale mark must not linger.
        let recorded = sqlx::query(
            "UPDATE conversations SET waiting_since = COALESCE(waiting_since, $2), updated_at = $2 \
             WHERE id = $1 AND state IN ($3, $4, $5)",
        )
        .bind(conversation_id)
        .bind(now)
        .bind(ConversationState::Queued.as_str())
        .bind(ConversationState::Offered.as_str())
        .bind(ConversationState::Assigned.as_str())
        .execute(write.connection())
        .await
        .context(CONTEXT)?;
        if recorded.rows_affected() == 0 {
            refused(write.connection(), conversation_id, CONTEXT).await?;
            return Ok(());
        }
        write.commit(CONTEXT).await
    }

    async fn set_contact(
        &self,
        conversation_id: &str,
        email: &str,
        note: &str,
        event: &EventDraft,
    ) -> Result<(), StoreError> {
        const CONTEXT: &str = "storing contact details";
        let now = now_millis();
        let mut write = self.begin_write(CONTEXT).await?;
        touch_conversation(write.connection(), conversation_id, now).await?;
        sqlx::query("UPDATE conversations SET contact_email = $2, contact_note = $3 WHERE id = $1")
            .bind(conversation_id)
            .bind(email)
            .bind(note)
            .execute(write.connection())
            .await
            .context(CONTEXT)?;
        insert_event(write.connection(), conversation_id, event, now, CONTEXT).await?;
        write.commit(CONTEXT).await
    }

    async fn webhook_cursor(&self, target: &str) -> Result<i64, StoreError> {
        let cursor: Option<i64> =
            sqlx::query_scalar("SELECT last_event_id FROM webhook_cursors WHERE target = $1")
                .bind(target)
                .fetch_optional(&mut self.read().await?)
                .await
                .context("reading a webhook cursor")?;
        // A new target starts before the first event (event ids start at 1).
        Ok(cursor.unwrap_or(0))
    }

    async fn set_webhook_cursor(&self, target: &str, event_id: i64) -> Result<(), StoreError> {
        const CONTEXT: &str = "storing a webhook cursor";
        let mut write = self.begin_write(CONTEXT).await?;
        sqlx::query(
            "INSERT INTO webhook_cursors (target, last_event_id) VALUES ($1, $2) \
             ON CONFLICT (target) DO UPDATE SET last_event_id = excluded.last_event_id",
        )
        .bind(target)
        .bind(event_id)
        .execute(write.connection())
        .await
        .context(CONTEXT)?;
        write.commit(CONTEXT).await
    }
}
