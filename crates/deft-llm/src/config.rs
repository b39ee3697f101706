//! Which model deft uses, resolved exactly as SPEC §4 says, and why.
//!
//! The model: `--model PROVIDER/NAME`, else `DEFT_MODEL`, else `[model] name` in the config
//! file, else `ANTHROPIC_API_KEY` picks anthropic, else `OPENAI_API_KEY` picks openai, else an
//! Ollama server on 127.0.0.1:11434 that answers. The base URL: `DEFT_MODEL_BASE_URL`, else
//! `[model] base_url`, else the provider's. The key: `DEFT_MODEL_API_KEY`, else the provider's
//! own variable, else `[model] api_key`. Each resolved model remembers where each part came
//! from, so errors can name the setting to change.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::ModelError;
use crate::error::Protocol;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Anthropic,
    OpenAi,
    OpenAiCompatible,
}

impl Provider {
    pub const ALL: [Provider; 3] = [
        Provider::Anthropic,
        Provider::OpenAi,
        Provider::OpenAiCompatible,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
            Provider::OpenAiCompatible => "openai-compatible",
        }
    }

    pub fn parse(text: &str) -> Option<Provider> {
        Provider::ALL
            .into_iter()
            .find(|provider| provider.as_str() == text)
    }

    pub fn protocol(self) -> Protocol {
        match self {
            Provider::Anthropic => Protocol::Anthropic,
            Provider::OpenAi | Provider::OpenAiCompatible => Protocol::OpenAi,
        }
    }

    fn default_base_url(self) -> Option<&'static str> {
        match self {
            Provider::Anthropic => Some("https://api.anthropic.com"),
            Provider::OpenAi => Some("https://api.openai.com/v1"),
            Provider::OpenAiCompatible => None,
        }
    }

    /// The provider's own key variable.
    fn key_env(self) -> Option<&'static str> {
        match self {
            Provider::Anthropic => Some(ANTHROPIC_API_KEY),
            Provider::OpenAi => Some(OPENAI_API_KEY),
            Provider::OpenAiCompatible => None,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub const DEFT_MODEL: &str = "DEFT_MODEL";
pub const DEFT_MODEL_BASE_URL: &str = "DEFT_MODEL_BASE_URL";
pub const DEFT_MODEL_API_KEY: &str = "DEFT_MODEL_API_KEY";
pub const ANTHROPIC_API_KEY: &str = "ANTHROPIC_API_KEY";
pub const OPENAI_API_KEY: &str = "OPENAI_API_KEY";

/// Every variable resolution reads, for the caller to snapshot.
pub const MODEL_ENV_VARS: [&str; 5] = [
    DEFT_MODEL,
    DEFT_MODEL_BASE_URL,
    DEFT_MODEL_API_KEY,
    ANTHROPIC_API_KEY,
    OPENAI_API_KEY,
];

/// The models picked when only a provider's key is set.
pub const DEFAULT_ANTHROPIC_MODEL: &str = "claude-sonnet-4-5";
pub const DEFAULT_OPENAI_MODEL: &str = "gpt-4.1";

/// Where Ollama listens when nothing else is configured.
pub const OLLAMA_URL: &str = "http://127.0.0.1:11434";

/// An API key: never printed, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// `[model]` of the config file, and the same keys under `[model.planner]` and
/// `[model.executor]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// `PROVIDER/NAME`.
    pub name: Option<String>,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub planner: Option<RoleFile>,
    pub executor: Option<RoleFile>,
    /// How the executor's model changes files: `tool_calls` (the default) or `code_blocks`;
    /// read by deft's engine, not by the clients here.
    pub edit_format: Option<String>,
    /// The sampling temperature sent with every call (0 to 2); the provider's default when
    /// unset. Small local models write better code at 0.
    pub temperature: Option<f32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFile {
    pub name: Option<String>,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
}

/// A model ready to call, and the settings it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    pub provider: Provider,
    pub model: String,
    pub base_url: String,
    pub api_key: Option<ApiKey>,
    /// Why this model: "the --model flag", "DEFT_MODEL", "ANTHROPIC_API_KEY is set", …
    pub source: String,
    /// The setting to change to pick another model.
    pub model_setting: String,
    /// The setting to change to fix the key.
    pub key_setting: String,
}

impl ModelConfig {
    /// `PROVIDER/NAME`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }
}

/// Which part of a task a model serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelRole {
    Planner,
    Executor,
}

/// The default model, and the ones configured per role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Models {
    pub default: ModelConfig,
    pub planner: Option<ModelConfig>,
    pub executor: Option<ModelConfig>,
}

