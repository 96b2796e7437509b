-- The human side: agents, their login tokens, the queue and assignments, webhook cursors, and
-- messages written by agents and the system. Keep it column-for-column identical to the other
-- dialect's 0002 file.

-- Messages: who wrote an agent message, what a system message announces, and what a client shows
-- with a message (a bot reply's sources and options, an agent's display name).
ALTER TABLE messages ADD COLUMN author_id TEXT;
ALTER TABLE messages ADD COLUMN kind TEXT;
ALTER TABLE messages ADD COLUMN meta TEXT;

-- A conversation's handoff, kept on the conversation: at most one is live at a time.
ALTER TABLE conversations ADD COLUMN skill TEXT;
-- 0 low, 1 normal, 2 high, 3 urgent: sorts the queue.
ALTER TABLE conversations ADD COLUMN priority BIGINT;
ALTER TABLE conversations ADD COLUMN handoff_reasons TEXT;
ALTER TABLE conversations ADD COLUMN frustration DOUBLE PRECISION;
ALTER TABLE conversations ADD COLUMN queued_at BIGINT;
-- 1 when requeued after a lost agent: it goes first within its priority.
ALTER TABLE conversations ADD COLUMN at_head BIGINT NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN agent_id TEXT;
ALTER TABLE conversations ADD COLUMN offer_expires_at BIGINT;
ALTER TABLE conversations ADD COLUMN assigned_at BIGINT;
ALTER TABLE conversations ADD COLUMN first_response_at BIGINT;
ALTER TABLE conversations ADD COLUMN waiting_since BIGINT;
ALTER TABLE conversations ADD COLUMN reassignments BIGINT NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN contact_email TEXT;
ALTER TABLE conversations ADD COLUMN contact_note TEXT;

-- The queue (by state) and each agent's conversations.
CREATE INDEX conversations_state ON conversations (state);
CREATE INDEX conversations_agent_id ON conversations (agent_id);

CREATE TABLE agents (
    id             TEXT    NOT NULL PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    display_name   TEXT    NOT NULL,
    password_hash  TEXT,
    skills         TEXT    NOT NULL,
    capacity       BIGINT  NOT NULL,
    status         TEXT    NOT NULL,
    -- Conversations offered to or assigned to this agent now; never above capacity.
    active         BIGINT  NOT NULL DEFAULT 0,
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL
);

CREATE TABLE agent_tokens (
    token_hash  TEXT    NOT NULL PRIMARY KEY,
    agent_id    TEXT    NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);

CREATE TABLE webhook_cursors (
    target         TEXT    NOT NULL PRIMARY KEY,
    last_event_id  BIGINT  NOT NULL
);
