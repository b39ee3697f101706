-- One schema for SQLite and PostgreSQL: only TEXT and BIGINT columns, instants as Unix
-- milliseconds, booleans as 0/1 and lists as JSON text, so that the same statements run on both.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    is_admin BIGINT NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    password_hash TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- SHA-256 of the token: tokens are 256 random bits, so a fast hash is enough and a leaked
    -- table yields no usable token.
    token_hash TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE repositories (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    forge TEXT NOT NULL CHECK (forge IN ('local', 'github')),
    location TEXT NOT NULL,
    default_branch TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (user_id, forge, location)
);

CREATE TABLE chats (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    repos TEXT NOT NULL,
    -- At most one task per chat: the UNIQUE constraint is the last word on races.
    task_id TEXT UNIQUE,
    last_seq BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX chats_by_user ON chats (user_id, id);

CREATE TABLE chat_messages (
    chat_id TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    author TEXT NOT NULL,
    message TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (chat_id, seq)
);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state TEXT NOT NULL
        CHECK (state IN ('queued', 'in_progress', 'needs_attention', 'completed', 'cancelled')),
    attention_kind TEXT,
    attention_message TEXT,
    description TEXT NOT NULL,
    repos TEXT NOT NULL,
    chat_id TEXT UNIQUE,
    approve_plan BIGINT NOT NULL DEFAULT 0 CHECK (approve_plan IN (0, 1)),
    plan TEXT,
    -- The sequence number of the task's newest event: bumped in the transaction that writes the
    -- event, so numbers are gap-free and, on PostgreSQL, the row lock orders concurrent writers.
    last_seq BIGINT NOT NULL DEFAULT 0,
    -- When the task last entered `queued`: first in, first out.
    queued_at BIGINT,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CHECK ((state = 'needs_attention') = (attention_kind IS NOT NULL)),
    CHECK ((attention_kind IS NULL) = (attention_message IS NULL))
);
CREATE INDEX tasks_by_user ON tasks (user_id, id);
CREATE INDEX tasks_by_user_state ON tasks (user_id, state, id);
CREATE INDEX tasks_queue ON tasks (state, queued_at, id);

CREATE TABLE events (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE pull_requests (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    repo_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    base TEXT NOT NULL,
    head TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'merged', 'closed')),
    url TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (task_id, repo_id)
);
CREATE INDEX pull_requests_by_user ON pull_requests (user_id, task_id);

-- Usage outlives the task it was spent on (weekly limits count it), so no cascade.
CREATE TABLE usage_records (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    task_id TEXT,
    model TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX usage_by_user_time ON usage_records (user_id, at);

CREATE TABLE environments (
    user_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    network_level TEXT NOT NULL
        CHECK (network_level IN ('connections', 'common', 'open', 'custom')),
    network_allow TEXT NOT NULL,
    env TEXT NOT NULL,
    mcp TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE secrets (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- AES-256-GCM: a fresh 96-bit nonce per write; the user id and the name are authenticated
    -- data, so a sealed value cannot be moved to another user or name.
    nonce TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, name)
);

CREATE TABLE learnings (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    text TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX learnings_by_user ON learnings (user_id, id);
