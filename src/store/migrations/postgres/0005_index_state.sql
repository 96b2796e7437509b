-- What the vector index was built with, so a change (another encoder model) is noticed at start-up
-- and the knowledge base re-embedded, rather than queries with new embeddings searching old ones.
CREATE TABLE index_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
