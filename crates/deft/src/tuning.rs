//! The variables that tune a running deft (the timings `DEFT_*_MS`, `DEFT_SANDBOX_POOL`), read
//! and checked once when a command starts: a value that is not a whole number in range stops
//! the command, naming the variable and what it takes, rather than being ignored.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::bail;

use crate::env_vars::{
    DEFT_LEASE_MS, DEFT_MCP_CALL_TIMEOUT_MS, DEFT_SANDBOX_POOL, DEFT_SHUTDOWN_GRACE_MS,
    DEFT_WORKSPACE_SWEEP_MS,
};

/// The tuning a running deft uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// How long a stopping deft lets a running step go on.
    pub shutdown_grace: Duration,
    /// How often workspaces are looked at for giving back.
    pub workspace_sweep: Duration,
    /// How long one MCP tool call may take.
    pub mcp_call_timeout: Duration,
    /// Sandboxes `deft serve` and `deft worker` keep started ahead of tasks.
    pub sandbox_pool: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        let scheduler = deft_scheduler::SchedulerConfig::default();
        Tuning {
            lease: scheduler.lease,
            shutdown_grace: scheduler.shutdown_grace,
            workspace_sweep: scheduler.workspace_sweep,
            mcp_call_timeout: Duration::from_millis(120_000),
            sandbox_pool: deft_sandbox::bwrap::DEFAULT_POOL,
        }
    }
}

static TUNING: OnceLock<Tuning> = OnceLock::new();

impl Tuning {
    /// Reads the variables from `lookup` (the environment, in the binary).
    pub fn read(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Tuning> {
        let defaults = Tuning::default();
        let millis = |name: &str, default: Duration, least: u64| -> anyhow::Result<Duration> {
            let Some(text) = lookup(name) else {
                return Ok(default);
            };
            match text.trim().parse::<u64>() {
                Ok(ms) if ms >= least => Ok(Duration::from_millis(ms)),
                _ => bail!(
                    "{name} is `{}`; give a whole number of milliseconds, at least {least} (unset, it is {})",
                    text.chars().take(40).collect::<String>(),
                    default.as_millis()
                ),
            }
        };
        let pool = match lookup(DEFT_SANDBOX_POOL) {
            None => defaults.sandbox_pool,
            Some(text) => text.trim().parse().map_err(|_| {
                anyhow::anyhow!(
                    "{DEFT_SANDBOX_POOL} is `{}`; set it to a number of sandboxes (0 for none; unset, it is {})",
                    text.chars().take(40).collect::<String>(),
                    defaults.sandbox_pool
                )
            })?,
        };
        let least_lease = u64::try_from(deft_scheduler::MIN_LEASE.as_millis()).unwrap_or(u64::MAX);
        Ok(Tuning {
            lease: millis(DEFT_LEASE_MS, defaults.lease, least_lease)?,
            shutdown_grace: millis(DEFT_SHUTDOWN_GRACE_MS, defaults.shutdown_grace, 0)?,
            workspace_sweep: millis(DEFT_WORKSPACE_SWEEP_MS, defaults.workspace_sweep, 10)?,
            mcp_call_timeout: millis(DEFT_MCP_CALL_TIMEOUT_MS, defaults.mcp_call_timeout, 1)?,
            sandbox_pool: pool,
        })
    }

    /// Reads the environment's variables once for the whole process, refusing a bad value.
    pub fn load() -> anyhow::Result<Tuning> {
        if let Some(tuning) = TUNING.get() {
            return Ok(*tuning);
        }
        let tuning = Tuning::read(|name| std::env::var(name).ok())?;
        Ok(*TUNING.get_or_init(|| tuning))
    }
}

#[cfg(test)]
mod tests {
    use super::Tuning;
    use std::time::Duration;

    fn read(pairs: &[(&str, &str)]) -> anyhow::Result<Tuning> {
        Tuning::read(|name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn unset_variables_are_the_defaults_and_set_ones_are_read() {
        assert_eq!(read(&[]).unwrap(), Tuning::default());
        let tuning = read(&[("DEFT_LEASE_MS", "1500"), ("DEFT_SHUTDOWN_GRACE_MS", "0")]).unwrap();
        assert_eq!(tuning.lease, Duration::from_millis(1500));
        assert_eq!(tuning.shutdown_grace, Duration::ZERO);
    }

    #[test]
    fn a_bad_value_is_refused_naming_the_variable_and_what_it_takes() {
        for (name, value) in [
            ("DEFT_LEASE_MS", "abc"),
            ("DEFT_LEASE_MS", "50"),
            ("DEFT_SHUTDOWN_GRACE_MS", "-1"),
            ("DEFT_WORKSPACE_SWEEP_MS", "1.5"),
            ("DEFT_MCP_CALL_TIMEOUT_MS", ""),
        ] {
            let error = read(&[(name, value)]).unwrap_err().to_string();
            assert!(
                error.starts_with(name) && error.contains("whole number of milliseconds"),
                "{error}"
            );
        }
        let error = read(&[("DEFT_SANDBOX_POOL", "two")])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("DEFT_SANDBOX_POOL is `two`") && error.contains("0 for none"),
            "{error}"
        );
        assert_eq!(read(&[("DEFT_SANDBOX_POOL", "0")]).unwrap().sandbox_pool, 0);
    }
}
