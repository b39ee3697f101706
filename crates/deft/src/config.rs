//! The config file (`--config`, `DEFT_CONFIG`, or `DATA_DIR/config.toml` when present) and the
//! model resolution that reads it together with the flags and the environment.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use deft_llm::{ModelFile, ModelInputs, Models};

use crate::cli::ModelArgs;
use crate::env_vars::{DEFT_LOCAL_ROOTS, DEFT_OLLAMA_URL, DEFT_TRUSTED_PROXIES};

/// The file name looked for in the data dir.
pub const CONFIG_FILE: &str = "config.toml";

/// The sections deft reads today; anything else is refused rather than silently ignored.
const KNOWN_SECTIONS: [&str; 10] = [
    "model",
    "forge",
    "limits",
    "retention",
    "github",
    "server",
    "environments",
    "web_search",
    "notifications",
    "smtp",
];

#[derive(Debug, Default)]
pub struct ConfigFile {
    /// Where it was read from, for messages; `None` when there is no file.
    pub path: Option<PathBuf>,
    pub model: Option<ModelFile>,
    pub forge: ForgeFile,
    pub limits: LimitsFile,
    pub retention: RetentionFile,
    pub github: GithubFile,
    pub server: ServerFile,
    pub environments: EnvironmentsFile,
    pub web_search: WebSearchFile,
    pub notifications: crate::notifications::NotificationsFile,
    pub smtp: Option<crate::notifications::SmtpFile>,
}

/// `[web_search]`: the search provider behind the agent's `web_search` and `web_fetch` tools;
/// without one, the tools are not offered.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSearchFile {
    /// `searxng` (a self-hosted SearXNG, through its JSON API) or `brave` (the Brave Search API).
    pub provider: Option<String>,
    /// SearXNG's address (required for it); for Brave, another address than its public one.
    pub base_url: Option<String>,
    /// Brave's subscription token.
    pub api_key: Option<String>,
}

/// `[environments]`: where images for repositories with a Dockerfile are built and kept.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentsFile {
    /// The Engine API socket of the image builder: Podman's (`podman system service --time=0
    /// unix:///run/deft-podman.sock`) or Docker's (`/var/run/docker.sock`). Unset: no image is
    /// built, and a task on a repository with a Dockerfile uses the host's tools, saying so.
    pub builder: Option<PathBuf>,
    /// The disk the unpacked images may take, in MiB; past it the least recently used are
    /// deleted (never one a running task uses).
    #[serde(default = "default_image_cache_mib")]
    pub cache_mib: u64,
    /// The public image tasks run on when their repositories have no Dockerfile (with a
    /// builder); unset: the host's tools.
    pub default_image: Option<String>,
    /// How an image's root runs: `bwrap` (bubblewrap over the unpacked root, the default) or
    /// `container` (one container per task through the builder's Engine API, for hosts
    /// where deft itself runs in a container without user namespaces).
    #[serde(default = "default_image_backend")]
    pub backend: String,
}

fn default_image_backend() -> String {
    "bwrap".to_owned()
}

impl Default for EnvironmentsFile {
    fn default() -> Self {
        EnvironmentsFile {
            builder: None,
            cache_mib: default_image_cache_mib(),
            default_image: None,
            backend: default_image_backend(),
        }
    }
}

fn default_image_cache_mib() -> u64 {
    20 * 1024
}

/// The image builder from `DEFT_IMAGE_BUILDER` (a socket path, or `unix://` and one), else
/// `[environments] builder`; `None` when neither is set. `data_dir/images` keeps the images.
/// The search provider `[web_search]` names, or `None` when it names none; a provider without
/// what it needs is refused, naming the key.
fn web_provider(file: &WebSearchFile) -> anyhow::Result<Option<deft_web::SearchProvider>> {
    let Some(provider) = file.provider.as_deref() else {
        if file.base_url.is_some() || file.api_key.is_some() {
            bail!(
                "base_url or api_key is set but provider is not; set provider = \"searxng\" or \"brave\""
            );
        }
        return Ok(None);
    };
    let provider = match provider {
        "searxng" => deft_web::SearchProvider::Searxng {
            base_url: file.base_url.clone().context(
                "provider = \"searxng\" needs base_url, the SearXNG server's address (its JSON format enabled)",
            )?,
        },
        "brave" => {
            let api_key = file
                .api_key
                .clone()
                .context("provider = \"brave\" needs api_key, the Brave Search API's subscription token")?;
            match &file.base_url {
                Some(base_url) => deft_web::SearchProvider::Brave {
                    api_key,
                    base_url: base_url.clone(),
                },
                None => deft_web::SearchProvider::brave(api_key),
            }
        }
        other => bail!("provider is `{other}`; use `searxng` or `brave`"),
    };
    // The client checks the address and the key as it is made.
    deft_web::SearchClient::new(Some(provider.clone()))?;
    Ok(Some(provider))
}

