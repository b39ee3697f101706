//! Unpacks an exported root filesystem (a tar stream from the builder) into a directory of the
//! cache, on a blocking thread.
//!
//! The tar comes from a build the repository controls, so it is untrusted: every entry goes
//! through the `tar` crate's `unpack_in`, which refuses `..` and checks, after resolving the
//! links already on disk, that the entry's parent stays inside the target (a link in the image
//! is created, never followed out). Ownership is not restored (everything belongs to deft's
//! user), setuid and setgid bits are dropped, extended attributes are not restored, device
//! nodes and FIFOs are skipped, and the number of entries and their total size are capped.
//! Directories end at least `u+rwx,o+x`, so the sandbox (another host user) can traverse them
//! and deft can later delete them; files keep their modes.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, Bytes};
use tar::EntryType;
use tokio::sync::mpsc;

use crate::ImageError;

/// Caps on one image's root filesystem.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub entries: u64,
    pub bytes: u64,
}

pub(crate) const LIMITS: Limits = Limits {
    entries: 2_000_000,
    bytes: 32 * 1024 * 1024 * 1024,
};

/// The bits never restored: setuid and setgid.
const STRIPPED_BITS: u32 = 0o6000;

/// Unpacks `reader` into `target` (which must not exist yet) and returns the total size of the
/// entries' contents. `cancelled` stops it between entries.
pub(crate) fn unpack(
    reader: impl Read,
    target: &Path,
    limits: Limits,
    cancelled: &AtomicBool,
) -> Result<u64, ImageError> {
    let failed = |reason: String| ImageError::Unpack {
        path: target.to_owned(),
        reason,
    };
    std::fs::create_dir(target).map_err(ImageError::io(target))?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_ownerships(false);
    archive.set_preserve_permissions(true);
    archive.set_mask(STRIPPED_BITS);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);

    // Directories are made writable while their entries arrive and given their own modes at
    // the end, as `tar` itself does, so that a read-only directory can still be filled.
    let mut directory_modes: HashMap<PathBuf, u32> = HashMap::new();
    let mut count: u64 = 0;
    let mut total: u64 = 0;
    for entry in archive
        .entries()
        .map_err(|error| failed(error.to_string()))?
    {
        if cancelled.load(Ordering::Relaxed) {
            return Err(failed("the preparation was cancelled".to_owned()));
        }
        let mut entry = entry.map_err(|error| failed(error.to_string()))?;
        count += 1;
        if count > limits.entries {
            return Err(failed(format!(
                "the image has more than {} files and directories, deft's limit for an image",
                limits.entries
            )));
        }
        total = total.saturating_add(entry.size());
        if total > limits.bytes {
            return Err(failed(format!(
                "the image's files add up to more than {} GiB, deft's limit for an image",
                limits.bytes >> 30
            )));
        }
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::Char | EntryType::Block | EntryType::Fifo) {
            continue;
        }
        let relative = entry
            .path()
            .map_err(|error| failed(error.to_string()))?
            .into_owned();
        entry
            .unpack_in(target)
            .map_err(|error| failed(format!("`{}`: {error}", relative.display())))?;
        if kind == EntryType::Directory {
            let mode = entry.header().mode().unwrap_or(0o755);
            let path = inside(target, &relative);
            std::fs::set_permissions(
                &path,
                std::fs::Permissions::from_mode(0o700 | (mode & 0o777)),
            )
            .map_err(ImageError::io(&path))?;
            directory_modes.insert(path, mode);
        }
    }
    settle_directories(target, &directory_modes)?;
    Ok(total)
}

/// Where `unpack_in` put an entry: the target joined with its normal components.
fn inside(target: &Path, relative: &Path) -> PathBuf {
    let mut path = target.to_owned();
    for component in relative.components() {
        if let std::path::Component::Normal(part) = component {
            path.push(part);
        }
    }
    path
}

/// Gives every directory under `root` (found by walking it, never following a link) its mode
/// from the tar, or 0755 for those the tar did not list, stripped of setuid and setgid, with
/// at least `u+rwx` and `o+x`.
fn settle_directories(root: &Path, modes: &HashMap<PathBuf, u32>) -> Result<(), ImageError> {
    let mut stack = vec![root.to_owned()];
    let mut directories = Vec::new();
    while let Some(directory) = stack.pop() {
        for child in std::fs::read_dir(&directory).map_err(ImageError::io(&directory))? {
            let child = child.map_err(ImageError::io(&directory))?;
            let kind = child.file_type().map_err(ImageError::io(&child.path()))?;
            if kind.is_dir() {
                stack.push(child.path());
            }
        }
        directories.push(directory);
    }
    for directory in directories {
        let mode = match modes.get(&directory) {
            Some(mode) => mode & 0o7777 & !STRIPPED_BITS,
            None => 0o755,
        };
        std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(mode | 0o701))
            .map_err(ImageError::io(&directory))?;
    }
    Ok(())
}

