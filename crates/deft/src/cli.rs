//! The command line of SPEC §5. Each command is a thin call into `serve`, `local` (commands that
//! work on the data dir directly) or `client` (commands that talk to a running server).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::env_vars::*;
use crate::{client, doctor, eval, local, run, sandbox_run, serve};

#[derive(Debug, Parser)]
#[command(
    name = "deft",
    version,
    about = "A self-hostable autonomous coding agent"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the data dir and database are, for commands that open them directly.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// The data dir: database, master key, admin token [default: $DEFT_HOME, else ~/.local/share/deft]
    #[arg(long, env = DEFT_HOME, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The database [default: SQLite in the data dir]
    #[arg(long, env = DEFT_DATABASE_URL, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Which model to use, over the environment and the config file (SPEC §4).
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// The model, as PROVIDER/NAME (anthropic, openai, openai-compatible) [default: DEFT_MODEL, then the config file, then the provider keys, then Ollama]
    #[arg(long, value_name = "PROVIDER/NAME")]
    pub model: Option<String>,
    /// The config file [default: DATA_DIR/config.toml when it exists]
    #[arg(long, env = DEFT_CONFIG, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// What a command that runs tasks, or checks that they can run, is given: the data dir and
/// the model.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// How to reach a running server.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The deft server
    #[arg(long, env = DEFT_SERVER, default_value = "http://127.0.0.1:7878", value_name = "URL")]
    pub server: String,
    /// An API token [default: the data dir's admin-token file]
    #[arg(long, env = DEFT_TOKEN, hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Where to find admin-token when no token is given
    #[arg(long, env = DEFT_HOME, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print the server's JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// What `deft serve` is given.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The address to listen on
    #[arg(long, env = DEFT_LISTEN, default_value = "127.0.0.1:7878", value_name = "ADDR", value_parser = listen_address)]
    pub listen: String,
    /// Tasks run at once in this process (0: only serve the API) [default: from the
    /// machine's cores and memory, at least 10]
    #[arg(long, env = DEFT_WORKERS, value_parser = workers::<0>)]
    pub workers: Option<usize>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// What `deft worker` is given.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Tasks run at once in this process [default: from the machine's cores and memory,
    /// at least 10]
    #[arg(long, env = DEFT_WORKERS, value_parser = workers::<1>)]
    pub workers: Option<usize>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// A secret or an environment variable, by its name, on a running server.
#[derive(Debug, Clone, Args)]
pub struct NameArgs {
    pub name: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API, web app, webhooks, scheduler and workers in one process
    Serve(ServeArgs),
    /// Run workers only, against a shared PostgreSQL database
    Worker(WorkerArgs),
    /// Run one task in the foreground, without a server
    Run {
        /// A repository: a local path (repeatable)
        #[arg(long = "repo", required = true)]
        repos: Vec<String>,
        /// Wait for approval after planning (exit 3 with the plan)
        #[arg(long)]
        approve_plan: bool,
        /// What to do
        #[arg(required = true)]
        description: Vec<String>,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Tasks on a running server
    #[command(subcommand)]
    Task(TaskCommand),
    /// Accounts (on the data dir directly)
    #[command(subcommand)]
    User(UserCommand),
    /// API tokens (on the data dir directly)
    #[command(subcommand)]
    Token(TokenCommand),
    /// Secrets for your tasks' sandboxes (write-only: values are never shown)
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Environment variables for your tasks' sandboxes
    #[command(subcommand)]
    Env(EnvCommand),
    /// Network access of your tasks' sandboxes
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Run one command in a fresh sandbox, exactly as a task's would run
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Check everything deft needs and say how to fix what is missing
    Doctor(EngineArgs),
    /// Run a suite of tasks with the configured model, check each result, and report
    Eval(eval::EvalArgs),
}

/// `--workers` (`DEFT_WORKERS`): a whole number of tasks, at least `LEAST`. clap says which
/// flag a bad value was for, not that it came from the variable, so the message names both.
fn workers<const LEAST: usize>(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= LEAST => Ok(n),
        _ => Err(format!(
            "give a whole number of tasks run at once, at least {LEAST}, to `--workers` or {DEFT_WORKERS} (unset, it follows the machine)"
        )),
    }
}