/// The search client of `[web_search]`, for the engine; `None` without a provider.
pub fn web_search(
    config: &ConfigFile,
) -> anyhow::Result<Option<std::sync::Arc<deft_web::SearchClient>>> {
    let Some(provider) = web_provider(&config.web_search)? else {
        return Ok(None);
    };
    Ok(Some(std::sync::Arc::new(deft_web::SearchClient::new(
        Some(provider),
    )?)))
}

pub fn images(
    config: &ConfigFile,
    data_dir: &Path,
) -> anyhow::Result<Option<deft_agent::setup::ImageBuilder>> {
    let Some(socket) = builder_socket(config)? else {
        return Ok(None);
    };
    let images = deft_images::Images::connect(
        &socket,
        &data_dir.join("images"),
        config.environments.cache_mib.saturating_mul(1024 * 1024),
    )
    .with_context(|| format!("the image builder at {}", socket.display()))?;
    Ok(Some(deft_agent::setup::ImageBuilder(std::sync::Arc::new(
        images,
    ))))
}

/// The backend that runs tasks on an image's root when `[environments] backend` is
/// `container`: the builder's engine; `None` for bubblewrap.
pub async fn image_sandboxes(
    config: &ConfigFile,
) -> anyhow::Result<Option<std::sync::Arc<dyn deft_sandbox::SandboxBackend>>> {
    if config.environments.backend != "container" {
        return Ok(None);
    }
    let Some(socket) = builder_socket(config)? else {
        bail!(
            "[environments] backend = \"container\" needs an Engine API: set [environments] builder or {}",
            crate::env_vars::DEFT_IMAGE_BUILDER
        );
    };
    let helper = std::env::current_exe().context("cannot find deft's own executable")?;
    let backend = deft_container::ContainerBackend::connect(&socket, helper)
        .await
        .with_context(|| format!("the container backend at {}", socket.display()))?;
    Ok(Some(std::sync::Arc::new(backend)))
}

/// The builder's socket from `DEFT_IMAGE_BUILDER` or the file, checked to be absolute.
fn builder_socket(config: &ConfigFile) -> anyhow::Result<Option<PathBuf>> {
    let socket = std::env::var(crate::env_vars::DEFT_IMAGE_BUILDER)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .map(PathBuf::from)
        .or_else(|| config.environments.builder.clone());
    let Some(socket) = socket else {
        return Ok(None);
    };
    let text = socket.to_string_lossy();
    let socket = PathBuf::from(text.strip_prefix("unix://").unwrap_or(&text));
    if !socket.is_absolute() {
        bail!(
            "the image builder `{}` is not an absolute socket path; set [environments] builder or {} to one, such as unix:///run/deft-podman.sock",
            socket.display(),
            crate::env_vars::DEFT_IMAGE_BUILDER
        );
    }
    Ok(Some(socket))
}

/// `[server]`: how `deft serve` meets the network.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Reverse proxies (addresses or CIDR blocks) whose `X-Forwarded-For` names the client and
    /// whose `X-Forwarded-Proto` is believed. Unset: no one's, since anyone can send them.
    pub trusted_proxies: Option<Vec<String>>,
}

/// `[github]` (SPEC §5): a GitHub App or a personal token, and the webhook's secret. Each key
/// may also come from its `DEFT_GITHUB_*` variable, which wins.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubFile {
    pub api_url: Option<String>,
    pub app_id: Option<u64>,
    pub private_key_path: Option<PathBuf>,
    pub webhook_secret: Option<String>,
    pub token: Option<String>,
    pub label: Option<String>,
    /// The App's OAuth client, with which people connect their own accounts in the settings.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Where people authorize the App; derived from `api_url` when unset.
    pub web_url: Option<String>,
}

