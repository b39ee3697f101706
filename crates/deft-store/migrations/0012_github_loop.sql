-- The GitHub loop: a user's opt-in to deft fixing their pull requests' failing checks by
-- itself, at most `check_fix_rounds` rounds per pull request; the rounds each pull request
-- has had and the commit the last one was for; and the authorizations of the GitHub App
-- people start from the settings page (`state` and the PKCE verifier, kept server-side,
-- bound to the browser session, used once).
ALTER TABLE environments ADD COLUMN fix_failing_checks BIGINT NOT NULL DEFAULT 0;
ALTER TABLE environments ADD COLUMN check_fix_rounds BIGINT NOT NULL DEFAULT 3;
ALTER TABLE pull_requests ADD COLUMN check_fix_rounds BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pull_requests ADD COLUMN check_fix_sha TEXT;
CREATE TABLE github_authorizations (
    state_hash TEXT PRIMARY KEY,
    session_hash TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    verifier TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