/// `--listen` (`DEFT_LISTEN`): an address and port, checked before the data dir is touched.
/// A host name is let through (`localhost:7878`); whether it resolves is for the bind to say.
fn listen_address(text: &str) -> Result<String, String> {
    let host_and_port = text.parse::<std::net::SocketAddr>().is_ok()
        || text.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok()
        });
    if host_and_port {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "give an address and port, such as 127.0.0.1:7878 or [::]:7878, to `--listen` or {DEFT_LISTEN}"
        ))
    }
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Create a task
    Create {
        /// What the agent should do
        #[arg(required = true)]
        description: Vec<String>,
        /// A repository: its id, name, or a local path (repeatable)
        #[arg(long = "repo", required = true)]
        repos: Vec<String>,
        /// Wait for your approval after planning
        #[arg(long)]
        approve_plan: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List your tasks, newest first
    List {
        /// Only tasks in this state
        #[arg(long)]
        state: Option<String>,
        /// How many
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show one task
    Show {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a task's events
    Logs {
        id: String,
        /// Keep streaming until the task completes, is cancelled, or needs your attention
        #[arg(long, short)]
        follow: bool,
        /// Only events after this number
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a task (final)
    Cancel {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Answer a task's question
    Answer {
        id: String,
        #[arg(required = true)]
        message: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Approve a task's plan
    Approve {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Give feedback on a completed task
    Feedback {
        id: String,
        #[arg(required = true)]
        message: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user
    Create {
        name: String,
        /// Make the user an administrator
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Set a user's password for the web app, read from standard input (one line)
    Passwd {
        name: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Link the user to their GitHub account: that login's labels, `/deft` comments and
    /// reviews then act as this user (an administrator vouches for the link)
    Github {
        name: String,
        /// The GitHub login, as in `octocat`
        login: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Print a one-time link that signs the user in to the web app (to set a password)
    Link {
        name: String,
        /// The web app's address, as the user's browser reaches it
        #[arg(long, default_value = "http://127.0.0.1:7878")]
        server: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; the token is the last line printed
    Create {
        /// Whose token
        #[arg(long, default_value = "admin")]
        user: String,
        /// What the token is for
        #[arg(long, default_value = "cli")]
        label: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret; its value is read from standard input, never from the command line
    Set(NameArgs),
    /// List secret names
    List(ServerArgs),
    /// Delete a secret
    Rm(NameArgs),
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Set an environment variable
    Set {
        name: String,
        value: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List environment variables
    List(ServerArgs),
    /// Remove an environment variable
    Rm(NameArgs),
    /// Set what a repository's tasks run on: auto (its Dockerfile when it has one), host,
    /// dockerfile PATH, or image NAME
    From {
        /// The repository: its id, name or local path
        #[arg(long, value_name = "REPO")]
        repo: String,
        /// auto | host | dockerfile PATH | image NAME
        #[arg(required = true, num_args = 1..=2, value_name = "SETTING")]
        setting: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Build (or find cached) the environment of a local repository alone, with the
    /// builder's output: its Dockerfile's image, or what its tasks use without one
    Build {
        /// The local repository's absolute path, or a registered repository's id (whose
        /// environment setting then applies)
        #[arg(long, value_name = "PATH_OR_ID")]
        repo: String,
        #[command(flatten)]
        engine: EngineArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Set the network level: connections, common, open or custom
    Set {
        level: String,
        /// With `custom`: a host (`api.example.com`) or domain (`.example.com`); repeatable or comma-separated
        #[arg(long = "allow", value_delimiter = ',')]
        allow: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Run CMD in a fresh sandbox, as a task's command would run, and exit with its status
    Run {
        /// The network level [default: the user's setting]
        #[arg(long)]
        network: Option<String>,
        /// With `--network custom`: a host or `.domain` (repeatable or comma-separated)
        #[arg(long = "allow", value_delimiter = ',')]
        allow: Vec<String>,
        /// The directory mounted at /workspace [default: a new empty one]
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// Whose env vars, secrets and network setting to use [default: `admin`'s, or none on
        /// a data dir where no `deft serve` has made it yet]
        #[arg(long)]
        user: Option<String>,
        /// Seconds before the command and all its children are killed
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[command(flatten)]
        data: DataArgs,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(&args).await,
        Command::Worker(args) => serve::worker(&args).await,
        Command::Run {
            repos,
            approve_plan,
            description,
            engine,
        } => {
            let description = description.join(" ");
            run::run(
                &repos,
                approve_plan,
                &description,
                &engine.data,
                &engine.model,
            )
            .await
        }
        Command::Sandbox(command) => sandbox_run::run(command).await,
        Command::Task(command) => client::task(command).await,
        Command::User(UserCommand::Create { name, admin, data }) => {
            local::create_user(&data, &name, admin).await
        }
        Command::User(UserCommand::Passwd { name, data }) => {
            local::set_password(&data, &name).await
        }
        Command::User(UserCommand::Github { name, login, data }) => {
            local::link_github(&data, &name, &login).await
        }
        Command::User(UserCommand::Link { name, server, data }) => {
            local::login_link(&data, &name, &server).await
        }
        Command::Token(TokenCommand::Create { user, label, data }) => {
            local::create_token(&data, &user, &label).await
        }
        Command::Secret(command) => client::secret(command).await,
        Command::Env(EnvCommand::Build { repo, engine }) => {
            crate::env_build::run(&repo, &engine.data, &engine.model).await
        }
        Command::Env(command) => client::env(command).await,
        Command::Network(command) => client::network(command).await,
        Command::Doctor(engine) => doctor::run(&engine.data, &engine.model).await,
        Command::Eval(args) => eval::run(args).await,
    }
}