/// `[retention]`: how long finished tasks and chats are kept after their last activity.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    #[serde(default = "default_retention_days")]
    pub days: u32,
    /// The disk the workspaces of idle tasks (completed, pull requests open) may take, in
    /// MiB; past it the least recently changed are deleted (a later round clones again).
    #[serde(default = "default_idle_workspaces_mib")]
    pub idle_workspaces_mib: u64,
}

impl Default for RetentionFile {
    fn default() -> Self {
        RetentionFile {
            days: default_retention_days(),
            idle_workspaces_mib: default_idle_workspaces_mib(),
        }
    }
}

impl RetentionFile {
    pub fn idle_workspaces_bytes(&self) -> u64 {
        self.idle_workspaces_mib.saturating_mul(1024 * 1024)
    }
}

fn default_idle_workspaces_mib() -> u64 {
    20 * 1024
}

fn default_retention_days() -> u32 {
    90
}

/// `[limits]`: what a task may spend.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Tokens (input and output) one task may spend; it stops in `needs_attention` at the
    /// limit, never over it.
    pub task_tokens: Option<i64>,
    /// Tokens one user may spend in a week (Monday 00:00 UTC to the next); a task that would
    /// start over it waits in `needs_attention` saying when it resets.
    pub weekly_tokens: Option<i64>,
    /// Tasks of one user running at once (default 10); the rest wait, first in, first out.
    pub concurrent_tasks_per_user: Option<i64>,
    /// Attempts a plan step gets (default 2, at most 5): an attempt that gives up has its
    /// changes undone and the step starts again, from a fresh conversation.
    pub step_attempts: Option<i64>,
}

/// `[forge]`: where repositories come from.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgeFile {
    /// Directories under which users may register local repositories. Unset: only
    /// administrators may register them, from anywhere.
    pub local_roots: Option<Vec<PathBuf>>,
}

/// Reads the config file. An explicit path must exist; the data dir's is optional.
pub fn load(explicit: Option<&Path>, data_dir: &Path) -> anyhow::Result<ConfigFile> {
    let path = match explicit {
        Some(path) => path.to_owned(),
        None => {
            let path = data_dir.join(CONFIG_FILE);
            if !path.exists() {
                return Ok(ConfigFile::default());
            }
            path
        }
    };
    let text = fs_err::read_to_string(&path)
        .context("cannot read the config file; check `--config` or DEFT_CONFIG")?;
    parse(&text, &path)
}