impl Models {
    pub fn for_role(&self, role: ModelRole) -> &ModelConfig {
        let specific = match role {
            ModelRole::Planner => &self.planner,
            ModelRole::Executor => &self.executor,
        };
        specific.as_ref().unwrap_or(&self.default)
    }
}

/// What resolution reads, gathered by the caller (the binary reads the process environment
/// and the config file; tests pass what they like).
#[derive(Debug, Clone, Default)]
pub struct ModelInputs {
    pub flag: Option<String>,
    pub env: BTreeMap<String, String>,
    pub file: Option<ModelFile>,
    /// How to name the config file in messages.
    pub file_label: String,
    /// An Ollama server that answered, with its models.
    pub ollama: Option<OllamaFound>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OllamaFound {
    pub url: String,
    pub models: Vec<String>,
}

impl ModelInputs {
    /// Reads the model variables from the process environment.
    pub fn env_from_process() -> BTreeMap<String, String> {
        MODEL_ENV_VARS
            .iter()
            .filter_map(|name| {
                std::env::var(name)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .map(|v| (name.to_string(), v))
            })
            .collect()
    }

    fn env(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    /// Whether resolution would fall through to probing Ollama.
    pub fn needs_probe(&self) -> bool {
        self.flag.is_none()
            && self.env(DEFT_MODEL).is_none()
            && self.file.as_ref().and_then(|f| f.name.as_ref()).is_none()
            && self.env(ANTHROPIC_API_KEY).is_none()
            && self.env(OPENAI_API_KEY).is_none()
    }
}

/// Splits `PROVIDER/NAME` at the first `/` (OpenRouter names have more).
pub fn parse_model(text: &str, setting: &str) -> Result<(Provider, String), ModelError> {
    let bad = |message: String| ModelError::Config {
        setting: setting.to_owned(),
        message,
    };
    let (provider, name) = text.split_once('/').ok_or_else(|| {
        bad(format!("`{text}` is not PROVIDER/NAME; write e.g. `anthropic/{DEFAULT_ANTHROPIC_MODEL}` or `openai-compatible/llama3.1`"))
    })?;
    let provider = Provider::parse(provider).ok_or_else(|| {
        bad(format!(
            "unknown provider `{provider}`; use `anthropic`, `openai` or `openai-compatible`"
        ))
    })?;
    if name.trim().is_empty() {
        return Err(bad(format!("`{text}` names no model after the `/`")));
    }
    Ok((provider, name.to_owned()))
}

/// The hint given when nothing is configured.
pub fn not_configured_hint() -> String {
    format!(
        "set {DEFT_MODEL}=PROVIDER/NAME (anthropic/…, openai/… or openai-compatible/… with {DEFT_MODEL_BASE_URL}) and {DEFT_MODEL_API_KEY}, or set {ANTHROPIC_API_KEY} or {OPENAI_API_KEY}, or run Ollama on 127.0.0.1:11434"
    )
}

/// Resolves the default model and the per-role ones. `NotConfigured` when nothing names a
/// model (the caller may probe Ollama and try again).
pub fn resolve(inputs: &ModelInputs) -> Result<Models, ModelError> {
    let file = inputs.file.clone().unwrap_or_default();
    let file_key = |key: &str| format!("[model] {key} in {}", inputs.file_label);
    let (provider, model, source, model_setting) = if let Some(flag) = &inputs.flag {
        let (provider, model) = parse_model(flag, "--model")?;
        (
            provider,
            model,
            "the --model flag".to_owned(),
            "--model".to_owned(),
        )
    } else if let Some(value) = inputs.env(DEFT_MODEL) {
        let (provider, model) = parse_model(value, DEFT_MODEL)?;
        (
            provider,
            model,
            DEFT_MODEL.to_owned(),
            DEFT_MODEL.to_owned(),
        )
    } else if let Some(name) = &file.name {
        let (provider, model) = parse_model(name, &file_key("name"))?;
        (provider, model, file_key("name"), file_key("name"))
    } else if inputs.env(ANTHROPIC_API_KEY).is_some() {
        let source = format!("{ANTHROPIC_API_KEY} is set");
        (
            Provider::Anthropic,
            DEFAULT_ANTHROPIC_MODEL.to_owned(),
            source,
            DEFT_MODEL.to_owned(),
        )
    } else if inputs.env(OPENAI_API_KEY).is_some() {
        let source = format!("{OPENAI_API_KEY} is set");
        (
            Provider::OpenAi,
            DEFAULT_OPENAI_MODEL.to_owned(),
            source,
            DEFT_MODEL.to_owned(),
        )
    } else if let Some(ollama) = &inputs.ollama {
        let model = ollama.models.first().cloned().ok_or_else(|| ModelError::NotConfigured {
            hint: format!("an Ollama server answers at {} but has no model; pull one with `ollama pull NAME`, or {}", ollama.url, not_configured_hint()),
        })?;
        let source = format!("an Ollama server answers at {}", ollama.url);
        let config = ModelConfig {
            provider: Provider::OpenAiCompatible,
            model,
            base_url: format!("{}/v1", ollama.url),
            api_key: None,
            source,
            model_setting: DEFT_MODEL.to_owned(),
            key_setting: DEFT_MODEL_API_KEY.to_owned(),
        };
        return Ok(Models {
            default: config,
            planner: None,
            executor: None,
        });
    } else {
        return Err(ModelError::NotConfigured {
            hint: not_configured_hint(),
        });
    };

    let base_url = inputs
        .env(DEFT_MODEL_BASE_URL)
        .map(|url| (url.to_owned(), DEFT_MODEL_BASE_URL.to_owned()))
        .or_else(|| file.base_url.clone().map(|url| (url, file_key("base_url"))));
    let default = finish(
        inputs,
        provider,
        model,
        base_url,
        file.api_key.clone().map(|k| (k, file_key("api_key"))),
        source,
        model_setting,
    )?;

    let role = |role: &Option<RoleFile>, table: &str| -> Result<Option<ModelConfig>, ModelError> {
        let Some(role) = role else { return Ok(None) };
        let key = |key: &str| format!("[model.{table}] {key} in {}", inputs.file_label);
        let (provider, model, source) = match &role.name {
            Some(name) => {
                let (provider, model) = parse_model(name, &key("name"))?;
                (provider, model, key("name"))
            }
            None => (
                default.provider,
                default.model.clone(),
                default.source.clone(),
            ),
        };
        let base_url = match &role.base_url {
            Some(url) => Some((url.clone(), key("base_url"))),
            None if provider == default.provider => {
                Some((default.base_url.clone(), default.source.clone()))
            }
            None => None,
        };
        let api_key = match &role.api_key {
            Some(api_key) => Some((api_key.clone(), key("api_key"))),
            None if provider == default.provider => default
                .api_key
                .as_ref()
                .map(|k| (k.expose().to_owned(), default.key_setting.clone())),
            None => None,
        };
        finish(
            inputs,
            provider,
            model,
            base_url,
            api_key,
            source,
            key("name"),
        )
        .map(Some)
    };
    let planner = role(&file.planner, "planner")?;
    let executor = role(&file.executor, "executor")?;
    Ok(Models {
        default,
        planner,
        executor,
    })
}

/// Completes a model with its base URL and key, or says which setting is missing.
fn finish(
    inputs: &ModelInputs,
    provider: Provider,
    model: String,
    base_url: Option<(String, String)>,
    file_key: Option<(String, String)>,
    source: String,
    model_setting: String,
) -> Result<ModelConfig, ModelError> {
    let (base_url, url_setting) = match base_url {
        Some(found) => found,
        None => match provider.default_base_url() {
            Some(url) => (url.to_owned(), DEFT_MODEL_BASE_URL.to_owned()),
            None => {
                return Err(ModelError::Config {
                    setting: DEFT_MODEL_BASE_URL.to_owned(),
                    message: format!(
                        "`{provider}` needs the server's URL; set {DEFT_MODEL_BASE_URL} (e.g. http://127.0.0.1:11434/v1 for Ollama)"
                    ),
                });
            }
        },
    };
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(ModelError::Config {
            setting: url_setting,
            message: format!("`{base_url}` is not an http(s) URL"),
        });
    }
    let from_env = inputs
        .env(DEFT_MODEL_API_KEY)
        .map(|key| (key.to_owned(), DEFT_MODEL_API_KEY.to_owned()))
        .or_else(|| {
            provider.key_env().and_then(|name| {
                inputs
                    .env(name)
                    .map(|key| (key.to_owned(), name.to_owned()))
            })
        });
    let key = from_env.or(file_key);
    let key_setting = match (&key, provider.key_env()) {
        (Some((_, setting)), _) => setting.clone(),
        (None, Some(own)) => format!("{DEFT_MODEL_API_KEY} or {own}"),
        (None, None) => DEFT_MODEL_API_KEY.to_owned(),
    };
    if key.is_none() && provider != Provider::OpenAiCompatible {
        return Err(ModelError::Config {
            setting: key_setting.clone(),
            message: format!("`{provider}/{model}` needs an API key; set {key_setting}"),
        });
    }
    Ok(ModelConfig {
        provider,
        model,
        base_url: base_url.trim_end_matches('/').to_owned(),
        api_key: key.map(|(key, _)| ApiKey::new(key)),
        source,
        model_setting,
        key_setting,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(flag: Option<&str>, env: &[(&str, &str)], file: Option<&str>) -> ModelInputs {
        ModelInputs {
            flag: flag.map(str::to_owned),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            file: file.map(toml_model),
            file_label: "deft.toml".into(),
            ollama: None,
        }
    }

    /// The `[model]` table of a config file, written here without its `[model]` header.
    fn toml_model(text: &str) -> ModelFile {
        toml::from_str(text).expect("the test's TOML is valid")
    }

    fn check(inputs: ModelInputs, expect: Result<(&str, &str, &str), &str>) {
        let got = resolve(&inputs).map(|models| {
            let m = models.default;
            (m.label(), m.base_url, m.source)
        });
        match (got, expect) {
            (Ok(got), Ok(expect)) => {
                assert_eq!((got.0.as_str(), got.1.as_str(), got.2.as_str()), expect)
            }
            (Err(error), Err(expect)) => assert_eq!(error.to_string(), expect),
            (got, expect) => panic!("got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn the_flag_wins_then_deft_model_then_the_file_then_provider_keys() {
        let env = [
            (DEFT_MODEL, "openai/gpt-x"),
            (OPENAI_API_KEY, "sk-1"),
            (ANTHROPIC_API_KEY, "ak-1"),
        ];
        check(
            inputs(Some("anthropic/claude-x"), &env, None),
            Ok((
                "anthropic/claude-x",
                "https://api.anthropic.com",
                "the --model flag",
            )),
        );
        check(
            inputs(None, &env, None),
            Ok(("openai/gpt-x", "https://api.openai.com/v1", "DEFT_MODEL")),
        );
        check(
            inputs(
                None,
                &[(ANTHROPIC_API_KEY, "ak")],
                Some("name = \"openai/gpt-file\"\napi_key = \"sk-file\""),
            ),
            Ok((
                "openai/gpt-file",
                "https://api.openai.com/v1",
                "[model] name in deft.toml",
            )),
        );
        check(
            inputs(
                None,
                &[(ANTHROPIC_API_KEY, "ak"), (OPENAI_API_KEY, "sk")],
                None,
            ),
            Ok((
                "anthropic/claude-sonnet-4-5",
                "https://api.anthropic.com",
                "ANTHROPIC_API_KEY is set",
            )),
        );
        check(
            inputs(None, &[(OPENAI_API_KEY, "sk")], None),
            Ok((
                "openai/gpt-4.1",
                "https://api.openai.com/v1",
                "OPENAI_API_KEY is set",
            )),
        );
    }

    #[test]
    fn base_url_and_key_resolution() {
        let env = [
            (DEFT_MODEL, "openai-compatible/llama3.1"),
            (DEFT_MODEL_BASE_URL, "http://127.0.0.1:8080/v1/"),
        ];
        let models = resolve(&inputs(None, &env, None)).unwrap();
        assert_eq!(models.default.base_url, "http://127.0.0.1:8080/v1");
        assert_eq!(models.default.api_key, None);
        let env = [
            (DEFT_MODEL, "anthropic/c"),
            (DEFT_MODEL_API_KEY, "k-deft"),
            (ANTHROPIC_API_KEY, "k-own"),
        ];
        let models = resolve(&inputs(None, &env, Some("api_key = \"k-file\""))).unwrap();
        assert_eq!(models.default.api_key.unwrap().expose(), "k-deft");
        assert_eq!(models.default.key_setting, DEFT_MODEL_API_KEY);
        let env = [(DEFT_MODEL, "anthropic/c"), (ANTHROPIC_API_KEY, "k-own")];
        let models = resolve(&inputs(None, &env, Some("api_key = \"k-file\""))).unwrap();
        assert_eq!(
            (
                models.default.api_key.unwrap().expose(),
                models.default.key_setting.as_str()
            ),
            ("k-own", ANTHROPIC_API_KEY)
        );
        let models = resolve(&inputs(
            None,
            &[(DEFT_MODEL, "anthropic/c")],
            Some("api_key = \"k-file\"\nbase_url = \"http://127.0.0.1:1\""),
        ))
        .unwrap();
        assert_eq!(
            (
                models.default.api_key.unwrap().expose(),
                models.default.base_url.as_str()
            ),
            ("k-file", "http://127.0.0.1:1")
        );
    }

    #[test]
    fn what_is_missing_is_named() {
        check(
            inputs(None, &[], None),
            Err(
                "no model is configured; set DEFT_MODEL=PROVIDER/NAME (anthropic/…, openai/… or openai-compatible/… with DEFT_MODEL_BASE_URL) and DEFT_MODEL_API_KEY, or set ANTHROPIC_API_KEY or OPENAI_API_KEY, or run Ollama on 127.0.0.1:11434",
            ),
        );
        check(
            inputs(None, &[(DEFT_MODEL, "anthropic/c")], None),
            Err(
                "DEFT_MODEL_API_KEY or ANTHROPIC_API_KEY: `anthropic/c` needs an API key; set DEFT_MODEL_API_KEY or ANTHROPIC_API_KEY",
            ),
        );
        check(
            inputs(None, &[(DEFT_MODEL, "openai-compatible/x")], None),
            Err(
                "DEFT_MODEL_BASE_URL: `openai-compatible` needs the server's URL; set DEFT_MODEL_BASE_URL (e.g. http://127.0.0.1:11434/v1 for Ollama)",
            ),
        );
        check(
            inputs(Some("claude"), &[], None),
            Err(
                "--model: `claude` is not PROVIDER/NAME; write e.g. `anthropic/claude-sonnet-4-5` or `openai-compatible/llama3.1`",
            ),
        );
        check(
            inputs(None, &[(DEFT_MODEL, "google/gemini")], None),
            Err(
                "DEFT_MODEL: unknown provider `google`; use `anthropic`, `openai` or `openai-compatible`",
            ),
        );
        check(
            inputs(
                None,
                &[
                    (DEFT_MODEL, "openai-compatible/x"),
                    (DEFT_MODEL_BASE_URL, "127.0.0.1:1"),
                ],
                None,
            ),
            Err("DEFT_MODEL_BASE_URL: `127.0.0.1:1` is not an http(s) URL"),
        );
    }

    #[test]
    fn ollama_is_the_last_resort() {
        let mut found = inputs(None, &[], None);
        assert!(found.needs_probe());
        found.ollama = Some(OllamaFound {
            url: OLLAMA_URL.into(),
            models: vec!["qwen2.5-coder:7b".into()],
        });
        check(
            found.clone(),
            Ok((
                "openai-compatible/qwen2.5-coder:7b",
                "http://127.0.0.1:11434/v1",
                "an Ollama server answers at http://127.0.0.1:11434",
            )),
        );
        found.ollama = Some(OllamaFound {
            url: OLLAMA_URL.into(),
            models: vec![],
        });
        assert!(
            resolve(&found)
                .unwrap_err()
                .to_string()
                .contains("has no model; pull one with `ollama pull NAME`")
        );
        assert!(!inputs(None, &[(OPENAI_API_KEY, "k")], None).needs_probe());
    }

    #[test]
    fn roles_inherit_what_they_do_not_set() {
        let file = "name = \"anthropic/sonnet\"\napi_key = \"k\"\n[planner]\nname = \"anthropic/opus\"\n[executor]\nname = \"openai/gpt-mini\"\napi_key = \"sk\"";
        let models = resolve(&inputs(None, &[], Some(file))).unwrap();
        assert_eq!(
            models.for_role(ModelRole::Planner).label(),
            "anthropic/opus"
        );
        assert_eq!(
            models
                .for_role(ModelRole::Planner)
                .api_key
                .as_ref()
                .unwrap()
                .expose(),
            "k"
        );
        let executor = models.for_role(ModelRole::Executor);
        assert_eq!(
            (executor.label().as_str(), executor.base_url.as_str()),
            ("openai/gpt-mini", "https://api.openai.com/v1")
        );
        let models = resolve(&inputs(
            None,
            &[],
            Some("name = \"anthropic/sonnet\"\napi_key = \"k\""),
        ))
        .unwrap();
        assert_eq!(
            models.for_role(ModelRole::Planner).label(),
            "anthropic/sonnet"
        );
    }

    #[test]
    fn keys_never_print() {
        let key = ApiKey::new("sk-secret-123");
        assert_eq!(format!("{key:?}"), "ApiKey([redacted])");
        let models = resolve(&inputs(None, &[(OPENAI_API_KEY, "sk-secret-123")], None)).unwrap();
        assert!(!format!("{models:?}").contains("sk-secret-123"));
    }
}
