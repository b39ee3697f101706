//! Checks a build context (an uncompressed tar, as `git archive` writes) before a builder
//! unpacks it, and reads its Dockerfile.
//!
//! A builder extracts the context on its own host, so an entry must not be able to write or
//! point outside it: absolute paths and `..` are refused, and so is every symlink whose target,
//! followed through the other links of the tar, leaves the context or is absolute, and every
//! hard link to a path outside it. Device and FIFO entries are refused too: a repository has
//! no use for them, and a builder might open one.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::ImageError;

/// A Dockerfile is read whole into memory; past this it is refused rather than read.
const MAX_DOCKERFILE_BYTES: u64 = 1024 * 1024;

/// How many links one path may pass through before it counts as a loop (Linux's limit).
const MAX_LINK_HOPS: usize = 40;

/// Checks every entry of `context` and returns the text of the Dockerfile at `dockerfile`.
pub(crate) fn check(context: &[u8], dockerfile: &str) -> Result<String, ImageError> {
    let refuse = |reason: String| ImageError::Refused { reason };
    let wanted = relative(Path::new(dockerfile)).ok_or_else(|| {
        refuse(format!(
            "the Dockerfile path `{dockerfile}` must be a path inside the build context, \
             without `..`"
        ))
    })?;
    if wanted.as_os_str().is_empty() {
        return Err(refuse("the Dockerfile path is empty".to_owned()));
    }

    let mut symlinks: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut hard_links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut archive = tar::Archive::new(context);
    for entry in archive.entries().map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let kind = entry.header().entry_type();
        if is_metadata(kind) {
            continue;
        }
        let raw = entry.path().map_err(unreadable)?.into_owned();
        let path = relative(&raw).ok_or_else(|| {
            refuse(format!(
                "the build context has `{}`, which is absolute or climbs out with `..`; \
                 the context may only hold paths inside it",
                raw.display()
            ))
        })?;
        match kind {
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Directory => {}
            EntryType::Symlink | EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(unreadable)?
                    .ok_or_else(|| unreadable(std::io::Error::other("a link without a target")))?
                    .into_owned();
                if kind == EntryType::Symlink {
                    symlinks.insert(path, target);
                } else {
                    hard_links.push((path, target));
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(refuse(format!(
                    "the build context has `{}`, a device or FIFO; remove it from the repository",
                    path.display()
                )));
            }
            other => {
                return Err(refuse(format!(
                    "the build context has `{}`, of a kind of tar entry deft does not take \
                     ({other:?})",
                    path.display()
                )));
            }
        }
    }

    for (path, target) in &symlinks {
        let parent = path.parent().unwrap_or(Path::new(""));
        if let Err(escape) = resolve(&symlinks, &parent.join(target)) {
            return Err(refuse(format!(
                "`{}` in the build context is a symlink to `{}`, {escape}; replace it with \
                 what it points to, or remove it",
                path.display(),
                target.display()
            )));
        }
    }
    for (path, target) in &hard_links {
        // A hard link's target is a path of the archive, from its top.
        if let Err(escape) = resolve(&symlinks, target) {
            return Err(refuse(format!(
                "`{}` in the build context is a hard link to `{}`, {escape}; replace it with \
                 a copy, or remove it",
                path.display(),
                target.display()
            )));
        }
    }

    let resolved = resolve(&symlinks, &wanted)
        .map_err(|escape| refuse(format!("the Dockerfile `{dockerfile}` is a link {escape}")))?;
    read_file(context, &resolved)?.ok_or_else(|| {
        refuse(format!(
            "the build context has no Dockerfile at `{dockerfile}`; add one, or name the one \
             the repository has"
        ))
    })
}