fn parse(text: &str, path: &Path) -> anyhow::Result<ConfigFile> {
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    for key in table.keys() {
        if !KNOWN_SECTIONS.contains(&key.as_str()) {
            bail!(
                "{}: unknown setting `{key}`; the file may hold: {}",
                path.display(),
                KNOWN_SECTIONS.join(", ")
            );
        }
    }
    let model = section(
        &table,
        path,
        "model",
        "name, base_url, api_key, edit_format, temperature, [model.planner], [model.executor]",
    )?;
    if let Some(Err(error)) = model
        .as_ref()
        .and_then(|model: &ModelFile| model.edit_format.as_deref())
        .map(str::parse::<deft_agent::engine::EditFormat>)
    {
        anyhow::bail!("{}: [model] edit_format: {error}", path.display());
    }
    if let Some(temperature) = model.as_ref().and_then(|model| model.temperature)
        && !(0.0..=2.0).contains(&temperature)
    {
        anyhow::bail!(
            "{}: [model] temperature: {temperature} is out of range; use a number from 0 (the most likely words, best for small local models) to 2, or remove the line for the provider's default",
            path.display()
        );
    }
    let forge: ForgeFile = section(&table, path, "forge", "local_roots")?.unwrap_or_default();
    let limits: LimitsFile = section(
        &table,
        path,
        "limits",
        "task_tokens, weekly_tokens, concurrent_tasks_per_user, step_attempts",
    )?
    .unwrap_or_default();
    for (key, value) in [
        ("task_tokens", limits.task_tokens),
        ("weekly_tokens", limits.weekly_tokens),
        (
            "concurrent_tasks_per_user",
            limits.concurrent_tasks_per_user,
        ),
        ("step_attempts", limits.step_attempts),
    ] {
        if value.is_some_and(|tokens| tokens <= 0) {
            bail!("{}: [limits] {key} must be positive", path.display());
        }
    }
    if limits.step_attempts.is_some_and(|attempts| attempts > 5) {
        bail!(
            "{}: [limits] step_attempts must be 5 or fewer (each attempt may take the step's 40 turns)",
            path.display()
        );
    }
    let retention: RetentionFile =
        section(&table, path, "retention", "days, idle_workspaces_mib")?.unwrap_or_default();
    let github: GithubFile = section(&table, path, "github", "api_url, app_id, private_key_path, webhook_secret, token, label, client_id, client_secret, web_url")?.unwrap_or_default();
    let server: ServerFile = section(
        &table,
        path,
        "server",
        "trusted_proxies, a list such as [\"127.0.0.1\", \"10.0.0.0/8\"]",
    )?
    .unwrap_or_default();
    let environments: EnvironmentsFile = section(
        &table,
        path,
        "environments",
        "builder, an Engine API socket path; cache_mib; default_image; backend",
    )?
    .unwrap_or_default();
    if environments.cache_mib == 0 {
        bail!(
            "{}: [environments] cache_mib is 0, which keeps no image; give the disk the images may take in MiB (unset, it is {})",
            path.display(),
            default_image_cache_mib()
        );
    }
    if !matches!(environments.backend.as_str(), "bwrap" | "container") {
        bail!(
            "{}: [environments] backend is `{}`; use `bwrap` or `container`",
            path.display(),
            environments.backend
        );
    }
    if let Some(image) = &environments.default_image {
        deft_core::RepoEnvironment::parse(&format!("image {image}"), "default_image")
            .with_context(|| format!("{}: [environments] default_image", path.display()))?;
    }
    let web_search: WebSearchFile =
        section(&table, path, "web_search", "provider, base_url, api_key")?.unwrap_or_default();
    web_provider(&web_search).with_context(|| format!("{}: [web_search]", path.display()))?;
    // A bad entry is refused when the file is read, not at the first request from a proxy.
    if let Some(entries) = &server.trusted_proxies {
        deft_server::TrustedProxies::parse(entries.iter().map(String::as_str))
            .with_context(|| format!("{}: [server] trusted_proxies", path.display()))?;
    }
    if retention.days == 0 {
        bail!("{}: [retention] days must be at least 1", path.display());
    }
    let notifications = section(
        &table,
        path,
        "notifications",
        "public_url, allow_private_targets",
    )?
    .unwrap_or_default();
    let smtp = section(
        &table,
        path,
        "smtp",
        "host, port, tls, from, username, password_file, timeout_secs",
    )?;
    // Refused when the file is read, not at the first notification.
    crate::notifications::resolve(&notifications, smtp.as_ref())
        .with_context(|| path.display().to_string())?;
    Ok(ConfigFile {
        path: Some(path.to_owned()),
        model,
        forge,
        limits,
        retention,
        github,
        server,
        environments,
        web_search,
        notifications,
        smtp,
    })
}

/// The file's `[name]` section read as `T`, or `None` when it is absent; `keys` says what the
/// section may hold, for the message when it does not read.
fn section<T: serde::de::DeserializeOwned>(
    table: &toml::Table,
    path: &Path,
    name: &str,
    keys: &str,
) -> anyhow::Result<Option<T>> {
    let Some(value) = table.get(name) else {
        return Ok(None);
    };
    let section = value
        .clone()
        .try_into::<T>()
        .with_context(|| format!("{}: bad [{name}] section (keys: {keys})", path.display()))?;
    Ok(Some(section))
}

/// The trusted proxies: `DEFT_TRUSTED_PROXIES` (comma-separated), else `[server]
/// trusted_proxies`, else none.
pub fn trusted_proxies(config: &ConfigFile) -> anyhow::Result<deft_server::TrustedProxies> {
    trusted_proxies_from(std::env::var(DEFT_TRUSTED_PROXIES).ok(), config)
}

fn trusted_proxies_from(
    env: Option<String>,
    config: &ConfigFile,
) -> anyhow::Result<deft_server::TrustedProxies> {
    match env.filter(|value| !value.trim().is_empty()) {
        Some(value) => {
            let entries: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .collect();
            if entries.is_empty() {
                bail!(
                    "{DEFT_TRUSTED_PROXIES} is `{value}`, which names no proxy; give addresses or CIDR blocks separated by commas, or unset it"
                );
            }
            deft_server::TrustedProxies::parse(entries)
                .with_context(|| format!("{DEFT_TRUSTED_PROXIES} (comma-separated)"))
        }
        None => match &config.server.trusted_proxies {
            Some(entries) => deft_server::TrustedProxies::parse(entries.iter().map(String::as_str))
                .context("[server] trusted_proxies"),
            None => Ok(deft_server::TrustedProxies::default()),
        },
    }
}

