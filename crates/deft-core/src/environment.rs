//! A user's sandbox settings (SPEC §3, §5 "MCP"): the network level and allow-list, environment
//! variables and the MCP configuration, each validated into a type that can only hold what the
//! sandbox can enforce. Every refusal names the field and says how to fix it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde_json::Value;

use crate::ValidationError;

/// How far the sandbox may reach, with the exact strings of the SPEC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkLevel {
    /// Only the forge: GitHub's hosts, or nothing for the local forge.
    Connections,
    /// Connections plus the package registries and tool hosts of the seed document.
    Common,
    /// Anything.
    Open,
    /// Connections plus the user's allow-list.
    Custom,
}

impl NetworkLevel {
    pub const ALL: [NetworkLevel; 4] = [
        NetworkLevel::Connections,
        NetworkLevel::Common,
        NetworkLevel::Open,
        NetworkLevel::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkLevel::Connections => "connections",
            NetworkLevel::Common => "common",
            NetworkLevel::Open => "open",
            NetworkLevel::Custom => "custom",
        }
    }

    pub fn parse(text: &str, field: &str) -> Result<NetworkLevel, ValidationError> {
        NetworkLevel::ALL.into_iter().find(|level| level.as_str() == text).ok_or_else(|| {
            ValidationError::new(
                field,
                format!(
                    "unknown network level `{text}`; use one of `connections`, `common`, `open`, `custom`"
                ),
            )
        })
    }
}

/// One entry of a custom allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AllowRule {
    /// `api.example.com`: that host only (or that IP address).
    Host(String),
    /// `.example.com`: the domain and every subdomain.
    Domain(String),
}

impl AllowRule {
    /// Parses one entry as a person writes it. Host names are case-insensitive and kept lowercase.
    pub fn parse(entry: &str, field: &str) -> Result<AllowRule, ValidationError> {
        let bad = |why: String| ValidationError::new(field, why);
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(bad("empty entry; write a host such as `api.example.com` or a domain such as `.example.com`".into()));
        }
        if entry.contains("://") {
            return Err(bad(format!(
                "`{entry}` has a scheme; write the host name alone, such as `api.example.com`"
            )));
        }
        if entry.contains('/') {
            return Err(bad(format!(
                "`{entry}` has a path; the allow-list matches host names only"
            )));
        }
        if let Some(rest) = entry.strip_prefix("*.") {
            return Err(bad(format!(
                "`{entry}` uses a wildcard; write `.{rest}` for a domain and all its subdomains"
            )));
        }
        let bracketless = entry.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bracketless.parse::<IpAddr>() {
            return Ok(AllowRule::Host(ip.to_string()));
        }
        if entry.contains(':') {
            return Err(bad(format!(
                "`{entry}` has a port; the allow-list matches host names on any port"
            )));
        }
        let (domain, name) = match entry.strip_prefix('.') {
            Some(name) => (true, name),
            None => (false, entry),
        };
        let name = name.to_ascii_lowercase();
        validate_host_name(&name)
            .map_err(|why| bad(format!("`{entry}` is not a host name: {why}")))?;
        if domain && !name.contains('.') {
            return Err(bad(format!(
                "`{entry}` would allow a whole top-level domain; name a registered domain such as `.example.com`"
            )));
        }
        Ok(if domain {
            AllowRule::Domain(name)
        } else {
            AllowRule::Host(name)
        })
    }

    /// Whether a connection to `host` is allowed by this rule.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self {
            AllowRule::Host(name) => host == *name,
            AllowRule::Domain(name) => {
                host == *name
                    || (host.len() > name.len()
                        && host.ends_with(name.as_str())
                        && host.as_bytes()[host.len() - name.len() - 1] == b'.')
            }
        }
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowRule::Host(name) => f.write_str(name),
            AllowRule::Domain(name) => write!(f, ".{name}"),
        }
    }
}

fn validate_host_name(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (two dots in a row, or a trailing dot)".into());
        }
        if label.len() > 63 {
            return Err(format!("the label `{label}` is longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "the label `{label}` may hold only letters, digits and `-`"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the label `{label}` starts or ends with `-`"));
        }
    }
    Ok(())
}

/// The network level with its allow-list. The list is used by `custom` only, so it is refused
/// with any other level rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub level: NetworkLevel,
    pub allow: Vec<AllowRule>,
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        NetworkPolicy {
            level: NetworkLevel::Connections,
            allow: Vec::new(),
        }
    }
}

