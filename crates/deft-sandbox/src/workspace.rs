//! Host-side access to a workspace that the sandbox's commands may have filled with symlinks:
//! every path is resolved beneath the workspace by the kernel (`openat2` with
//! `RESOLVE_BENEATH`), so a link pointing out of it is refused, not followed.

use std::io::{Read as _, Write as _};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::SandboxError;

/// A path as the agent gives it (`src/lib.rs` or `/workspace/src/lib.rs`), made relative.
pub fn relative(path: &str) -> Result<String, SandboxError> {
    let outside = || SandboxError::OutsideWorkspace {
        path: path.to_owned(),
    };
    let relative = if let Some(rest) = path.strip_prefix("/workspace") {
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(outside());
        }
        rest.trim_start_matches('/')
    } else if path.starts_with('/') {
        return Err(outside());
    } else {
        path
    };
    if relative.is_empty() {
        return Err(outside());
    }
    Ok(relative.to_owned())
}

fn open_beneath(
    root: &Path,
    path: &str,
    flags: OFlags,
    mode: Mode,
) -> Result<std::fs::File, SandboxError> {
    let relative = relative(path)?;
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SandboxError::io(format!("opening the workspace {}", root.display()))(e.into()))?;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(
        &root_fd,
        relative.as_str(),
        flags | OFlags::CLOEXEC,
        mode,
        resolve,
    ) {
        Ok(fd) => Ok(std::fs::File::from(fd)),
        // EXDEV: the path (or a link in it) leads out of the workspace.
        Err(rustix::io::Errno::XDEV) | Err(rustix::io::Errno::LOOP) => {
            Err(SandboxError::OutsideWorkspace {
                path: path.to_owned(),
            })
        }
        Err(errno) => Err(SandboxError::io(path.to_owned())(errno.into())),
    }
}

pub fn read(root: &Path, path: &str) -> Result<Vec<u8>, SandboxError> {
    let mut file = open_beneath(root, path, OFlags::RDONLY, Mode::empty())?;
    let mut contents = Vec::new();
    file.read_to_end(&mut contents)
        .map_err(SandboxError::io(path.to_owned()))?;
    Ok(contents)
}

/// Writes a file beneath the workspace.
pub fn write(root: &Path, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC;
    let mut file = open_beneath(root, path, flags, Mode::from_raw_mode(0o644))?;
    file.write_all(contents)
        .map_err(SandboxError::io(path.to_owned()))
}

/// The bytes the tree takes (links counted as themselves).
pub fn size(root: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        total += metadata.len();
        if metadata.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            pending.extend(entries.flatten().map(|entry| entry.path()));
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_relative_or_refused() {
        assert_eq!(relative("src/lib.rs").unwrap(), "src/lib.rs");
        assert_eq!(relative("/workspace/src/lib.rs").unwrap(), "src/lib.rs");
        for outside in ["/etc/passwd", "/workspaces/x", "/workspace", ""] {
            assert!(relative(outside).is_err(), "{outside:?}");
        }
    }

    #[test]
    fn links_out_of_the_workspace_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, "host secret").unwrap();
        let workspace = dir.path().join("workspace");
        std::fs::create_dir(&workspace).unwrap();
        std::os::unix::fs::symlink(&secret, workspace.join("link")).unwrap();
        std::os::unix::fs::symlink("../secret.txt", workspace.join("relative-link")).unwrap();
        for link in ["link", "relative-link", "../secret.txt"] {
            assert!(
                matches!(
                    read(&workspace, link),
                    Err(SandboxError::OutsideWorkspace { .. })
                ),
                "{link}"
            );
            assert!(
                matches!(
                    write(&workspace, link, b"x"),
                    Err(SandboxError::OutsideWorkspace { .. })
                ),
                "{link}"
            );
        }
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret");
        write(&workspace, "inside.txt", b"ok").unwrap();
        assert_eq!(read(&workspace, "/workspace/inside.txt").unwrap(), b"ok");
    }
}