/// The GitHub connection from `[github]` and the `DEFT_GITHUB_*` variables; `None` when
/// neither an App nor a token is set.
pub fn github(config: &ConfigFile) -> anyhow::Result<Option<deft_github::GithubConfig>> {
    use crate::env_vars::{
        DEFT_GITHUB_API_URL, DEFT_GITHUB_APP_ID, DEFT_GITHUB_CLIENT_ID, DEFT_GITHUB_CLIENT_SECRET,
        DEFT_GITHUB_LABEL, DEFT_GITHUB_PRIVATE_KEY_PATH, DEFT_GITHUB_TOKEN, DEFT_GITHUB_WEB_URL,
        DEFT_GITHUB_WEBHOOK_SECRET,
    };
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let file = &config.github;
    let app_id = match var(DEFT_GITHUB_APP_ID) {
        Some(text) => Some(text.trim().parse::<u64>().with_context(|| {
            format!("{DEFT_GITHUB_APP_ID} must be the App's numeric id, not `{text}`")
        })?),
        None => file.app_id,
    };
    let key_path = var(DEFT_GITHUB_PRIVATE_KEY_PATH)
        .map(PathBuf::from)
        .or_else(|| file.private_key_path.clone());
    let token = var(DEFT_GITHUB_TOKEN).or_else(|| file.token.clone());
    let auth = match (app_id, key_path, token) {
        (Some(app_id), Some(path), _) => deft_github::GithubAuth::App {
            app_id,
            private_key_pem: fs_err::read(&path).context(
                "cannot read the GitHub App's private key; check github.private_key_path",
            )?,
        },
        (Some(_), None, _) | (None, Some(_), _) => bail!(
            "a GitHub App needs both github.app_id and github.private_key_path (or {DEFT_GITHUB_APP_ID} and {DEFT_GITHUB_PRIVATE_KEY_PATH})"
        ),
        (None, None, Some(token)) => deft_github::GithubAuth::Token(token),
        (None, None, None) => return Ok(None),
    };
    let api_url = var(DEFT_GITHUB_API_URL)
        .or_else(|| file.api_url.clone())
        .unwrap_or_else(|| deft_github::DEFAULT_API_URL.to_owned());
    let client_id = var(DEFT_GITHUB_CLIENT_ID).or_else(|| file.client_id.clone());
    let client_secret = var(DEFT_GITHUB_CLIENT_SECRET).or_else(|| file.client_secret.clone());
    let oauth = match (client_id, client_secret) {
        (Some(client_id), Some(client_secret)) => Some(deft_github::OAuthApp {
            client_id,
            client_secret,
            web_url: var(DEFT_GITHUB_WEB_URL)
                .or_else(|| file.web_url.clone())
                .unwrap_or_else(|| deft_github::web_url(&api_url)),
        }),
        (None, None) => None,
        _ => bail!(
            "people connect their GitHub accounts with the App's OAuth client, which needs both github.client_id and github.client_secret (or {DEFT_GITHUB_CLIENT_ID} and {DEFT_GITHUB_CLIENT_SECRET})"
        ),
    };
    Ok(Some(deft_github::GithubConfig {
        api_url,
        auth,
        oauth,
        webhook_secret: var(DEFT_GITHUB_WEBHOOK_SECRET).or_else(|| file.webhook_secret.clone()),
        label: var(DEFT_GITHUB_LABEL)
            .or_else(|| file.label.clone())
            .unwrap_or_else(|| deft_github::DEFAULT_LABEL.to_owned()),
    }))
}

/// The local forge's roots: `DEFT_LOCAL_ROOTS` (colon-separated), else `[forge] local_roots`.
/// Each must be an existing absolute directory; symlinks are resolved so that checks compare
/// real paths.
pub fn local_roots(config: &ConfigFile) -> anyhow::Result<deft_forge::LocalRoots> {
    local_roots_from(std::env::var(DEFT_LOCAL_ROOTS).ok(), config)
}