impl NetworkPolicy {
    pub fn new(level: NetworkLevel, entries: &[String]) -> Result<NetworkPolicy, ValidationError> {
        if level != NetworkLevel::Custom && !entries.is_empty() {
            return Err(ValidationError::new(
                "network.allow",
                format!(
                    "an allow-list applies only to the `custom` level, not `{}`; set the level to `custom` or leave the list empty",
                    level.as_str()
                ),
            ));
        }
        let mut allow = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let rule = AllowRule::parse(entry, &format!("network.allow[{index}]"))?;
            if !allow.contains(&rule) {
                allow.push(rule);
            }
        }
        Ok(NetworkPolicy { level, allow })
    }

    pub fn allow_strings(&self) -> Vec<String> {
        self.allow.iter().map(ToString::to_string).collect()
    }
}

/// Checks an environment variable or secret name: what a shell accepts as a variable name.
pub fn validate_env_name(name: &str, field: &str) -> Result<(), ValidationError> {
    let mut bytes = name.bytes();
    let valid = match bytes.next() {
        Some(first) => {
            (first.is_ascii_alphabetic() || first == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }
        None => false,
    };
    if !valid || name.len() > 128 {
        return Err(ValidationError::new(
            field,
            format!(
                "`{name}` is not a valid variable name; use letters, digits and `_`, not starting with a digit, at most 128 characters"
            ),
        ));
    }
    Ok(())
}

/// Environment variables set in every sandbox process of the user's tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvVars(BTreeMap<String, String>);

impl EnvVars {
    pub fn new(vars: BTreeMap<String, String>) -> Result<EnvVars, ValidationError> {
        for (name, value) in &vars {
            validate_env_name(name, &format!("env.{name}"))?;
            if value.contains('\0') {
                return Err(ValidationError::new(
                    format!("env.{name}"),
                    "the value contains a NUL byte, which no process environment can hold",
                ));
            }
        }
        // Every command a task runs carries the variables to its sandbox, in a message of at
        // most `SANDBOX_MESSAGE` bytes: past the budget, every task would fail, so the
        // variables are refused here, for the API and the CLI as for the web form.
        let json_len = |text: &str| serde_json::to_string(text).map_or(text.len(), |q| q.len());
        let size: usize = vars
            .iter()
            .map(|(name, value)| json_len(name) + json_len(value) + 2)
            .sum();
        if size > EnvVars::BUDGET {
            let largest = vars
                .iter()
                .max_by_key(|(_, value)| value.len())
                .map(|(name, _)| name.as_str())
                .unwrap_or_default();
            return Err(ValidationError::new(
                format!("env.{largest}"),
                format!(
                    "the variables would take {size} bytes, over the {} they may take of the {} bytes a task's sandbox accepts with each command, so every task would fail; shorten the largest value, or put the data in a file in the repository and name the file in the variable",
                    EnvVars::BUDGET,
                    EnvVars::SANDBOX_MESSAGE
                ),
            ));
        }
        Ok(EnvVars(vars))
    }

    /// What a task's sandbox accepts with each command, its environment included.
    pub const SANDBOX_MESSAGE: usize = 196_608;
    /// Of [`EnvVars::SANDBOX_MESSAGE`], what a person's variables may take; the rest is the
    /// command itself and deft's own variables.
    pub const BUDGET: usize = 128 * 1024;

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0
    }
}

/// One local (stdio) MCP server, as in the seed's configuration format.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct McpServer {
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// `{"mcpServers": {NAME: {"command", "args", "env"}}}`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpConfig {
    pub servers: BTreeMap<String, McpServer>,
}

impl McpConfig {
    /// Validates a configuration of the seed's shape. Unknown keys are errors rather than
    /// ignored, so that a typo (`"arg"`) does not start a server without its arguments.
    pub fn from_json(value: &Value) -> Result<McpConfig, ValidationError> {
        let root = value.as_object().ok_or_else(|| {
            ValidationError::new("mcp", "must be an object such as `{\"mcpServers\": {}}`")
        })?;
        if let Some(key) = root.keys().find(|key| *key != "mcpServers") {
            return Err(ValidationError::new(
                format!("mcp.{key}"),
                "unknown key; the configuration holds only `mcpServers`",
            ));
        }
        let Some(servers) = root.get("mcpServers") else {
            return Ok(McpConfig::default());
        };
        let servers = servers.as_object().ok_or_else(|| {
            ValidationError::new("mcp.mcpServers", "must be an object of servers by name")
        })?;
        let mut config = McpConfig::default();
        for (name, server) in servers {
            let field = format!("mcp.mcpServers.{name}");
            validate_server_name(name, &field)?;
            config
                .servers
                .insert(name.clone(), parse_server(server, &field)?);
        }
        Ok(config)
    }

    pub fn to_json(&self) -> Value {
        let servers: serde_json::Map<String, Value> = self
            .servers
            .iter()
            .map(|(name, server)| {
                (
                    name.clone(),
                    serde_json::to_value(server).expect("plain strings serialize"),
                )
            })
            .collect();
        serde_json::json!({ "mcpServers": servers })
    }
}

