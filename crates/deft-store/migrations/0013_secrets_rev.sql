-- Each change to a user's secrets counts up: a process that keeps the user's redactor (the
-- secrets opened, to scrub every event) reads this number in the event's own statement and
-- opens the secrets again only when it moved, in whatever process the change was made.
ALTER TABLE users ADD COLUMN secrets_rev BIGINT NOT NULL DEFAULT 0;
