//! A suite of `deft eval` as it lies on disk (docs/EVALUATION.md): a directory per task, each
//! with `setup.sh`, `task.md`, `check.sh` and optionally `task.toml`. Everything wrong with it
//! is said before any task runs, naming the path and what to put there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// The files every task directory holds.
const REQUIRED: [&str; 3] = ["setup.sh", "task.md", "check.sh"];

#[derive(Debug)]
pub struct Suite {
    pub dir: PathBuf,
    /// In the order of their names.
    pub tasks: Vec<SuiteTask>,
}

#[derive(Debug)]
pub struct SuiteTask {
    /// The directory's name: the task's name in reports, and its repository's.
    pub name: String,
    pub dir: PathBuf,
    /// `task.md`, as deft is given it.
    pub description: String,
    pub settings: Settings,
}

impl SuiteTask {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A task's `task.toml`; every key has a default, and an unknown key is refused.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The description leaves a real question open: the task ending `needs_attention` with a
    /// question counts as solved (a completion still needs its check).
    pub expect_question: bool,
    /// How long the task may run before it is cancelled.
    pub timeout_secs: u64,
    /// How long `check.sh` may run before it is killed.
    pub check_timeout_secs: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            expect_question: false,
            timeout_secs: 1800,
            check_timeout_secs: 300,
        }
    }
}

impl Settings {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    pub fn check_timeout(&self) -> Duration {
        Duration::from_secs(self.check_timeout_secs)
    }
}

/// Reads the suite at `dir`, keeping only the tasks `only` names when it names any.
pub fn load(dir: &Path, only: &[String]) -> anyhow::Result<Suite> {
    let entries = fs_err::read_dir(dir).context(
        "the suite must be a directory holding a directory per task (see docs/EVALUATION.md)",
    )?;
    // Its scripts run in other directories: their paths must not be relative.
    let root = fs_err::canonicalize(dir)?;
    let mut tasks = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = root.join(entry.file_name());
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            bail!(
                "{}: a task's directory needs a name in UTF-8; rename it",
                path.display()
            );
        };
        // Files beside the tasks (a README) and hidden directories are not tasks.
        if name.starts_with('.') || !entry.file_type()?.is_dir() {
            continue;
        }
        tasks.push(task(&path, name)?);
    }
    tasks.sort_by(|a, b| a.name.cmp(&b.name));
    if tasks.is_empty() {
        bail!(
            "{} holds no task: make a directory per task in it, with setup.sh, task.md and check.sh (see docs/EVALUATION.md)",
            dir.display()
        );
    }
    if !only.is_empty() {
        let names: Vec<&str> = tasks.iter().map(|task| task.name.as_str()).collect();
        for wanted in only {
            if !names.contains(&wanted.as_str()) {
                bail!(
                    "`--only {wanted}`: {} has no such task; its tasks are {}",
                    dir.display(),
                    names.join(", ")
                );
            }
        }
        tasks.retain(|task| only.contains(&task.name));
    }
    Ok(Suite {
        dir: dir.to_owned(),
        tasks,
    })
}

fn task(dir: &Path, name: String) -> anyhow::Result<SuiteTask> {
    let usable = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !usable {
        bail!(
            "{}: a task's name becomes its repository's; use only letters, digits, `-`, `_` and `.`",
            dir.display()
        );
    }
    for file in REQUIRED {
        let path = dir.join(file);
        if !fs_err::metadata(&path).is_ok_and(|meta| meta.is_file()) {
            bail!(
                "{}: missing; every task needs {} (see docs/EVALUATION.md)",
                path.display(),
                REQUIRED.join(", ")
            );
        }
    }
    let description = fs_err::read_to_string(dir.join("task.md"))?;
    if description.trim().is_empty() {
        bail!(
            "{}: empty; write the task's description in it",
            dir.join("task.md").display()
        );
    }
    let settings_path = dir.join("task.toml");
    let settings = match fs_err::read_to_string(&settings_path) {
        Ok(text) => toml::from_str(&text).with_context(|| {
            format!(
                "{}: keys are expect_question (true or false), timeout_secs and check_timeout_secs (whole seconds)",
                settings_path.display()
            )
        })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Settings::default(),
        Err(error) => return Err(error.into()),
    };
    Ok(SuiteTask {
        name,
        dir: dir.to_owned(),
        description: description.trim().to_owned(),
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_dir(suite: &Path, name: &str, files: &[(&str, &str)]) {
        let dir = suite.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
    }

    const WHOLE: [(&str, &str); 3] = [
        ("setup.sh", "git init"),
        ("task.md", "Fix it\n"),
        ("check.sh", "true"),
    ];

    fn check(build: impl Fn(&Path), only: &[&str], expect: &str) {
        let suite = tempfile::tempdir().unwrap();
        build(suite.path());
        let only: Vec<String> = only.iter().map(|s| (*s).to_owned()).collect();
        let got = match load(suite.path(), &only) {
            Ok(suite) => suite
                .tasks
                .iter()
                .map(|t| {
                    format!(
                        "{} {:?} {}",
                        t.name, t.description, t.settings.expect_question
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(error) => {
                format!("{error:#}").replace(&suite.path().display().to_string(), "SUITE")
            }
        };
        assert_eq!(got, expect);
    }

    #[test]
    fn tasks_come_in_name_order_with_their_settings() {
        check(
            |s| {
                task_dir(s, "b", &WHOLE);
                task_dir(s, "a", &WHOLE);
                task_dir(s, "a", &[("task.toml", "expect_question = true\n")]);
                std::fs::write(s.join("README.md"), "not a task").unwrap();
            },
            &[],
            r#"a "Fix it" true; b "Fix it" false"#,
        );
    }

    #[test]
    fn only_keeps_the_named_tasks_and_refuses_an_unknown_name() {
        let build = |s: &Path| {
            task_dir(s, "a", &WHOLE);
            task_dir(s, "b", &WHOLE);
        };
        check(build, &["b"], r#"b "Fix it" false"#);
        check(
            build,
            &["c"],
            "`--only c`: SUITE has no such task; its tasks are a, b",
        );
    }

    #[test]
    fn bad_suites_are_refused_naming_the_path_and_the_fix() {
        check(
            |_| {},
            &[],
            "SUITE holds no task: make a directory per task in it, with setup.sh, task.md and check.sh (see docs/EVALUATION.md)",
        );
        check(
            |s| task_dir(s, "a", &WHOLE[1..]),
            &[],
            "SUITE/a/setup.sh: missing; every task needs setup.sh, task.md, check.sh (see docs/EVALUATION.md)",
        );
        check(
            |s| {
                task_dir(s, "a", &WHOLE);
                task_dir(s, "a", &[("task.toml", "timeout = 3\n")]);
            },
            &[],
            "SUITE/a/task.toml: keys are expect_question (true or false), timeout_secs and check_timeout_secs (whole seconds): TOML parse error at line 1, column 1\n  |\n1 | timeout = 3\n  | ^^^^^^^\nunknown field `timeout`, expected one of `expect_question`, `timeout_secs`, `check_timeout_secs`\n",
        );
        check(
            |s| task_dir(s, "a b", &WHOLE),
            &[],
            "SUITE/a b: a task's name becomes its repository's; use only letters, digits, `-`, `_` and `.`",
        );
    }
}
