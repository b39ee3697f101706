-- A webhook delivery keeps its body until deft has acted on it, so that a delivery answered
-- just before deft stopped is acted on at the next start rather than lost.
ALTER TABLE github_deliveries ADD COLUMN payload TEXT;
ALTER TABLE github_deliveries ADD COLUMN processed_at BIGINT;
