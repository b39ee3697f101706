//! Commands that work on the data dir directly, without a server: opening the store, accounts
//! and tokens.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use deft_store::{MasterKey, Store};

use crate::cli::DataArgs;
use crate::env_vars::{DEFT_DATABASE_URL, DEFT_MASTER_KEY};

/// The file `deft serve` writes the first admin token to.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// `--data-dir`, else `$DEFT_HOME` (clap reads both), else `~/.local/share/deft`.
pub fn data_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_owned());
    }
    let home = std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .context(
            "cannot find a data dir: HOME is not set; pass `--data-dir DIR` or set DEFT_HOME",
        )?;
    Ok(PathBuf::from(home).join(".local/share/deft"))
}

/// Creates the data dir, private to its owner, when it does not exist.
fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "cannot create the data dir {}; pass `--data-dir` with a writable directory",
                dir.display()
            )
        })
}

/// Opens (creating when needed) the data dir and its database, with migrations applied.
pub async fn open_store(args: &DataArgs) -> anyhow::Result<(PathBuf, Store)> {
    // Everything deft writes from here on (the database and its journal, keys, tokens) is
    // its owner's alone, even in a data dir that others can read.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let dir = data_dir(args.data_dir.as_deref())?;
    ensure_data_dir(&dir)?;
    let env_key = std::env::var(DEFT_MASTER_KEY).ok();
    let key = MasterKey::load(env_key.as_deref(), &dir).context("cannot load the master key")?;
    let store = match &args.database_url {
        Some(url) => Store::open(url, key).await.map_err(|error| match error {
            deft_store::StoreError::BadUrl { .. } => {
                anyhow::anyhow!(error).context(format!("`--database-url` or {DEFT_DATABASE_URL}"))
            }
            error => error.into(),
        })?,
        None => Store::open_data_dir(&dir, key).await?,
    };
    Ok((dir, store))
}

/// Writes the admin token, readable by its owner only, replacing a stale one.
pub fn write_admin_token(dir: &Path, token: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(ADMIN_TOKEN_FILE);
    match fs_err::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error.into()),
    }
    deft_store::write_private_file(&path, format!("{token}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[allow(clippy::print_stdout, reason = "the command's output")]
pub async fn create_user(args: &DataArgs, name: &str, admin: bool) -> anyhow::Result<ExitCode> {
    let (_, store) = open_store(args).await?;
    let user = store.create_user(name, admin).await?;
    println!(
        "created user {} ({}){}",
        user.name,
        user.id,
        if admin { ", an administrator" } else { "" }
    );
    println!(
        "make a token for it with `deft token create --user {}`",
        user.name
    );
    Ok(ExitCode::SUCCESS)
}

/// `deft user passwd NAME`: the password comes on standard input, never on the command line
/// (where `ps` and shell history would keep it).
#[allow(clippy::print_stdout, reason = "the command's output")]
pub async fn set_password(args: &DataArgs, name: &str) -> anyhow::Result<ExitCode> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']);
    let (_, store) = open_store(args).await?;
    let user = store.user_by_name(name).await.with_context(|| {
        format!("no user named `{name}`; create it with `deft user create {name}`")
    })?;
    store.set_password(&user.id, password).await?;
    println!("set the password of {name}; sign in to the web app with it");
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout, reason = "the command's output")]
pub async fn link_github(args: &DataArgs, name: &str, login: &str) -> anyhow::Result<ExitCode> {
    let (_, store) = open_store(args).await?;
    let user = store.user_by_name(name).await.with_context(|| {
        format!("no user named `{name}`; create it with `deft user create {name}`")
    })?;
    store.link_github(&user.id, login).await?;
    println!(
        "linked {name} to the GitHub account @{login}: their labels, `/deft` comments and reviews now act as {name}"
    );
    Ok(ExitCode::SUCCESS)
}

/// How long a one-time login link works.
pub const LOGIN_LINK_MS: i64 = 60 * 60 * 1000;

#[allow(clippy::print_stdout, reason = "the command's output: the link")]
pub async fn login_link(args: &DataArgs, name: &str, server: &str) -> anyhow::Result<ExitCode> {
    let (_, store) = open_store(args).await?;
    let user = store.user_by_name(name).await.with_context(|| {
        format!("no user named `{name}`; create it with `deft user create {name}`")
    })?;
    let token = store.create_login_link(&user.id, LOGIN_LINK_MS).await?;
    println!("one-time login link for {name} (works once, within an hour):");
    println!("{}/login/link/{token}", server.trim_end_matches('/'));
    Ok(ExitCode::SUCCESS)
}

#[allow(
    clippy::print_stdout,
    reason = "the command's output: the token is the last line"
)]
pub async fn create_token(args: &DataArgs, user: &str, label: &str) -> anyhow::Result<ExitCode> {
    let (_, store) = open_store(args).await?;
    let user = store.user_by_name(user).await.with_context(|| {
        format!("no user named `{user}`; create it with `deft user create {user}`")
    })?;
    let token = store.create_token(&user, label).await?;
    println!("token for {} (shown once; store it now):", user.name);
    println!("{}", token.token);
    Ok(ExitCode::SUCCESS)
}
