-- Where a person is told that a task asks, waits for plan approval, failed or completed: an
-- outgoing webhook (its secret sealed like a secret, the user id as associated data) and an
-- e-mail address. Browser notifications are the browser's own setting and are not stored.
CREATE TABLE notification_settings (
    user_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    webhook_url TEXT,
    webhook_format TEXT NOT NULL DEFAULT 'json',
    webhook_nonce TEXT,
    webhook_secret TEXT,
    email TEXT,
    email_enabled BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);

-- The last delivery on each channel of each user, for the settings page to show ("200 at …",
-- or the error): one row per channel, replaced by the next delivery.
CREATE TABLE notification_deliveries (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel TEXT NOT NULL,
    task_id TEXT,
    event TEXT NOT NULL,
    ok BIGINT NOT NULL,
    detail TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (user_id, channel)
);
