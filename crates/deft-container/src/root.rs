//! An image's unpacked root filesystem as a container's root: the engine needs an image to
//! make a container from, and deft runs the very tree `deft-images` unpacked (owners reset,
//! setuid bits and devices gone), as the bubblewrap backend does. So the container's own image
//! is small and deft's: the root's top-level links, its `/etc` copied (where the engine writes
//! `/etc/hosts` and the like, and deft its own accounts, at the start), and the directories
//! the sandbox makes itself; every other top-level entry of the root is bound read-only.

use std::io;
use std::path::{Path, PathBuf};

use deft_sandbox::SandboxError;
use sha2::{Digest as _, Sha256};

/// The most entries, and bytes, an image's `/etc` may hold to be copied.
const ETC_ENTRIES: usize = 20_000;
const ETC_BYTES: u64 = 64 * 1024 * 1024;

/// The directories a sandbox makes at the top of its root, whatever the image holds there,
/// with their modes: `/tmp`'s shows through the tmpfs over it.
const OWN_DIRS: &[(&str, u32)] = &[
    (".deft", 0o755),
    (".deft/lib", 0o755),
    ("workspace", 0o755),
    ("tmp", 0o1777),
    ("home", 0o755),
    ("home/deft", 0o700),
    ("proc", 0o555),
    ("dev", 0o755),
    ("sys", 0o555),
    ("run", 0o755),
];

/// A root filesystem, as an image of deft's and what to bind over it.
#[derive(Debug)]
pub(crate) struct Root {
    /// `localhost/deft-root:` and the start of the image's SHA-256: the same tree, the same tag.
    pub tag: String,
    pub tar: Vec<u8>,
    /// The root's top-level entries, bound read-only: (source on the host, path inside).
    pub binds: Vec<(PathBuf, String)>,
}

fn io_error(context: String) -> impl FnOnce(io::Error) -> SandboxError {
    move |source| SandboxError::Io { context, source }
}

/// Lays `rootfs` out as a [`Root`]. Links are never followed on the host: they are meant to be
/// resolved inside the container.
pub(crate) fn layout(rootfs: &Path) -> Result<Root, SandboxError> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut binds = Vec::new();
    for (dir, mode) in OWN_DIRS {
        append_dir(&mut tar, dir, *mode)?;
    }
    let mut entries: Vec<_> = std::fs::read_dir(rootfs)
        .map_err(io_error(format!(
            "reading the image's root {}",
            rootfs.display()
        )))?
        .flatten()
        .collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    let mut etc = false;
    for entry in entries {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if deft_sandbox::bwrap::SANDBOX_OWNED.contains(&name.as_str()) {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)
            .map_err(io_error(format!("reading {}", path.display())))?;
        if name == "etc" {
            if !meta.is_dir() {
                return Err(SandboxError::Unsupported(format!(
                    "the image's /etc is not a directory ({}); the container backend writes the \
                     sandbox's accounts there",
                    path.display()
                )));
            }
            copy_etc(&mut tar, &path)?;
            etc = true;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)
                .map_err(io_error(format!("reading the link {}", path.display())))?;
            append_link(&mut tar, &name, &target)?;
        } else if meta.is_dir() {
            append_dir(&mut tar, &name, 0o755)?;
            binds.push((path, format!("/{name}")));
        } else if meta.is_file() {
            append_file(&mut tar, &name, 0o644, &[])?;
            binds.push((path, format!("/{name}")));
        }
    }
    if !etc {
        append_dir(&mut tar, "etc", 0o755)?;
    }
    let tar = tar
        .into_inner()
        .map_err(io_error("writing the sandbox's root image".into()))?;
    let hash = hex::encode(Sha256::digest(&tar));
    Ok(Root {
        tag: format!("localhost/deft-root:{}", &hash[..32]),
        tar,
        binds,
    })
}

