//! What this host can enforce, probed once at start: bubblewrap and its namespaces, cgroups,
//! and whether deft may run sandboxes as a uid of their own.

use std::path::{Path, PathBuf};

use crate::Limits;
use crate::cgroup::Cgroups;

/// The outcome of the probe.
#[derive(Debug, Clone)]
pub struct HostSupport {
    /// The bubblewrap version, or why it cannot be used.
    pub bwrap: Result<String, String>,
    pub cgroups: Cgroups,
    /// deft runs as root: commands run as root's uid in a user namespace of their own, with
    /// no capabilities, and what only root may read is hidden from them.
    pub as_root: bool,
}

impl HostSupport {
    pub async fn probe() -> HostSupport {
        HostSupport {
            bwrap: probe_bwrap().await,
            cgroups: Cgroups::probe(),
            as_root: rustix::process::geteuid().is_root(),
        }
    }

    /// Says why a sandbox with `limits` cannot be enforced here, if it cannot.
    pub fn refusal(&self, limits: &Limits) -> Option<String> {
        if let Err(why) = &self.bwrap {
            return Some(why.clone());
        }
        if limits.memory_bytes > 0 && !self.cgroups.limits_memory() {
            return Some(format!(
                "no writable cgroup memory controller ({}), so the memory limit cannot be enforced; run deft as root or delegate a cgroup to it",
                self.cgroups.describe()
            ));
        }
        None
    }

    /// One line per fact, for `deft doctor`.
    pub fn describe(&self) -> String {
        let bwrap = match &self.bwrap {
            Ok(version) => version.clone(),
            Err(why) => format!("unusable: {why}"),
        };
        format!(
            "{bwrap}; cgroups: {}; {}",
            self.cgroups.describe(),
            if self.as_root {
                "running as root"
            } else {
                "running unprivileged"
            }
        )
    }
}

async fn probe_bwrap() -> Result<String, String> {
    let version = tokio::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .await
        .map_err(|_| {
            "bubblewrap is not installed; install it with `apt-get install bubblewrap`".to_owned()
        })?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let true_path = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/usr/bin/true");
    let run = tokio::process::Command::new("bwrap")
        .args([
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
        ])
        .args([
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--",
            true_path,
        ])
        .env_clear()
        .output()
        .await
        .map_err(|error| format!("bubblewrap does not start: {error}"))?;
    if !run.status.success() {
        return Err(format!(
            "bubblewrap cannot create namespaces here ({}); enable unprivileged user namespaces (`sysctl kernel.unprivileged_userns_clone=1`) or run deft as root",
            String::from_utf8_lossy(&run.stderr).trim()
        ));
    }
    kernel_features()?;
    Ok(version)
}

/// What the resident sandbox's init needs of the kernel, tried here where a missing one is
/// a clear refusal rather than a failed command: `openat2` (Linux 5.6), the mount API's
/// `open_tree` (5.2) and the mount id in `statx` (5.8).
fn kernel_features() -> Result<(), String> {
    let too_old = |what: &str, error: rustix::io::Errno| {
        format!(
            "this kernel lacks {what} ({error}), which the sandbox needs to protect each \
             repository's `.git`; run deft on Linux 5.8 or later"
        )
    };
    rustix::fs::openat2(
        rustix::fs::CWD,
        "/",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
        rustix::fs::ResolveFlags::NO_SYMLINKS,
    )
    .map_err(|error| too_old("openat2", error))?;
    rustix::mount::open_tree(
        rustix::fs::CWD,
        "/",
        rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|error| too_old("open_tree", error))?;
    let statx = rustix::fs::statx(
        rustix::fs::CWD,
        "/",
        rustix::fs::AtFlags::empty(),
        rustix::fs::StatxFlags::MNT_ID,
    )
    .map_err(|error| too_old("statx", error))?;
    if !rustix::fs::StatxFlags::from_bits_retain(statx.stx_mask)
        .contains(rustix::fs::StatxFlags::MNT_ID)
    {
        return Err(too_old("the mount id in statx", rustix::io::Errno::NOSYS));
    }
    Ok(())
}

/// Toolchains that live under a home and are mounted alone, read-only, at the same path.
pub fn home_toolchains() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let homes: Vec<PathBuf> = std::env::var_os("HOME")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    for home in homes {
        // `.cargo/bin` alone: `.cargo` also holds registry tokens (`credentials.toml`).
        for name in [".cargo/bin", ".rustup", ".pyenv", ".nvm"] {
            let path = home.join(name);
            if path.is_dir() {
                found.push(path);
            }
        }
    }
    for (var, below) in [
        ("CARGO_HOME", "bin"),
        ("RUSTUP_HOME", ""),
        ("PYENV_ROOT", ""),
    ] {
        if let Some(path) = std::env::var_os(var).map(|p| PathBuf::from(p).join(below))
            && path.is_dir()
            && !found.contains(&path)
        {
            found.push(path);
        }
    }
    found
}
