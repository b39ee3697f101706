-- GitHub: which deft user each GitHub login is (set by an administrator), and the webhook
-- deliveries already received, so that a delivery GitHub sends again acts once.
CREATE TABLE github_accounts (
    user_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    login TEXT NOT NULL UNIQUE
);

CREATE TABLE github_deliveries (
    id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX github_deliveries_by_time ON github_deliveries (received_at);
