//! A task's files on the host: its workspace (the clones), the base commits recorded beside it
//! (`ID.bases.json`) and its sandbox's directory (`ID.sandbox`). They are given back when the
//! task can no longer run again, and the workspaces of idle tasks (completed, their pull
//! requests still open, so feedback may come) are kept within a disk budget, oldest first: a
//! later feedback round clones again from the task's branch, which holds all its work.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use deft_core::{PullRequestStatus, Task, TaskId, TaskState};

/// What happens to a task's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It may run now or again with what is only here (queued, running, waiting for its
    /// owner with uncommitted work): untouched.
    Keep,
    /// Completed and pushed, its pull requests open: kept while the budget allows.
    Idle,
    /// It can never run again (gone, cancelled, every pull request merged or closed).
    Remove,
}

/// What becomes of the files of `task` (`None`: the task no longer exists).
pub fn fate(task: Option<&Task>) -> Fate {
    let Some(task) = task else {
        return Fate::Remove;
    };
    match task.state() {
        TaskState::Cancelled => Fate::Remove,
        TaskState::Completed
            if !task.pull_requests.is_empty()
                && task
                    .pull_requests
                    .iter()
                    .all(|pr| pr.status != PullRequestStatus::Open) =>
        {
            Fate::Remove
        }
        TaskState::Completed => Fate::Idle,
        TaskState::Queued | TaskState::InProgress | TaskState::NeedsAttention => Fate::Keep,
    }
}

/// The directory of every task's files.
#[derive(Debug, Clone)]
pub struct Workspaces {
    root: PathBuf,
}

/// One task's workspace found on the disk.
#[derive(Debug, Clone)]
pub struct Found {
    pub task: TaskId,
    /// Bytes its files take (workspace and sandbox directory), links not followed.
    pub bytes: u64,
    /// When its workspace last changed: the oldest idle one goes first.
    pub modified: SystemTime,
}

impl Workspaces {
    pub fn new(root: impl Into<PathBuf>) -> Workspaces {
        Workspaces { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The task's workspace: one directory per task, a clone per repository inside.
    pub fn workspace(&self, id: &TaskId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// Where the base commits of the task's clones are kept: beside its workspace, never in it.
    pub fn bases_file(&self, id: &TaskId) -> PathBuf {
        self.root.join(format!("{}.bases.json", id.as_str()))
    }

    /// The task's private repositories, one per clone (`deft_forge::private`): beside the
    /// directory of workspaces, never inside it, since pooled sandboxes mount that directory
    /// before they are given a task.
    pub fn private_dir(&self, id: &TaskId) -> PathBuf {
        let parent = self.root.parent().unwrap_or(&self.root);
        parent.join("private-repos").join(id.as_str())
    }

    /// The private repository for the clone named `clone` in the task's workspace.
    pub fn private_repo(&self, id: &TaskId, clone: &str) -> PathBuf {
        self.private_dir(id).join(format!("{clone}.git"))
    }

    /// The task's sandbox's own directory (its proxy socket).
    pub fn sandbox_dir(&self, id: &TaskId) -> PathBuf {
        self.root.join(format!("{}.sandbox", id.as_str()))
    }

    /// Deletes the task's workspace and sandbox directory, and its base commits too unless
    /// `keep_bases` (a workspace given back for the budget is cloned again later, and judged
    /// against the same base). Links inside are removed, never followed.
    pub fn remove(&self, id: &TaskId, keep_bases: bool) -> std::io::Result<()> {
        let mut paths = vec![
            self.workspace(id),
            self.sandbox_dir(id),
            self.private_dir(id),
        ];
        if !keep_bases {
            paths.push(self.bases_file(id));
        }
        for path in paths {
            let removed = match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(error),
            };
            match removed {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        Ok(())
    }

    /// The tasks that have files here: workspaces, or side files left without one.
    pub fn tasks(&self) -> std::io::Result<Vec<TaskId>> {
        let mut tasks = HashSet::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        for entry in entries {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let stem = name
                .strip_suffix(".bases.json")
                .or_else(|| name.strip_suffix(".sandbox"))
                .unwrap_or(name);
            if is_task_id(stem) {
                tasks.insert(TaskId::from_stored(stem.to_owned()));
            }
        }
        let mut tasks: Vec<TaskId> = tasks.into_iter().collect();
        tasks.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(tasks)
    }

    /// The task's workspace as it is on the disk, if it has one.
    pub fn found(&self, id: &TaskId) -> Option<Found> {
        let workspace = self.workspace(id);
        let meta = std::fs::symlink_metadata(&workspace).ok()?;
        if !meta.is_dir() {
            return None;
        }
        Some(Found {
            task: id.clone(),
            bytes: disk_usage(&workspace) + disk_usage(&self.sandbox_dir(id)),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    /// Bytes every task's files take here.
    pub fn total_bytes(&self) -> u64 {
        disk_usage(&self.root)
    }
}

/// Whether a name is a task id (a UUID in text form), not something else kept here.
fn is_task_id(name: &str) -> bool {
    name.len() == 36
        && name.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Bytes the files under `path` take on the disk, links counted as themselves, never followed;
/// what cannot be read counts as nothing.
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let mut pending = vec![path.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        total += meta.blocks() * 512;
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            pending.extend(entries.flatten().map(|entry| entry.path()));
        }
    }
    total
}

/// The idle workspaces to give back so that all of them fit in `budget` bytes: the least
/// recently changed first.
pub fn over_budget(mut idle: Vec<Found>, budget: u64) -> Vec<Found> {
    let mut total: u64 = idle.iter().map(|found| found.bytes).sum();
    idle.sort_by_key(|found| found.modified);
    let mut evicted = Vec::new();
    for found in idle {
        if total <= budget {
            break;
        }
        total = total.saturating_sub(found.bytes);
        evicted.push(found);
    }
    evicted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(n: u64, bytes: u64) -> Found {
        Found {
            task: TaskId::generate(),
            bytes,
            modified: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(n),
        }
    }

    #[test]
    fn the_oldest_idle_workspaces_go_until_the_rest_fit() {
        let (old, middle, new) = (found(1, 300), found(2, 300), found(3, 300));
        let evicted = over_budget(vec![new.clone(), old.clone(), middle.clone()], 400);
        let ids: Vec<&str> = evicted.iter().map(|f| f.task.as_str()).collect();
        assert_eq!(ids, [old.task.as_str(), middle.task.as_str()]);
        assert!(over_budget(vec![old, middle, new], 900).is_empty());
    }

    #[test]
    fn removing_a_workspace_never_follows_a_link_out_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "host file").unwrap();
        let workspaces = Workspaces::new(dir.path().join("workspaces"));
        let id = TaskId::generate();
        let workspace = workspaces.workspace(&id);
        std::fs::create_dir_all(workspace.join("repo")).unwrap();
        std::os::unix::fs::symlink(&outside, workspace.join("repo/escape")).unwrap();
        std::fs::write(workspaces.bases_file(&id), "{}").unwrap();
        std::fs::create_dir(workspaces.sandbox_dir(&id)).unwrap();
        assert_eq!(workspaces.tasks().unwrap(), std::slice::from_ref(&id));
        assert!(workspaces.found(&id).unwrap().bytes > 0);

        workspaces.remove(&id, true).unwrap();
        assert!(!workspace.exists() && !workspaces.sandbox_dir(&id).exists());
        assert!(
            workspaces.bases_file(&id).exists(),
            "kept for a later clone"
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("keep")).unwrap(),
            "host file"
        );
        workspaces.remove(&id, false).unwrap();
        assert!(workspaces.tasks().unwrap().is_empty());
    }
}