/// The contents of the regular file at `path` (already resolved), if the context has one.
fn read_file(context: &[u8], path: &Path) -> Result<Option<String>, ImageError> {
    let mut archive = tar::Archive::new(context);
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let kind = entry.header().entry_type();
        if !matches!(kind, EntryType::Regular | EntryType::Continuous) {
            continue;
        }
        let entry_path = entry.path().map_err(unreadable)?;
        if relative(&entry_path).as_deref() != Some(path) {
            continue;
        }
        if entry.size() > MAX_DOCKERFILE_BYTES {
            return Err(ImageError::Refused {
                reason: format!(
                    "the Dockerfile `{}` is over {MAX_DOCKERFILE_BYTES} bytes",
                    path.display()
                ),
            });
        }
        let mut text = String::new();
        entry
            .read_to_string(&mut text)
            .map_err(|_| ImageError::Refused {
                reason: format!("the Dockerfile `{}` is not UTF-8 text", path.display()),
            })?;
        return Ok(Some(text));
    }
    Ok(None)
}

fn is_metadata(kind: EntryType) -> bool {
    matches!(
        kind,
        EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink
    )
}

fn unreadable(error: std::io::Error) -> ImageError {
    ImageError::Refused {
        reason: format!(
            "the build context is not a readable tar ({error}); pass an uncompressed tar"
        ),
    }
}

/// `path` without `.` components, or `None` when it is absolute or has a `..`.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => return None,
        }
    }
    Some(clean)
}