/// Copies the image's `/etc` into the tar: directories, regular files (without setuid and
/// setgid bits) and links as they are; nothing else. `ld.so.preload` is copied empty: the
/// host's loader, which starts deft's init, would otherwise load the image's library into it.
fn copy_etc(tar: &mut tar::Builder<Vec<u8>>, etc: &Path) -> Result<(), SandboxError> {
    let too_big = || {
        SandboxError::Unsupported(format!(
            "the image's /etc holds more than {ETC_ENTRIES} entries or {} MiB; the container \
             backend copies it into the sandbox's root, and refuses one this large",
            ETC_BYTES / (1024 * 1024)
        ))
    };
    append_dir(tar, "etc", 0o755)?;
    let (mut entries, mut bytes) = (0, 0);
    let mut pending = vec![(etc.to_path_buf(), "etc".to_owned())];
    while let Some((dir, inside)) = pending.pop() {
        let mut listed: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io_error(format!("reading {}", dir.display())))?
            .flatten()
            .collect();
        listed.sort_by_key(std::fs::DirEntry::file_name);
        for entry in listed {
            entries += 1;
            if entries > ETC_ENTRIES {
                return Err(too_big());
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let (path, inside) = (entry.path(), format!("{inside}/{name}"));
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let mode = {
                use std::os::unix::fs::PermissionsExt as _;
                meta.permissions().mode() & 0o1777
            };
            if meta.file_type().is_symlink() {
                if let Ok(target) = std::fs::read_link(&path) {
                    append_link(tar, &inside, &target)?;
                }
            } else if meta.is_dir() {
                append_dir(tar, &inside, mode | 0o500)?;
                pending.push((path, inside));
            } else if meta.is_file() {
                bytes += meta.len();
                if bytes > ETC_BYTES {
                    return Err(too_big());
                }
                let contents = if inside == "etc/ld.so.preload" {
                    Vec::new()
                } else {
                    // What deft cannot read, no sandbox could either.
                    match std::fs::read(&path) {
                        Ok(contents) => contents,
                        Err(_) => continue,
                    }
                };
                append_file(tar, &inside, mode & 0o777, &contents)?;
            }
        }
    }
    Ok(())
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> Result<(), SandboxError> {
    let mut header = header(tar::EntryType::Directory, mode, 0);
    tar.append_data(&mut header, path, io::empty())
        .map_err(io_error(format!(
            "adding {path} to the sandbox's root image"
        )))
}

fn append_file(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    contents: &[u8],
) -> Result<(), SandboxError> {
    let mut header = header(tar::EntryType::Regular, mode, contents.len() as u64);
    tar.append_data(&mut header, path, contents)
        .map_err(io_error(format!(
            "adding {path} to the sandbox's root image"
        )))
}

fn append_link(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    target: &Path,
) -> Result<(), SandboxError> {
    let mut header = header(tar::EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut header, path, target)
        .map_err(io_error(format!(
            "adding {path} to the sandbox's root image"
        )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_keeps_links_copies_etc_and_binds_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["usr/bin", "etc/apt", "home/someone", "var"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::fs::write(root.join("etc/os-release"), "ID=test\n").unwrap();
        std::fs::write(root.join("etc/ld.so.preload"), "/usr/lib/evil.so\n").unwrap();
        std::os::unix::fs::symlink("/proc/self/mounts", root.join("etc/mtab")).unwrap();
        let laid = layout(root).unwrap();
        let binds: Vec<&str> = laid
            .binds
            .iter()
            .map(|(_, inside)| inside.as_str())
            .collect();
        assert_eq!(binds, ["/usr", "/var"], "home is the sandbox's own");
        let mut archive = tar::Archive::new(&laid.tar[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let link = entry.link_name().unwrap().map(|l| l.display().to_string());
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            seen.push((path, link, text));
        }
        let find = |path: &str| seen.iter().find(|(p, ..)| p.trim_end_matches('/') == path);
        assert_eq!(find("bin").unwrap().1.as_deref(), Some("usr/bin"));
        assert_eq!(find("etc/os-release").unwrap().2, "ID=test\n");
        assert_eq!(find("etc/ld.so.preload").unwrap().2, "", "copied empty");
        assert_eq!(
            find("etc/mtab").unwrap().1.as_deref(),
            Some("/proc/self/mounts")
        );
        assert!(find("home/deft").is_some() && find("home/someone").is_none());
        assert_eq!(
            layout(root).unwrap().tag,
            laid.tag,
            "the same tree, the same tag"
        );
    }
}
