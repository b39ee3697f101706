//! A small Debian root filesystem for tests of image-rooted sandboxes, made by `mmdebstrap`
//! from the machine's own apt sources (the only network the tests use), once per target
//! directory: later runs find it there.

use std::path::{Path, PathBuf};

/// What the attack suite runs inside besides the essential packages.
const PACKAGES: &str = "curl,procps,python3";

/// The unpacked root filesystem, made on first use. Panics, saying what to install, when
/// `mmdebstrap` is missing: an image test that passes without an image checks nothing.
pub fn debian() -> PathBuf {
    let dir = cache_dir();
    let root = dir.join(format!("debian-{}", suite()));
    let done = dir.join(format!("debian-{}.done", suite()));
    let made = || std::fs::read_to_string(&done).is_ok_and(|packages| packages == PACKAGES);
    if made() {
        return root;
    }
    std::fs::create_dir_all(&dir).expect("the target directory is writable");
    // Test processes run side by side: one makes it, the others wait for it.
    let lock = std::fs::File::create(dir.join("debian.lock")).expect("the lock file can be made");
    lock.lock().expect("the lock is taken");
    if made() {
        return root;
    }
    let _ = std::fs::remove_dir_all(&root);
    let status = std::process::Command::new("mmdebstrap")
        .args(["--quiet", "--variant=minbase"])
        .arg(format!("--include={PACKAGES}"))
        .arg(suite())
        .arg(&root)
        .status()
        .unwrap_or_else(|error| {
            panic!("mmdebstrap cannot run ({error}); install it: apt-get install mmdebstrap")
        });
    assert!(status.success(), "mmdebstrap failed ({status})");
    std::fs::write(&done, PACKAGES).expect("the marker can be written");
    root
}

/// The release of the machine's Debian, as its apt sources name it.
fn suite() -> String {
    std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|name| name.trim_matches('"').to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "stable".to_owned())
}

/// `target/deft-test-images`, beside the test binaries' own directory.
pub fn cache_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("a test knows its binary");
    // target/debug/deps/TEST → target
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    target.join("deft-test-images")
}