fn local_roots_from(
    env: Option<String>,
    config: &ConfigFile,
) -> anyhow::Result<deft_forge::LocalRoots> {
    let (roots, setting) = match env {
        Some(value) if !value.is_empty() => (
            value
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
            DEFT_LOCAL_ROOTS.to_owned(),
        ),
        _ => match &config.forge.local_roots {
            Some(roots) => (roots.clone(), "[forge] local_roots".to_owned()),
            None => return Ok(deft_forge::LocalRoots::unrestricted()),
        },
    };
    // `[forge] local_roots = []` is a choice (no local repositories for anyone); the variable
    // set to only colons is a slip.
    if roots.is_empty() && setting == DEFT_LOCAL_ROOTS {
        bail!(
            "{DEFT_LOCAL_ROOTS} names no directory; give the directories under which people may register repositories, separated by `:`, or unset it"
        );
    }
    let mut canonical = Vec::with_capacity(roots.len());
    for root in roots {
        if !root.is_absolute() {
            bail!("{setting}: `{}` is not an absolute path", root.display());
        }
        canonical.push(fs_err::canonicalize(&root).with_context(|| {
            format!(
                "{setting}: `{}` must be an existing directory",
                root.display()
            )
        })?);
    }
    Ok(deft_forge::LocalRoots::only(canonical))
}

/// Resolves the models from the flag, the environment and the config file, probing Ollama
/// last (SPEC §4).
pub async fn models(args: &ModelArgs, config: &ConfigFile) -> Result<Models, deft_llm::ModelError> {
    let inputs = ModelInputs {
        flag: args.model.clone(),
        env: ModelInputs::env_from_process(),
        file: config.model.clone(),
        file_label: config
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| CONFIG_FILE.into()),
        ollama: None,
    };
    let ollama = ollama_url(std::env::var(DEFT_OLLAMA_URL).ok())?;
    deft_llm::resolve_with_probe(inputs, ollama.as_deref()).await
}

/// How the executor's model changes files (`[model] edit_format`, checked when the file was
/// read).
pub fn edit_format(config: &ConfigFile) -> deft_agent::engine::EditFormat {
    config
        .model
        .as_ref()
        .and_then(|model| model.edit_format.as_deref())
        .and_then(|format| format.parse().ok())
        .unwrap_or_default()
}

/// The sampling temperature for every model call (`[model] temperature`, checked when the
/// file was read); `None` leaves the provider's default.
pub fn temperature(config: &ConfigFile) -> Option<f32> {
    config.model.as_ref().and_then(|model| model.temperature)
}