/// The exported tar as it arrives from the builder, for the blocking thread that unpacks it.
pub(crate) struct ChannelReader {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    pub(crate) fn new(chunks: mpsc::Receiver<io::Result<Bytes>>) -> ChannelReader {
        ChannelReader {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buffer.len().min(self.current.len());
        buffer[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Sets the flag when dropped, so that a dropped preparation stops its unpacking thread.
pub(crate) struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn header(kind: EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    fn image(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn unpack_into(tar: &[u8], limits: Limits) -> (tempfile::TempDir, Result<u64, ImageError>) {
        let dir = tempfile::tempdir().unwrap();
        let result = unpack(
            tar,
            &dir.path().join("rootfs"),
            limits,
            &AtomicBool::new(false),
        );
        (dir, result)
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn modes_are_kept_but_setuid_is_dropped_and_directories_opened() {
        let tar = image(|b| {
            b.append_data(&mut header(EntryType::Directory, 0o555, 0), "usr/", &[][..])
                .unwrap();
            b.append_data(
                &mut header(EntryType::Directory, 0o700, 0),
                "root/",
                &[][..],
            )
            .unwrap();
            b.append_data(
                &mut header(EntryType::Directory, 0o1777, 0),
                "tmp/",
                &[][..],
            )
            .unwrap();
            b.append_data(
                &mut header(EntryType::Regular, 0o4755, 2),
                "usr/su",
                &b"#!"[..],
            )
            .unwrap();
            b.append_data(
                &mut header(EntryType::Regular, 0o600, 1),
                "root/secret",
                &b"s"[..],
            )
            .unwrap();
            b.append_data(
                &mut header(EntryType::Regular, 0o755, 1),
                "implicit/dir/tool",
                &b"t"[..],
            )
            .unwrap();
            b.append_data(&mut header(EntryType::Char, 0o666, 0), "dev-null", &[][..])
                .unwrap();
            b.append_data(&mut header(EntryType::Fifo, 0o666, 0), "fifo", &[][..])
                .unwrap();
            let mut link = header(EntryType::Symlink, 0o777, 0);
            b.append_link(&mut link, "etc-link", "/etc").unwrap();
        });
        let (dir, result) = unpack_into(&tar, LIMITS);
        assert_eq!(result.unwrap(), 4);
        let root = dir.path().join("rootfs");
        assert_eq!(mode(&root.join("usr")), 0o755);
        assert_eq!(mode(&root.join("root")), 0o701);
        assert_eq!(mode(&root.join("tmp")), 0o1777);
        assert_eq!(mode(&root.join("usr/su")), 0o755);
        assert_eq!(mode(&root.join("root/secret")), 0o600);
        assert_eq!(mode(&root.join("implicit/dir")), 0o755);
        assert!(!root.join("dev-null").exists());
        assert!(!root.join("fifo").exists());
        assert_eq!(
            std::fs::read_link(root.join("etc-link")).unwrap(),
            Path::new("/etc")
        );
    }

    #[test]
    fn an_entry_through_a_link_out_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_owned();
        let tar = image(|b| {
            let mut link = header(EntryType::Symlink, 0o777, 0);
            b.append_link(&mut link, "escape", &target).unwrap();
            b.append_data(
                &mut header(EntryType::Regular, 0o644, 1),
                "escape/planted",
                &b"x"[..],
            )
            .unwrap();
        });
        let (_dir, result) = unpack_into(&tar, LIMITS);
        assert!(
            matches!(result, Err(ImageError::Unpack { .. })),
            "{result:?}"
        );
        assert!(!outside.path().join("planted").exists());
    }

    #[test]
    fn a_hard_link_out_is_refused() {
        let tar = image(|b| {
            let mut link = header(EntryType::Link, 0o644, 0);
            b.append_link(&mut link, "passwd", "/etc/passwd").unwrap();
        });
        let (dir, result) = unpack_into(&tar, LIMITS);
        assert!(
            matches!(result, Err(ImageError::Unpack { .. })),
            "{result:?}"
        );
        assert!(!dir.path().join("rootfs/passwd").exists());
    }

    #[test]
    fn the_limits_are_named_when_passed() {
        let tar = image(|b| {
            for name in ["a", "b", "c"] {
                b.append_data(
                    &mut header(EntryType::Regular, 0o644, 4),
                    name,
                    &b"data"[..],
                )
                .unwrap();
            }
        });
        let (_dir, result) = unpack_into(
            &tar,
            Limits {
                entries: 2,
                bytes: 1 << 20,
            },
        );
        let message = result.unwrap_err().to_string();
        assert!(
            message.contains("more than 2 files and directories"),
            "{message}"
        );
        let (_dir, result) = unpack_into(
            &tar,
            Limits {
                entries: 10,
                bytes: 8,
            },
        );
        assert!(
            matches!(result, Err(ImageError::Unpack { reason, .. }) if reason.contains("more than 0 GiB"))
        );
    }

    #[test]
    fn the_channel_reader_reads_across_chunks() {
        let (sender, receiver) = mpsc::channel(4);
        sender.try_send(Ok(Bytes::from_static(b"hel"))).unwrap();
        sender.try_send(Ok(Bytes::new())).unwrap();
        sender.try_send(Ok(Bytes::from_static(b"lo"))).unwrap();
        drop(sender);
        let mut text = String::new();
        ChannelReader::new(receiver)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello");
    }
}
