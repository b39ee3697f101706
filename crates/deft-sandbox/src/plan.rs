//! What the host-side launcher is told, on its standard input, so that nothing secret is ever
//! on a command line.

use std::path::PathBuf;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LaunchPlan {
    pub bwrap: PathBuf,
    /// `cgroup.procs` files to join before starting bubblewrap.
    pub cgroup_procs: Vec<PathBuf>,
    /// bubblewrap's arguments, the init and the command included.
    pub args: Vec<String>,
    /// The command's environment, secrets included; passed to the init on its standard input.
    pub env: Vec<(String, String)>,
    /// The host user bubblewrap runs as, when deft is root (see [`crate::user`]): the launcher
    /// makes the bind sources reachable for it, then becomes it.
    #[serde(default)]
    pub run_as: Option<crate::user::HostUser>,
}

/// What deft asks of a resident init, one message per `SOCK_SEQPACKET` datagram on its
/// control socket (its standard input).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToInit {
    /// Take the task's workspace, `/.deft/stage/NAME`, as `/workspace`, then hide the rest of
    /// the stage and lower the rlimits to the task's.
    Attach {
        workspace: String,
        nproc: u64,
        fsize: u64,
        cpu: u64,
    },
    /// Run a command; its standard output and error are the one descriptor sent with this.
    Exec {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: String,
    },
    /// Run a long-running program (an MCP server) whose standard input, output and error are
    /// the three descriptors sent with this, in that order; answered when it ends.
    Spawn {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: String,
    },
    /// Say what the sandbox's cgroup counted and enforces ([`Usage`]): a container's init
    /// reads it from inside, where deft on the host may not reach it.
    Usage,
}

/// What a resident init answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromInit {
    /// Started, waiting for its workspace.
    Ready,
    /// Attached.
    Done,
    /// The command ended, and everything it started was killed.
    Exited(i32),
    Signaled(i32),
    Failed(String),
    Usage(Usage),
}

/// What the cgroup a resident init runs in has counted and enforces, as the init reads it
/// under `/sys/fs/cgroup`; `None` where it could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Processes the kernel killed for memory.
    pub oom_kills: Option<u64>,
    /// Forks the process limit refused.
    pub pids_refused: Option<u64>,
    /// The memory limit in bytes (`None` also when there is none).
    pub memory_max: Option<u64>,
    /// The process limit (`None` also when there is none).
    pub pids_max: Option<u64>,
}

/// The largest message either side sends (a command with its environment, in JSON).
pub const MAX_MESSAGE: usize = 192 * 1024;

/// The environment as the init reads it: `KEY=VALUE` entries separated by NUL bytes.
pub fn encode_env(env: &[(String, String)]) -> Vec<u8> {
    let mut blob = Vec::new();
    for (key, value) in env {
        blob.extend_from_slice(key.as_bytes());
        blob.push(b'=');
        blob.extend_from_slice(value.as_bytes());
        blob.push(0);
    }
    blob
}

pub fn decode_env(blob: &[u8]) -> Vec<(String, String)> {
    blob.split(|byte| *byte == 0)
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| {
            let text = String::from_utf8_lossy(entry);
            let (key, value) = text.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_round_trips_with_any_value() {
        let env = vec![
            ("A".to_owned(), "x=y z".to_owned()),
            ("B".to_owned(), "line\nnext".to_owned()),
        ];
        assert_eq!(decode_env(&encode_env(&env)), env);
    }
}