/// Follows `path` (relative to the top of the context) through the context's symlinks, the way
/// the kernel would once the tar is unpacked, and returns where it lands; the error says how
/// it leaves the context.
fn resolve(symlinks: &HashMap<PathBuf, PathBuf>, path: &Path) -> Result<PathBuf, &'static str> {
    let mut current: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<Component<'_>> = path.components().collect();
    let mut hops = 0;
    while let Some(component) = pending.pop_front() {
        match component {
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err("an absolute path"),
            Component::ParentDir => {
                if current.pop().is_none() {
                    return Err("which leads out of the build context");
                }
            }
            Component::Normal(part) => {
                current.push(part.to_owned());
                let here: PathBuf = current.iter().collect();
                let Some(target) = symlinks.get(&here) else {
                    continue;
                };
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err("which goes round a loop of links");
                }
                current.pop();
                for component in target.components().rev() {
                    pending.push_front(component);
                }
            }
        }
    }
    Ok(current.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Item<'a> {
        File(&'a str, &'a str),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
        Fifo(&'a str),
        /// A path written into the header as is, past the builder's own checks.
        RawFile(&'a str),
    }
    use Item::*;

    fn tar_of(items: &[Item<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for item in items {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            match *item {
                File(path, text) => {
                    header.set_size(text.len() as u64);
                    builder
                        .append_data(&mut header, path, text.as_bytes())
                        .unwrap();
                }
                Dir(path) => {
                    header.set_entry_type(EntryType::Directory);
                    header.set_size(0);
                    builder.append_data(&mut header, path, &[][..]).unwrap();
                }
                Symlink(path, target) | HardLink(path, target) => {
                    let kind = match item {
                        Symlink(..) => EntryType::Symlink,
                        _ => EntryType::Link,
                    };
                    header.set_entry_type(kind);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target).unwrap();
                }
                Fifo(path) => {
                    header.set_entry_type(EntryType::Fifo);
                    header.set_size(0);
                    builder.append_data(&mut header, path, &[][..]).unwrap();
                }
                RawFile(path) => {
                    header.set_size(0);
                    let name = &mut header.as_old_mut().name;
                    name[..path.len()].copy_from_slice(path.as_bytes());
                    header.set_cksum();
                    builder.append(&header, &[][..]).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    /// `expect` is `Ok(the Dockerfile's text)` or `Err(a part of the refusal)`.
    fn check_context(items: &[Item<'_>], dockerfile: &str, expect: Result<&str, &str>) {
        let got = check(&tar_of(items), dockerfile);
        match (got, expect) {
            (Ok(text), Ok(expected)) => assert_eq!(text, expected),
            (Err(ImageError::Refused { reason }), Err(part)) => {
                assert!(reason.contains(part), "{reason:?} lacks {part:?}")
            }
            (got, expect) => panic!("got {got:?}, expected {expect:?}"),
        }
    }

    const DOCKERFILE: Item<'static> = File("Dockerfile", "FROM a\n");

    #[test]
    fn the_dockerfile_is_found_where_named() {
        check_context(&[DOCKERFILE], "Dockerfile", Ok("FROM a\n"));
        check_context(
            &[Dir(".deft"), File(".deft/Dockerfile", "FROM b\n")],
            ".deft/Dockerfile",
            Ok("FROM b\n"),
        );
        check_context(
            &[File("./x/Dockerfile", "FROM c\n")],
            "x/./Dockerfile",
            Ok("FROM c\n"),
        );
        check_context(
            &[File("real", "FROM d\n"), Symlink("Dockerfile", "real")],
            "Dockerfile",
            Ok("FROM d\n"),
        );
        check_context(
            &[DOCKERFILE],
            "Containerfile",
            Err("no Dockerfile at `Containerfile`"),
        );
        check_context(&[DOCKERFILE], "../Dockerfile", Err("without `..`"));
        check_context(&[DOCKERFILE], "/Dockerfile", Err("without `..`"));
    }

    #[test]
    fn links_that_stay_inside_pass() {
        check_context(
            &[
                DOCKERFILE,
                Dir("a/b"),
                Symlink("a/b/up", "../.."),
                Symlink("a/sibling", "b/up/Dockerfile"),
                Symlink("dangling", "nowhere/yet"),
                HardLink("copy", "Dockerfile"),
                HardLink("a/copy", "a/b/../../Dockerfile"),
                // Read as text it climbs out; followed, `top/..` is `a`, so it lands on the top.
                Symlink("top", "a/b"),
                Symlink("x", "top/../.."),
            ],
            "Dockerfile",
            Ok("FROM a\n"),
        );
    }

    #[test]
    fn links_out_of_the_context_are_refused() {
        let refused = |link: Item<'static>, part: &str| {
            check_context(&[DOCKERFILE, link], "Dockerfile", Err(part))
        };
        refused(
            Symlink("passwd", "/etc/passwd"),
            "`passwd` in the build context is a symlink to `/etc/passwd`, an absolute path",
        );
        refused(Symlink("up", ".."), "leads out of the build context");
        refused(Symlink("a/up", "../../x"), "leads out");
        refused(
            HardLink("shadow", "/etc/shadow"),
            "a hard link to `/etc/shadow`",
        );
        refused(HardLink("x", "../outside"), "a hard link");
        refused(Symlink("loop", "loop"), "loop");
    }

    #[test]
    fn a_chain_of_links_that_escapes_together_is_refused() {
        // Each link on its own stays inside when read as text; followed, `d/s/..` is the top.
        check_context(
            &[
                DOCKERFILE,
                Dir("d"),
                Symlink("d/s", "../x"),
                Symlink("l", "d/s/../.."),
            ],
            "Dockerfile",
            Err("`l` in the build context is a symlink"),
        );
        // Down in the tree, climbing one step past the top.
        check_context(
            &[DOCKERFILE, Symlink("b/out", "../..")],
            "Dockerfile",
            Err("`b/out`"),
        );
    }

    #[test]
    fn absolute_and_climbing_entries_and_fifos_are_refused() {
        check_context(
            &[DOCKERFILE, RawFile("/etc/cron.d/x")],
            "Dockerfile",
            Err("`/etc/cron.d/x`, which is absolute"),
        );
        check_context(
            &[DOCKERFILE, RawFile("a/../../x")],
            "Dockerfile",
            Err("climbs out"),
        );
        check_context(
            &[DOCKERFILE, Fifo("pipe")],
            "Dockerfile",
            Err("`pipe`, a device or FIFO"),
        );
    }

    #[test]
    fn garbage_is_not_a_context() {
        let got = check(
            b"not a tar at all, clearly not a tar, not one bit",
            "Dockerfile",
        );
        assert!(matches!(got, Err(ImageError::Refused { .. })), "{got:?}");
    }
}
