-- Baton's initial schema (PostgreSQL dialect). Keep it column-for-column identical to
-- ../sqlite/0001_initial_schema.sql: the store runs the same queries against both.
--
-- Conventions: ids chosen by the application are TEXT; ids the database assigns are 64-bit
-- identity columns (never reused, so message ids work as resume cursors); JSON is stored as TEXT
-- (the portable `Any` driver has no JSON type); timestamps are BIGINT milliseconds since the Unix
-- epoch.

CREATE TABLE conversations (
    id          TEXT    NOT NULL PRIMARY KEY,
    token_hash  TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE messages (
    id                 BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id    TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role               TEXT    NOT NULL,
    text               TEXT    NOT NULL,
    client_message_id  TEXT,
    understanding      TEXT,
    result             TEXT,
    created_at         BIGINT  NOT NULL,
    -- A retried POST carries the same client_message_id; this makes the retry a no-op. NULLs are
    -- distinct, so bot/agent/system messages (which have none) never collide.
    UNIQUE (conversation_id, client_message_id)
);

-- Listing a conversation's messages after a cursor.
CREATE INDEX messages_conversation_id_id ON messages (conversation_id, id);

CREATE TABLE events (
    id               BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id  TEXT    REFERENCES conversations (id) ON DELETE CASCADE,
    kind             TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL
);

-- Listing one conversation's events after a cursor.
CREATE INDEX events_conversation_id_id ON events (conversation_id, id);

CREATE TABLE documents (
    id            TEXT    NOT NULL PRIMARY KEY,
    source        TEXT    NOT NULL UNIQUE,
    title         TEXT    NOT NULL,
    url           TEXT,
    kind          TEXT    NOT NULL,
    content_hash  TEXT    NOT NULL,
    updated_at    BIGINT  NOT NULL
);

-- A chunk's title, source and url are its document's, so they are not repeated here.
CREATE TABLE chunks (
    id            TEXT    NOT NULL PRIMARY KEY,
    document_id   TEXT    NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal       BIGINT  NOT NULL,
    heading_path  TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    question      TEXT,
    content_hash  TEXT    NOT NULL,
    -- Also the index that reads a document's chunks in order and counts them.
    UNIQUE (document_id, ordinal)
);
