-- The GitHub issue a task was started from, so that its pull request closes the issue and the
-- issue links to the pull request.
CREATE TABLE github_issue_tasks (
    task_id TEXT PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    repo TEXT NOT NULL,
    number BIGINT NOT NULL
);