fn validate_server_name(name: &str, field: &str) -> Result<(), ValidationError> {
    // Tools are offered as `mcp__SERVER__TOOL`, so a name with `__` would be ambiguous.
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.contains("__");
    if valid {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("server name `{name}` must be 1-64 letters, digits, `-` or `_`, without `__`"),
        ))
    }
}

fn parse_server(value: &Value, field: &str) -> Result<McpServer, ValidationError> {
    let object = value.as_object().ok_or_else(|| {
        ValidationError::new(field, "must be an object with `command`, `args` and `env`")
    })?;
    for key in object.keys() {
        match key.as_str() {
            "command" | "args" | "env" => {}
            "url" | "type" | "transport" | "headers" => {
                return Err(ValidationError::new(
                    format!("{field}.{key}"),
                    "remote MCP servers are not supported yet; only local servers started with a `command` are",
                ));
            }
            _ => {
                return Err(ValidationError::new(
                    format!("{field}.{key}"),
                    "unknown key; a server has `command`, `args` and `env`",
                ));
            }
        }
    }
    let command = match object.get("command") {
        Some(Value::String(command)) if !command.trim().is_empty() => command.clone(),
        Some(_) => {
            return Err(ValidationError::new(
                format!("{field}.command"),
                "must be a non-empty string naming the program to run",
            ));
        }
        None => {
            return Err(ValidationError::new(
                format!("{field}.command"),
                "is missing; name the program that starts the server, such as `npx`",
            ));
        }
    };
    let args = match object.get("args") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    ValidationError::new(format!("{field}.args[{index}]"), "must be a string")
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ValidationError::new(
                format!("{field}.args"),
                "must be an array of strings",
            ));
        }
    };
    let env = match object.get("env") {
        None => BTreeMap::new(),
        Some(Value::Object(vars)) => {
            let mut env = BTreeMap::new();
            for (name, value) in vars {
                let var_field = format!("{field}.env.{name}");
                validate_env_name(name, &var_field)?;
                let value = value
                    .as_str()
                    .ok_or_else(|| ValidationError::new(&var_field, "must be a string"))?;
                env.insert(name.clone(), value.to_owned());
            }
            env
        }
        Some(_) => {
            return Err(ValidationError::new(
                format!("{field}.env"),
                "must be an object of variable names to strings",
            ));
        }
    };
    Ok(McpServer { command, args, env })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn variables_too_large_for_a_sandbox_are_refused_naming_the_largest() {
        let mut vars = BTreeMap::new();
        vars.insert("SMALL".to_owned(), "x".to_owned());
        vars.insert("HUGE".to_owned(), "y".repeat(EnvVars::BUDGET));
        let error = EnvVars::new(vars.clone()).unwrap_err();
        assert_eq!(error.field, "env.HUGE");
        assert!(
            error.message.contains("shorten the largest value"),
            "{error:?}"
        );
        vars.insert("HUGE".to_owned(), "y".repeat(EnvVars::BUDGET / 2));
        assert!(EnvVars::new(vars).is_ok());
    }

    fn check_rule(entry: &str, expect: Result<&str, &str>) {
        let got = AllowRule::parse(entry, "network.allow[0]")
            .map(|rule| rule.to_string())
            .map_err(|error| error.to_string());
        assert_eq!(
            got.as_deref().map_err(String::as_str),
            expect,
            "entry {entry:?}"
        );
    }

    #[test]
    fn allow_list_entries() {
        check_rule("api.example.com", Ok("api.example.com"));
        check_rule(" API.Example.COM ", Ok("api.example.com"));
        check_rule(".example.com", Ok(".example.com"));
        check_rule("10.0.0.7", Ok("10.0.0.7"));
        check_rule("[::1]", Ok("::1"));
        check_rule(
            "https://api.example.com",
            Err(
                "network.allow[0]: `https://api.example.com` has a scheme; write the host name alone, such as `api.example.com`",
            ),
        );
        check_rule(
            "*.example.com",
            Err(
                "network.allow[0]: `*.example.com` uses a wildcard; write `.example.com` for a domain and all its subdomains",
            ),
        );
        check_rule(
            "example.com:443",
            Err(
                "network.allow[0]: `example.com:443` has a port; the allow-list matches host names on any port",
            ),
        );
        check_rule(
            "exa mple.com",
            Err(
                "network.allow[0]: `exa mple.com` is not a host name: the label `exa mple` may hold only letters, digits and `-`",
            ),
        );
        check_rule(
            "a..b",
            Err(
                "network.allow[0]: `a..b` is not a host name: it has an empty label (two dots in a row, or a trailing dot)",
            ),
        );
        check_rule(
            ".com",
            Err(
                "network.allow[0]: `.com` would allow a whole top-level domain; name a registered domain such as `.example.com`",
            ),
        );
        check_rule(
            "",
            Err(
                "network.allow[0]: empty entry; write a host such as `api.example.com` or a domain such as `.example.com`",
            ),
        );
    }

    #[test]
    fn host_rules_match_only_that_host_and_domain_rules_match_subdomains() {
        let host = AllowRule::parse("api.example.com", "f").unwrap();
        assert!(host.matches("api.example.com"));
        assert!(host.matches("API.example.com."));
        assert!(!host.matches("www.api.example.com"));
        assert!(!host.matches("example.com"));
        let domain = AllowRule::parse(".example.com", "f").unwrap();
        assert!(domain.matches("example.com"));
        assert!(domain.matches("a.b.example.com"));
        assert!(!domain.matches("badexample.com"));
        assert!(!domain.matches("example.com.evil.net"));
    }

    #[test]
    fn allow_list_only_with_custom_level() {
        let entries = vec!["api.example.com".to_owned(), "api.example.com".to_owned()];
        let policy = NetworkPolicy::new(NetworkLevel::Custom, &entries).unwrap();
        assert_eq!(policy.allow_strings(), vec!["api.example.com"]);
        let error = NetworkPolicy::new(NetworkLevel::Open, &entries).unwrap_err();
        assert_eq!(error.field, "network.allow");
        let error = NetworkPolicy::new(NetworkLevel::Custom, &["ok.com".into(), "bad/".into()])
            .unwrap_err();
        assert_eq!(error.field, "network.allow[1]");
        let error = NetworkLevel::parse("internet", "network.level").unwrap_err();
        assert_eq!(
            error.to_string(),
            "network.level: unknown network level `internet`; use one of `connections`, `common`, `open`, `custom`"
        );
    }

    #[test]
    fn env_names() {
        assert!(validate_env_name("DATABASE_URL", "env").is_ok());
        assert!(validate_env_name("_x1", "env").is_ok());
        for bad in ["", "1ABC", "A-B", "A B", "Ä"] {
            assert!(
                validate_env_name(bad, "env").is_err(),
                "{bad:?} should be refused"
            );
        }
        let vars = BTreeMap::from([("OK".to_owned(), "a\0b".to_owned())]);
        assert_eq!(EnvVars::new(vars).unwrap_err().field, "env.OK");
    }

    fn check_mcp(config: Value, expect: Result<Value, &str>) {
        let got = McpConfig::from_json(&config)
            .map(|c| c.to_json())
            .map_err(|e| e.to_string());
        assert_eq!(
            got.as_ref().map_err(String::as_str),
            expect.as_ref().map_err(|e| *e)
        );
    }

    #[test]
    fn mcp_configuration_of_the_seed_shape() {
        check_mcp(
            json!({"mcpServers": {"aws-knowledge": {"command": "uvx", "args": ["fastmcp", "run"], "env": {}}}}),
            Ok(
                json!({"mcpServers": {"aws-knowledge": {"command": "uvx", "args": ["fastmcp", "run"], "env": {}}}}),
            ),
        );
        check_mcp(
            json!({"mcpServers": {"s": {"command": "x", "env": {"SECRET_KEY": "${my_secret_key}"}}}}),
            Ok(
                json!({"mcpServers": {"s": {"command": "x", "args": [], "env": {"SECRET_KEY": "${my_secret_key}"}}}}),
            ),
        );
        check_mcp(json!({}), Ok(json!({"mcpServers": {}})));
        check_mcp(
            json!({"mcpServers": {"github": {"args": []}}}),
            Err(
                "mcp.mcpServers.github.command: is missing; name the program that starts the server, such as `npx`",
            ),
        );
        check_mcp(
            json!({"mcpServers": {"github": {"command": "x", "arg": []}}}),
            Err("mcp.mcpServers.github.arg: unknown key; a server has `command`, `args` and `env`"),
        );
        check_mcp(
            json!({"mcpServers": {"remote": {"url": "https://mcp.example.com"}}}),
            Err(
                "mcp.mcpServers.remote.url: remote MCP servers are not supported yet; only local servers started with a `command` are",
            ),
        );
        check_mcp(
            json!({"servers": {}}),
            Err("mcp.servers: unknown key; the configuration holds only `mcpServers`"),
        );
        check_mcp(
            json!({"mcpServers": {"a__b": {"command": "x"}}}),
            Err(
                "mcp.mcpServers.a__b: server name `a__b` must be 1-64 letters, digits, `-` or `_`, without `__`",
            ),
        );
        check_mcp(
            json!({"mcpServers": {"s": {"command": "x", "args": ["ok", 3]}}}),
            Err("mcp.mcpServers.s.args[1]: must be a string"),
        );
        check_mcp(
            json!([]),
            Err("mcp: must be an object such as `{\"mcpServers\": {}}`"),
        );
    }
}
