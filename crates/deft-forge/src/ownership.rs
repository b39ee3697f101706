//! Who owns a task's clone. When deft runs as root its sandboxes run as a dedicated user
//! (`deft_sandbox::user`), while the jail's git writes as root: after each jailed command
//! that may have written, the clone is given back to the sandbox's user, so the task's own
//! commands can go on changing it. The walk never follows a link: it opens each directory
//! beneath the one before with `O_NOFOLLOW` and changes owners with `AT_SYMLINK_NOFOLLOW`.

use std::path::Path;
use std::sync::OnceLock;

use rustix::fs::{AtFlags, Mode, OFlags};

static OWNER: OnceLock<(u32, u32)> = OnceLock::new();

/// Sets, once per process, the user and group a task's clones belong to.
pub fn set_clone_owner(uid: u32, gid: u32) {
    let _ = OWNER.set((uid, gid));
}

/// Whether clones change hands around the jail's git (deft is root, sandboxes are not).
pub(crate) fn owned() -> bool {
    OWNER.get().is_some()
}

/// Gives `dir` and everything under it to the clones' owner, when one is set.
pub(crate) fn give_tree(dir: &Path) -> std::io::Result<()> {
    match OWNER.get().copied() {
        Some((uid, gid)) => chown_tree(dir, uid, gid),
        None => Ok(()),
    }
}

/// Takes `dir` and everything under it back for deft (root) while the jail's git works on it:
/// the jail's root may not enter what belongs to another user (it holds no capability).
pub(crate) fn take_tree(dir: &Path) -> std::io::Result<()> {
    if !owned() {
        return Ok(());
    }
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    chown_tree(dir, uid, gid)
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let (uid, gid) = (
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    );
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Ok(());
    };
    let parent = rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    give_entry(&parent, name, uid, gid, 0)
}

/// Deeper than this a tree is not walked: git makes nothing so deep.
const MAX_DEPTH: usize = 256;

fn give_entry(
    parent: &rustix::fd::OwnedFd,
    name: &std::ffi::OsStr,
    uid: Option<rustix::fs::Uid>,
    gid: Option<rustix::fs::Gid>,
    depth: usize,
) -> std::io::Result<()> {
    rustix::fs::chownat(parent, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    let dir = match rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(dir) => dir,
        // Not a directory (or a link to one): nothing below it.
        Err(rustix::io::Errno::NOTDIR) | Err(rustix::io::Errno::LOOP) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    let entries: Vec<std::ffi::OsString> = rustix::fs::Dir::read_from(&dir)?
        .filter_map(Result::ok)
        .map(|entry| {
            use std::os::unix::ffi::OsStrExt as _;
            std::ffi::OsStr::from_bytes(entry.file_name().to_bytes()).to_owned()
        })
        .filter(|name| name != "." && name != "..")
        .collect();
    for entry in entries {
        give_entry(&dir, &entry, uid, gid, depth + 1)?;
    }
    Ok(())
}
