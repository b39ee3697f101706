//! The network namespace a sandboxed program lives in, by path, so that a tool deft drives can
//! join it: the image builder's `RUN` steps then have what a task's commands have, loopback and
//! the egress proxy's bridge, and nothing else.

use std::path::PathBuf;

/// The network namespace of the first process at or below `pid` (the launcher deft started)
/// that is not in deft's own: `/proc/PID/ns/net`, valid while that process lives.
pub fn namespace_below(pid: u32) -> Option<PathBuf> {
    let ours = std::fs::read_link("/proc/self/ns/net").ok()?;
    let mut pending = vec![pid];
    // A launcher, bubblewrap, its init: a few levels, never a tree to walk far.
    for _ in 0..64 {
        let pid = pending.pop()?;
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        match std::fs::read_link(&path) {
            Ok(namespace) if namespace != ours => return Some(path),
            Ok(_) => pending.extend(children(pid)),
            Err(_) => continue,
        }
    }
    None
}

/// The children of `pid`, from each of its threads' `children` file.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}
