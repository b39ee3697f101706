//! Every environment variable deft reads, declared once with what it means.

/// The data dir (database, master key, admin token) when `--data-dir` is not given.
pub const DEFT_HOME: &str = "DEFT_HOME";
/// The database URL when `--database-url` is not given: `sqlite:…` or `postgres://…`.
pub const DEFT_DATABASE_URL: &str = "DEFT_DATABASE_URL";
/// The master key sealing secrets at rest, as 64 hex digits; every machine sharing one
/// database needs the same key. Without it, `DATA_DIR/master-key` is used (made on first start).
pub const DEFT_MASTER_KEY: &str = "DEFT_MASTER_KEY";
/// The address `deft serve` listens on when `--listen` is not given.
pub const DEFT_LISTEN: &str = "DEFT_LISTEN";
/// The server the task, secret, env and network commands talk to.
pub const DEFT_SERVER: &str = "DEFT_SERVER";
/// The API token those commands send; without it they read `DATA_DIR/admin-token`.
pub const DEFT_TOKEN: &str = "DEFT_TOKEN";
/// Log filter, in `tracing`'s `EnvFilter` syntax (`info`, `deft_server=debug`).
pub const DEFT_LOG: &str = "DEFT_LOG";
// The model variables (DEFT_MODEL, DEFT_MODEL_BASE_URL, DEFT_MODEL_API_KEY, ANTHROPIC_API_KEY,
// OPENAI_API_KEY) are declared with their resolution order in `deft_llm::config`.
/// The config file when `--config` is not given [default: `DATA_DIR/config.toml`, if present].
pub const DEFT_CONFIG: &str = "DEFT_CONFIG";
/// Where to look for an Ollama server when no model is configured [default: http://127.0.0.1:11434].
pub const DEFT_OLLAMA_URL: &str = "DEFT_OLLAMA_URL";
/// Directories (colon-separated) under which users may register local repositories; overrides
/// `[forge] local_roots`. Unset: only administrators may register local repositories.
pub const DEFT_LOCAL_ROOTS: &str = "DEFT_LOCAL_ROOTS";
/// Reverse proxies (comma-separated addresses or CIDR blocks) whose `X-Forwarded-For` and
/// `X-Forwarded-Proto` are believed; overrides `[server] trusted_proxies`. Unset: none.
pub const DEFT_TRUSTED_PROXIES: &str = "DEFT_TRUSTED_PROXIES";
/// The SMTP server's password for `[smtp] username`; overrides `[smtp] password_file`.
pub const DEFT_SMTP_PASSWORD: &str = "DEFT_SMTP_PASSWORD";
/// Tasks run at once by `deft serve` or `deft worker` when `--workers` is not given (default:
/// from the machine's cores and memory, at least 10).
pub const DEFT_WORKERS: &str = "DEFT_WORKERS";
/// How long a worker's claim on a task lasts without a heartbeat, in milliseconds (default
/// 30000): a worker that dies loses its task to another after this.
pub const DEFT_LEASE_MS: &str = "DEFT_LEASE_MS";
/// How long (ms) a stopping deft lets a running step finish before cutting it short.
pub const DEFT_SHUTDOWN_GRACE_MS: &str = "DEFT_SHUTDOWN_GRACE_MS";
/// How long (ms) one MCP tool call may take before it is cut off (default 120000).
pub const DEFT_MCP_CALL_TIMEOUT_MS: &str = "DEFT_MCP_CALL_TIMEOUT_MS";
/// Sandboxes `deft serve` and `deft worker` keep started ahead of tasks, so that a task's
/// sandbox is ready at once (default 2; 0 for none).
pub const DEFT_SANDBOX_POOL: &str = "DEFT_SANDBOX_POOL";
/// How often (ms) `deft serve` and `deft worker` look for task workspaces to give back
/// (default 60000).
pub const DEFT_WORKSPACE_SWEEP_MS: &str = "DEFT_WORKSPACE_SWEEP_MS";
/// The image builder's Engine API socket (`[environments] builder`), which wins over the file.
pub const DEFT_IMAGE_BUILDER: &str = "DEFT_IMAGE_BUILDER";
/// `[github]` of the config file, each key as a variable (SPEC §5).
pub const DEFT_GITHUB_API_URL: &str = "DEFT_GITHUB_API_URL";
pub const DEFT_GITHUB_APP_ID: &str = "DEFT_GITHUB_APP_ID";
pub const DEFT_GITHUB_PRIVATE_KEY_PATH: &str = "DEFT_GITHUB_PRIVATE_KEY_PATH";
pub const DEFT_GITHUB_WEBHOOK_SECRET: &str = "DEFT_GITHUB_WEBHOOK_SECRET";
pub const DEFT_GITHUB_TOKEN: &str = "DEFT_GITHUB_TOKEN";
pub const DEFT_GITHUB_LABEL: &str = "DEFT_GITHUB_LABEL";
pub const DEFT_GITHUB_CLIENT_ID: &str = "DEFT_GITHUB_CLIENT_ID";
pub const DEFT_GITHUB_CLIENT_SECRET: &str = "DEFT_GITHUB_CLIENT_SECRET";
pub const DEFT_GITHUB_WEB_URL: &str = "DEFT_GITHUB_WEB_URL";
