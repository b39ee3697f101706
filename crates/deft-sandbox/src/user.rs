//! The host user a sandbox's processes run as. deft often runs as root, and bubblewrap maps the
//! sandbox's user to the user that starts it: started by root, a sandboxed process was host root
//! inside its namespaces (the kernel then accepted its writes to `/proc/sys`). So when deft is
//! root, the launcher starts bubblewrap as a dedicated system user, `deft-sandbox` (made on
//! first use, or the one `DEFT_SANDBOX_USER` names), which owns nothing else on the host. A
//! deft that is not root gives its sandboxes its own, already unprivileged, user.

use std::sync::OnceLock;

use crate::SandboxError;

/// The default dedicated user.
pub const DEFAULT_USER: &str = "deft-sandbox";
/// The variable naming another existing user for sandboxes.
pub const USER_VARIABLE: &str = "DEFT_SANDBOX_USER";

/// A host user and group, by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostUser {
    pub uid: u32,
    pub gid: u32,
}

/// The user sandboxes run as when deft is root (`None` when deft is not root: its own user is
/// unprivileged already). Resolved once per process.
pub fn sandbox_user() -> Result<Option<HostUser>, SandboxError> {
    static RESOLVED: OnceLock<Result<Option<HostUser>, String>> = OnceLock::new();
    RESOLVED
        .get_or_init(resolve)
        .clone()
        .map_err(SandboxError::Unsupported)
}

fn resolve() -> Result<Option<HostUser>, String> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let named = std::env::var(USER_VARIABLE)
        .ok()
        .filter(|name| !name.is_empty());
    let name = named.clone().unwrap_or_else(|| DEFAULT_USER.to_owned());
    if let Some(user) = lookup(&name) {
        return checked(&name, user);
    }
    if named.is_some() {
        return Err(format!(
            "{USER_VARIABLE} names `{name}`, which is not a user of this host; make it (`useradd --system {name}`) or unset {USER_VARIABLE}"
        ));
    }
    // As a package's install script would: a system user with no home and no shell.
    let made = std::process::Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            DEFAULT_USER,
        ])
        .output();
    match made {
        Ok(output) if output.status.success() || lookup(DEFAULT_USER).is_some() => {}
        Ok(output) => {
            return Err(format!(
                "cannot make the system user `{DEFAULT_USER}` that sandboxes run as when deft is root: {}; make it (`useradd --system --user-group {DEFAULT_USER}`), or run deft as an unprivileged user",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Err(error) => {
            return Err(format!(
                "cannot run `useradd` to make the system user `{DEFAULT_USER}` that sandboxes run as when deft is root ({error}); make the user yourself, or run deft as an unprivileged user"
            ));
        }
    }
    match lookup(DEFAULT_USER) {
        Some(user) => checked(DEFAULT_USER, user),
        None => Err(format!(
            "`useradd` did not make `{DEFAULT_USER}`; make it yourself (`useradd --system --user-group {DEFAULT_USER}`)"
        )),
    }
}

fn checked(name: &str, user: HostUser) -> Result<Option<HostUser>, String> {
    if user.uid == 0 || user.gid == 0 {
        return Err(format!(
            "`{name}` is root's uid or gid; sandboxes need a user that owns nothing: set {USER_VARIABLE} to another"
        ));
    }
    Ok(Some(user))
}

/// `name`'s uid and gid from the account database.
fn lookup(name: &str) -> Option<HostUser> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(HostUser { uid, gid })
    })
}

/// Gives `path` to the sandbox's user, when there is one (a file or directory deft made where
/// the sandbox must write). Links are not followed.
pub fn give(path: &std::path::Path) -> Result<(), SandboxError> {
    let Some(user) = sandbox_user()? else {
        return Ok(());
    };
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)).map_err(SandboxError::io(
        format!("giving {} to the sandbox's user", path.display()),
    ))
}
