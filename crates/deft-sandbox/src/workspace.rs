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

/// Makes the directories above `path` that do not exist yet, each resolved beneath the root.
pub fn create_parents(root: &Path, path: &str) -> Result<(), SandboxError> {
    let relative = relative(path)?;
    let Some(parent) = Path::new(&relative).parent() else {
        return Ok(());
    };
    let mut so_far = std::path::PathBuf::new();
    for component in parent.components() {
        so_far.push(component);
        let text = so_far.to_string_lossy().into_owned();
        match open_beneath(root, &text, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()) {
            Ok(_) => continue,
            Err(SandboxError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let (dir, name) = match so_far.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(dir) => (
                open_beneath(
                    root,
                    &dir.to_string_lossy(),
                    OFlags::PATH | OFlags::DIRECTORY,
                    Mode::empty(),
                )?,
                so_far.file_name().unwrap_or_default().to_owned(),
            ),
            None => (
                std::fs::File::from(
                    rustix::fs::open(
                        root,
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| SandboxError::io(root.display().to_string())(e.into()))?,
                ),
                so_far.as_os_str().to_owned(),
            ),
        };
        rustix::fs::mkdirat(&dir, name.as_os_str(), Mode::from_raw_mode(0o755))
            .map_err(|e| SandboxError::io(text.clone())(e.into()))?;
        if let Some(user) = crate::user::sandbox_user()? {
            rustix::fs::chownat(
                &dir,
                name.as_os_str(),
                Some(rustix::fs::Uid::from_raw(user.uid)),
                Some(rustix::fs::Gid::from_raw(user.gid)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| SandboxError::io(text.clone())(e.into()))?;
        }
    }
    Ok(())
}

/// The entries of a directory beneath the root: (name, is a directory), sorted.
pub fn list(root: &Path, path: &str) -> Result<Vec<(String, bool)>, SandboxError> {
    let dir = if path.trim_end_matches('/') == "/workspace" || path.is_empty() || path == "." {
        std::fs::File::from(
            rustix::fs::open(
                root,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| SandboxError::io(root.display().to_string())(e.into()))?,
        )
    } else {
        open_beneath(
            root,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )?
    };
    let mut entries = Vec::new();
    let reader = rustix::fs::Dir::read_from(&dir)
        .map_err(|e| SandboxError::io(path.to_owned())(e.into()))?;
    for entry in reader {
        let entry = entry.map_err(|e| SandboxError::io(path.to_owned())(e.into()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        entries.push((name, entry.file_type() == rustix::fs::FileType::Directory));
    }
    entries.sort();
    Ok(entries)
}

/// Whether `path` beneath the root is a directory (`None`: it does not exist).
pub fn is_dir(root: &Path, path: &str) -> Result<Option<bool>, SandboxError> {
    if path.trim_end_matches('/') == "/workspace" || path.is_empty() || path == "." {
        return Ok(Some(true));
    }
    match open_beneath(root, path, OFlags::PATH, Mode::empty()) {
        Ok(file) => {
            let stat = rustix::fs::fstat(&file)
                .map_err(|e| SandboxError::io(path.to_owned())(e.into()))?;
            Ok(Some(
                rustix::fs::FileType::from_raw_mode(stat.st_mode)
                    == rustix::fs::FileType::Directory,
            ))
        }
        Err(SandboxError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// The most bytes the host reads of one file a command may have written.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Opens a regular file beneath the root: without blocking (a FIFO with no writer, a device),
/// without following a last link, and refusing anything but a regular file, checked on the
/// descriptor itself so that a swap between a check and the open changes nothing.
pub fn open_regular(root: &Path, path: &str, flags: OFlags) -> Result<std::fs::File, SandboxError> {
    // openat2 refuses a mode without O_CREAT.
    let mode = if flags.contains(OFlags::CREATE) {
        Mode::from_raw_mode(0o644)
    } else {
        Mode::empty()
    };
    let file = match open_beneath(
        root,
        path,
        flags | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY,
        mode,
    ) {
        // ELOOP, read as leaving the workspace: a last component that is a link (which
        // O_NOFOLLOW refuses) is told apart from a path that really leads out.
        Err(SandboxError::OutsideWorkspace { path: outside }) => {
            // A link whose target stays beneath the root; one leading out is said to.
            let link = open_beneath(root, path, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())
                .ok()
                .and_then(|file| rustix::fs::fstat(&file).ok())
                .is_some_and(|stat| {
                    rustix::fs::FileType::from_raw_mode(stat.st_mode)
                        == rustix::fs::FileType::Symlink
                })
                && open_beneath(root, path, OFlags::PATH, Mode::empty()).is_ok();
            return Err(if link {
                SandboxError::NotRegularFile {
                    path: path.to_owned(),
                    kind: "symbolic link",
                }
            } else {
                SandboxError::OutsideWorkspace { path: outside }
            });
        }
        // ENXIO: a FIFO or socket with no one at the other end.
        Err(SandboxError::Io { source, .. }) if source.raw_os_error() == Some(libc_enxio()) => {
            return Err(SandboxError::NotRegularFile {
                path: path.to_owned(),
                kind: "FIFO or socket",
            });
        }
        other => other?,
    };
    let stat = rustix::fs::fstat(&file).map_err(|e| SandboxError::io(path.to_owned())(e.into()))?;
    let kind = match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
        rustix::fs::FileType::RegularFile => return Ok(file),
        rustix::fs::FileType::Directory => "directory",
        rustix::fs::FileType::Fifo => "FIFO",
        rustix::fs::FileType::Socket => "socket",
        rustix::fs::FileType::CharacterDevice | rustix::fs::FileType::BlockDevice => "device",
        rustix::fs::FileType::Symlink => "symbolic link",
        rustix::fs::FileType::Unknown => "special file",
    };
    Err(SandboxError::NotRegularFile {
        path: path.to_owned(),
        kind,
    })
}

fn libc_enxio() -> i32 {
    rustix::io::Errno::NXIO.raw_os_error()
}

/// [`open_regular`] for reading.
pub fn open_to_read(root: &Path, path: &str) -> Result<std::fs::File, SandboxError> {
    open_regular(root, path, OFlags::RDONLY)
}

/// Reads a regular file beneath the root, at most [`MAX_FILE_BYTES`].
pub fn read(root: &Path, path: &str) -> Result<Vec<u8>, SandboxError> {
    read_capped(root, path, MAX_FILE_BYTES)
}

/// Reads a regular file beneath the root, refusing one over `limit` bytes (the file may grow
/// while it is read: no more than `limit` is ever read).
pub fn read_capped(root: &Path, path: &str, limit: u64) -> Result<Vec<u8>, SandboxError> {
    let file = open_regular(root, path, OFlags::RDONLY)?;
    let mut contents = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut contents)
        .map_err(SandboxError::io(path.to_owned()))?;
    let bytes = contents.len() as u64;
    if bytes > limit {
        return Err(SandboxError::TooLarge {
            path: path.to_owned(),
            bytes,
            limit,
        });
    }
    Ok(contents)
}

/// Writes a regular file beneath the workspace (made if missing). What is there must be a
/// regular file: a FIFO or a device is refused, never written to.
pub fn write(root: &Path, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
    let mut file = open_regular(root, path, OFlags::WRONLY | OFlags::CREATE)?;
    // The sandbox's user (when deft is root) goes on changing what the tools write.
    if let Some(user) = crate::user::sandbox_user()? {
        rustix::fs::fchown(
            &file,
            Some(rustix::fs::Uid::from_raw(user.uid)),
            Some(rustix::fs::Gid::from_raw(user.gid)),
        )
        .map_err(|e| SandboxError::io(path.to_owned())(e.into()))?;
    }
    file.set_len(0).map_err(SandboxError::io(path.to_owned()))?;
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

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn parents_are_made_and_listed_beneath_the_root() {
        let dir = tempfile::tempdir().unwrap();
        create_parents(dir.path(), "a/b/c.txt").unwrap();
        write(dir.path(), "a/b/c.txt", b"x").unwrap();
        assert_eq!(list(dir.path(), "a").unwrap(), vec![("b".to_owned(), true)]);
        assert_eq!(
            list(dir.path(), "/workspace").unwrap(),
            vec![("a".to_owned(), true)]
        );
        assert_eq!(is_dir(dir.path(), "a/b/c.txt").unwrap(), Some(false));
        assert_eq!(is_dir(dir.path(), "nope").unwrap(), None);
        std::os::unix::fs::symlink("/etc", dir.path().join("out")).unwrap();
        assert!(matches!(
            create_parents(dir.path(), "out/x/y"),
            Err(SandboxError::OutsideWorkspace { .. })
        ));
        assert!(matches!(
            list(dir.path(), "out"),
            Err(SandboxError::OutsideWorkspace { .. })
        ));
    }
}