/// `DEFT_OLLAMA_URL`, when set: an http or https URL, else where to look is unknown and the
/// model's resolution says so (rather than probing the default address instead).
fn ollama_url(value: Option<String>) -> Result<Option<String>, deft_llm::ModelError> {
    let Some(text) = value.filter(|text| !text.trim().is_empty()) else {
        return Ok(None);
    };
    match reqwest::Url::parse(text.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(Some(text.trim().to_owned()))
        }
        _ => Err(deft_llm::ModelError::Config {
            setting: DEFT_OLLAMA_URL.to_owned(),
            message: format!(
                "`{text}` is not an http:// or https:// URL; set it to where Ollama listens, such as http://127.0.0.1:11434, or unset it"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_github_section_needs_an_app_with_its_key_or_a_token() {
        let path = Path::new("deft.toml");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("app.pem");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        let text = format!(
            "[github]\napp_id = 12\nprivate_key_path = \"{}\"\nwebhook_secret = \"s\"\n",
            key.display()
        );
        let config = parse(&text, path).unwrap();
        let app = github(&config).unwrap().unwrap();
        assert!(matches!(
            app.auth,
            deft_github::GithubAuth::App { app_id: 12, .. }
        ));
        assert_eq!(app.api_url, deft_github::DEFAULT_API_URL);
        assert_eq!(
            (app.label.as_str(), app.webhook_secret.as_deref()),
            ("deft", Some("s"))
        );

        let half = parse("[github]\napp_id = 12\n", path).unwrap();
        let error = github(&half).unwrap_err().to_string();
        assert!(
            error.contains("needs both github.app_id and github.private_key_path"),
            "{error}"
        );
        let token = parse(
            "[github]\ntoken = \"t\"\napi_url = \"https://ghe.example/api/v3\"\n",
            path,
        )
        .unwrap();
        let token = github(&token).unwrap().unwrap();
        assert!(matches!(token.auth, deft_github::GithubAuth::Token(_)));
        assert_eq!(token.api_url, "https://ghe.example/api/v3");
        assert!(
            github(&parse("", path).unwrap()).unwrap().is_none(),
            "no GitHub without settings"
        );
        let typo = parse("[github]\napp = 1\n", path).unwrap_err();
        assert!(
            format!("{typo:#}").contains("keys: api_url, app_id"),
            "{typo:#}"
        );
    }

    #[test]
    fn the_model_section_is_read_and_unknown_settings_are_refused() {
        let path = Path::new("deft.toml");
        let config = parse(
            "[model]\nname = \"anthropic/x\"\n[model.planner]\nname = \"anthropic/y\"\n",
            path,
        )
        .unwrap();
        let model = config.model.unwrap();
        assert_eq!(model.name.as_deref(), Some("anthropic/x"));
        assert_eq!(model.planner.unwrap().name.as_deref(), Some("anthropic/y"));
        let error = parse("[limit]\ntask_tokens = 5\n", path).unwrap_err();
        assert_eq!(
            error.to_string(),
            "deft.toml: unknown setting `limit`; the file may hold: model, forge, limits, retention, github, server, environments, web_search, notifications, smtp"
        );
        assert_eq!(
            parse("[limits]\ntask_tokens = 5\n", path)
                .unwrap()
                .limits
                .task_tokens,
            Some(5)
        );
        assert!(parse("[limits]\ntask_tokens = 0\n", path).is_err());
        // [web_search]: a provider with what it needs, and each gap named with its key.
        let searxng = parse(
            "[web_search]\nprovider = \"searxng\"\nbase_url = \"http://127.0.0.1:8888\"\n",
            path,
        )
        .unwrap();
        assert!(web_search(&searxng).unwrap().is_some());
        assert!(web_search(&parse("", path).unwrap()).unwrap().is_none());
        for (text, named) in [
            ("provider = \"searxng\"\n", "needs base_url"),
            ("provider = \"brave\"\n", "needs api_key"),
            ("provider = \"bing\"\n", "use `searxng` or `brave`"),
            ("api_key = \"k\"\n", "provider is not"),
            (
                "provider = \"searxng\"\nbase_url = \"http://u:p@127.0.0.1\"\n",
                "user name or password",
            ),
        ] {
            let error = format!(
                "{:#}",
                parse(&format!("[web_search]\n{text}"), path).unwrap_err()
            );
            assert!(
                error.contains("[web_search]") && error.contains(named),
                "{error}"
            );
        }
        for attempts in [0, 6] {
            let error = parse(&format!("[limits]\nstep_attempts = {attempts}\n"), path)
                .unwrap_err()
                .to_string();
            assert!(error.contains("[limits] step_attempts must be"), "{error}");
        }
        assert_eq!(
            parse("[limits]\nstep_attempts = 3\n", path)
                .unwrap()
                .limits
                .step_attempts,
            Some(3)
        );
        let environments = parse(
            "[environments]\nbuilder = \"/run/deft-podman.sock\"\ncache_mib = 512\n",
            path,
        )
        .unwrap()
        .environments;
        assert_eq!(
            environments.builder,
            Some(PathBuf::from("/run/deft-podman.sock"))
        );
        assert_eq!(environments.cache_mib, 512);
        let error = parse("[environments]\nbuildr = \"x\"\n", path).unwrap_err();
        assert!(
            format!("{error:#}").contains("[environments]")
                && format!("{error:#}").contains("buildr"),
            "{error:#}"
        );
        let config = parse("[forge]\nlocal_roots = [\"/srv/git\"]\n", path).unwrap();
        assert_eq!(
            config.forge.local_roots,
            Some(vec![PathBuf::from("/srv/git")])
        );
        let config = parse("[model]\nedit_format = \"code_blocks\"\n", path).unwrap();
        assert_eq!(
            edit_format(&config),
            deft_agent::engine::EditFormat::CodeBlocks
        );
        assert_eq!(
            edit_format(&ConfigFile::default()),
            deft_agent::engine::EditFormat::ToolCalls
        );
        let error = parse("[model]\nedit_format = \"diff\"\n", path).unwrap_err();
        assert!(
            format!("{error:#}")
                .contains("[model] edit_format: `diff` is not an edit format; use \"tool_calls\""),
            "{error:#}"
        );
        let config = parse("[model]\ntemperature = 0.0\n", path).unwrap();
        assert_eq!(temperature(&config), Some(0.0));
        assert_eq!(temperature(&ConfigFile::default()), None);
        let error = parse("[model]\ntemperature = 7.5\n", path).unwrap_err();
        assert!(
            format!("{error:#}")
                .contains("[model] temperature: 7.5 is out of range; use a number from 0"),
            "{error:#}"
        );
        let error = parse("[model]\nnmae = \"x\"\n", path).unwrap_err();
        assert!(
            format!("{error:#}").contains("unknown field `nmae`"),
            "{error:#}"
        );
        assert!(
            parse("[model", path)
                .unwrap_err()
                .to_string()
                .contains("is not valid TOML")
        );
    }

    /// Values that parse but mean nothing are refused, naming the setting and what it takes.
    #[test]
    fn settings_that_would_be_ignored_are_refused_naming_them() {
        let path = Path::new("deft.toml");
        let error = format!(
            "{:#}",
            parse("[environments]\ncache_mib = 0\n", path).unwrap_err()
        );
        assert!(
            error.starts_with("deft.toml: [environments] cache_mib is 0") && error.contains("MiB"),
            "{error}"
        );
        let none = parse("", path).unwrap();
        let error = local_roots_from(Some(":".into()), &none)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("DEFT_LOCAL_ROOTS names no directory"),
            "{error}"
        );
        let error = local_roots_from(Some("srv/git".into()), &none)
            .unwrap_err()
            .to_string();
        assert_eq!(error, "DEFT_LOCAL_ROOTS: `srv/git` is not an absolute path");
        let chosen = parse("[forge]\nlocal_roots = []\n", path).unwrap();
        assert!(
            local_roots_from(None, &chosen).unwrap().is_restricted(),
            "an empty list in the file is a choice: no local repositories"
        );
        let error = trusted_proxies_from(Some(" , ".into()), &none)
            .unwrap_err()
            .to_string();
        assert!(error.contains("names no proxy"), "{error}");
        for bad in ["127.0.0.1:11434", "ollama", "file:///tmp/x", "http://"] {
            let error = ollama_url(Some(bad.into())).unwrap_err().to_string();
            assert!(
                error.starts_with("DEFT_OLLAMA_URL: `") && error.contains("http://127.0.0.1:11434"),
                "{bad}: {error}"
            );
        }
        assert_eq!(
            ollama_url(Some("http://gpu.lan:11434".into())).unwrap(),
            Some("http://gpu.lan:11434".into())
        );
        assert_eq!(ollama_url(Some(" ".into())).unwrap(), None);
    }

    #[test]
    fn trusted_proxies_come_from_the_variable_or_the_server_section() {
        let path = Path::new("deft.toml");
        let config = parse(
            "[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n",
            path,
        )
        .unwrap();
        let file = trusted_proxies_from(None, &config).unwrap();
        assert_eq!(file.to_string(), "127.0.0.1/32, 10.0.0.0/8");
        let env = trusted_proxies_from(Some(" ::1, 192.168.0.0/16 ,".into()), &config).unwrap();
        assert_eq!(
            env.to_string(),
            "::1/128, 192.168.0.0/16",
            "the variable wins"
        );
        assert!(
            trusted_proxies_from(None, &parse("", path).unwrap())
                .unwrap()
                .is_empty(),
            "no one is trusted unless named"
        );

        // A bad entry is refused at start, naming the setting, the entry and the fix.
        let error = parse("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", path).unwrap_err();
        let error = format!("{error:#}");
        assert!(
            error.starts_with("deft.toml: [server] trusted_proxies: `10.0.0.0/33`")
                && error.contains("at most /32"),
            "{error}"
        );
        let error = parse("[server]\ntrusted_proxies = [\"proxy.local\"]\n", path).unwrap_err();
        let error = format!("{error:#}");
        assert!(
            error.contains("[server] trusted_proxies: `proxy.local` is not an IP address")
                && error.contains("like `10.0.0.0/8`"),
            "{error}"
        );
        let error = trusted_proxies_from(Some("127.0.0.1;10.0.0.1".into()), &config).unwrap_err();
        let error = format!("{error:#}");
        assert!(
            error.starts_with("DEFT_TRUSTED_PROXIES (comma-separated): `127.0.0.1;10.0.0.1`"),
            "{error}"
        );
        let error = parse("[server]\ntrusted_proxy = []\n", path).unwrap_err();
        assert!(
            format!("{error:#}").contains("keys: trusted_proxies"),
            "{error:#}"
        );
    }
}
