-- Several Baton instances on one database (src/cluster). SQLite serves one instance, so its
-- 0004 adds nothing.

-- The transaction that wrote each event. The webhook worker reads only events whose writing
-- transactions have all ended (`tx < pg_snapshot_xmin(pg_current_snapshot())`): an identity
-- value is taken at insert, not at commit, so without this a cursor could pass event N+1 while
-- event N was still being committed, and skip N for ever.
ALTER TABLE events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();

-- Each running instance, and when it last said it was alive.
CREATE TABLE instances (
    id            TEXT    NOT NULL PRIMARY KEY,
    started_at    BIGINT  NOT NULL,
    heartbeat_at  BIGINT  NOT NULL
);

-- How many sockets each agent has to each instance. An agent is connected while a row with
-- connections > 0 belongs to an instance whose heartbeat is fresh.
CREATE TABLE agent_presence (
    instance_id  TEXT    NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    agent_id     TEXT    NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    connections  BIGINT  NOT NULL,
    changed_at   BIGINT  NOT NULL,
    PRIMARY KEY (instance_id, agent_id)
);

-- Hub frames too large for a NOTIFY payload (8000 bytes): the notification carries the row id.
-- Rows older than a minute are deleted by the leader.
CREATE TABLE hub_spill (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload     TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);
