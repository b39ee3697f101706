//! The suite shipped in `evals/suite` is sound: for every task, its check fails on the
//! repository as its setup leaves it, and passes once the task's reference solution
//! (`solution.patch`) is applied. Each check runs as `deft eval` runs it: in a fresh sandbox
//! with no network, from a copy of the suite's files beside the repository.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::DEFT;

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../evals/suite")
}

/// Runs `script` in a fresh sandbox whose workspace is `workspace`; its exit code and output.
fn sandboxed(data: &Path, workspace: &Path, script: &str) -> (i32, String) {
    let output = Command::new(DEFT)
        .args([
            "sandbox",
            "run",
            "--network",
            "connections",
            "--timeout",
            "300",
        ])
        .arg("--data-dir")
        .arg(data)
        .arg("--workspace")
        .arg(workspace)
        .args(["--", "/bin/sh", "-c", script])
        .env_remove("DEFT_CONFIG")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn every_task_fails_its_check_untouched_and_passes_it_with_its_solution() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let probe = dir.path().join("probe");
    std::fs::create_dir(&probe).unwrap();
    let (status, _) = sandboxed(&data, &probe, "command -v rustc");
    let rustc = status == 0;
    let mut names: Vec<String> = std::fs::read_dir(suite())
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_dir())
        .map(|entry| entry.file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() >= 12, "the suite has {} tasks", names.len());
    let mut checked = 0;
    for name in &names {
        let task = suite().join(name);
        for file in ["setup.sh", "task.md", "check.sh", "solution.patch"] {
            assert!(task.join(file).is_file(), "{name} has no {file}");
        }
        if name.starts_with("rs-") && !rustc {
            #[allow(
                clippy::print_stderr,
                reason = "a task that could not be checked is said, never passed over"
            )]
            {
                eprintln!(
                    "SKIPPED {name}: no rustc in the sandbox; install Debian's `rustc` package to check the suite's Rust tasks"
                );
            }
            continue;
        }
        let workspace = dir.path().join(name);
        let repo = workspace.join(name);
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::create_dir(workspace.join(".suite")).unwrap();
        std::fs::copy(task.join("check.sh"), workspace.join(".suite/check.sh")).unwrap();
        common::sh(&repo, &format!("sh '{}'", task.join("setup.sh").display()));
        assert_eq!(
            common::sh(&repo, "git status --porcelain && git branch --show-current"),
            "main\n",
            "{name}: setup.sh leaves a clean repository on main"
        );
        let check = format!("cd /workspace/{name} && exec /bin/sh /workspace/.suite/check.sh");
        let (status, output) = sandboxed(&data, &workspace, &check);
        assert_ne!(status, 0, "{name}: the check passes untouched:\n{output}");
        common::sh(
            &repo,
            &format!("git apply '{}'", task.join("solution.patch").display()),
        );
        let (status, output) = sandboxed(&data, &workspace, &check);
        assert_eq!(
            status, 0,
            "{name}: the check fails with the solution:\n{output}"
        );
        checked += 1;
    }
    assert!(checked >= 12 || !rustc, "{checked} tasks checked");
}
