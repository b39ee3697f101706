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
/// The model, as `PROVIDER/NAME` (read by `deft doctor` until the model layer lands).
pub const DEFT_MODEL: &str = "DEFT_MODEL";
