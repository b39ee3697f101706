//! What deft installs before a task's commands run, in a repository that has no Dockerfile:
//! the ecosystems found among its files and, for each, the shell script that fetches its
//! dependencies, the program that script needs, and the download caches worth keeping for the
//! next task on the same repository.
//!
//! Nothing here touches a disk. deft reads a repository from git objects, never from a
//! workspace that a command could have changed, so [`detect`] takes the listing and a reader.
//! Only the root and its first-level directories are looked at: deeper manifests belong to
//! workspaces, fixtures and examples far more often than to projects of their own.
//!
//! # Installing runs no dependency's code, where the tool allows it
//!
//! An install downloads code from a registry. Commands the agent runs later execute that
//! code anyway, in the same sandbox with the same limits, but the install should not be the
//! moment a dependency's code runs unasked, before anyone chose to run anything. So npm runs
//! with `--ignore-scripts` (no `preinstall`/`install`/`postinstall`, which any package deep in
//! the tree may declare), `cargo fetch` builds nothing (no `build.rs`), `go mod download`
//! compiles nothing, and pip prefers wheels (`--prefer-binary`), which install without running
//! anything. The limits: a Python dependency published only as a source distribution runs its
//! build backend; Maven's and Gradle's resolution runs the build's own plugins and scripts;
//! Bundler compiles native extensions. Those tools have no switch to refuse it.
//!
//! # Nothing lands in the repository that deft would commit
//!
//! deft commits everything in the workspace that is not ignored. So an install without a
//! lockfile does not write one (`npm install --no-package-lock`), Python's environment is a
//! virtual environment at `.venv` that ignores itself (a `.gitignore` of `*` inside it, as
//! Python 3.13's `venv` writes anyway), and Bundler installs under the home. Two exceptions
//! remain: npm's `node_modules` (where Node resolves packages; nearly every Node project
//! ignores it) and the `Cargo.lock` that `cargo fetch` writes when there is none, as any
//! `cargo build` would.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// The sandbox user's home, under which every [`Cache::path`] lies.
pub const HOME: &str = "/home/deft";

/// An ecosystem deft knows how to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Cargo,
    Npm,
    Pip,
    Go,
    Maven,
    Gradle,
    Bundler,
}

impl Kind {
    /// Every kind, in the order [`detect`] reports them within one directory.
    pub const ALL: [Kind; 7] = [
        Kind::Cargo,
        Kind::Npm,
        Kind::Pip,
        Kind::Go,
        Kind::Maven,
        Kind::Gradle,
        Kind::Bundler,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Cargo => "cargo",
            Kind::Npm => "npm",
            Kind::Pip => "pip",
            Kind::Go => "go",
            Kind::Maven => "maven",
            Kind::Gradle => "gradle",
            Kind::Bundler => "bundler",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One ecosystem found in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ecosystem {
    pub kind: Kind,
    /// The directory inside the repository, `""` for its root, else one first-level
    /// directory's name, exactly as the listing spells it (spaces, a leading dash and all).
    pub dir: String,
    /// The dependency install: a `/bin/sh` script to run with [`dir`](Self::dir) as its
    /// working directory (`sh -c SCRIPT`, never a path spliced into it), so that it needs no
    /// quoting of the directory; every word it takes from the repository's files is quoted.
    /// A script rather than one argv because Python's needs several steps. `None` when deft
    /// does not install this one; [`note`](Self::note) then says why.
    pub install: Option<String>,
    /// The program the install needs in the sandbox (`npm`, `python3`, `cargo`, `go`, `mvn`,
    /// `gradle`, `bundle`; `java` when the repository brings its own `gradlew` or `mvnw`),
    /// for a `command -v` check before the install runs. For one deft does not install, the
    /// tool the project asks for (`yarn`, `pnpm`), to name in what the person reads.
    pub program: String,
    /// The download caches to keep per owner and repository between tasks. Two ecosystems of
    /// one kind list the same caches; the caller keeps one of each [`Cache::name`].
    pub caches: Vec<Cache>,
    /// Something the person should know: a lockfile that was not used, a project deft does
    /// not install and why.
    pub note: Option<String>,
}

/// A download cache kept between tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// Its name among a repository's caches: `npm`, `pip`, `cargo-registry`, `cargo-git`,
    /// `go-mod`, `maven`, `maven-wrapper`, `gradle`, `gradle-wrapper`, `bundler`.
    pub name: &'static str,
    /// Where it lives in the sandbox, relative to [`HOME`].
    pub path: &'static str,
    /// Variables the sandbox's commands need so that the tool finds the cache there, the
    /// install and everything after it. None for Cargo: deft sets `CARGO_HOME=HOME/.cargo`
    /// for every sandbox already.
    pub env: Vec<(&'static str, &'static str)>,
}

/// Finds the ecosystems of a repository from its file paths, unquoted, as
/// `git ls-tree -r -z --name-only` lists them. No file is opened except through `read`,
/// which returns a file's bytes (capped by the caller) or `None`; only manifests are read
/// (`package.json`, `Cargo.toml`, `pyproject.toml`, `pom.xml`), each at most once.
///
/// The root comes first, then the first-level directories in byte order; within a
/// directory, kinds come in the order of [`Kind::ALL`]. A first-level directory that the
/// root's manifest names as a member of its workspace (Cargo's `members`, npm's
/// `workspaces`, Maven's `<module>`, or any Gradle project under a root `settings.gradle`) is
/// installed by the root's install and not reported again. Directories whose name starts
/// with a dot, and `node_modules`, are not looked at.
pub fn detect(paths: &[&str], read: &mut dyn FnMut(&str) -> Option<Vec<u8>>) -> Vec<Ecosystem> {
    let mut files = Files {
        read,
        seen: HashMap::new(),
    };
    let dirs = directories(paths);
    let members = match dirs.get("") {
        Some(root) => Members::of_root(
            &Dir {
                path: "",
                names: root,
            },
            &mut files,
        ),
        None => Members::default(),
    };
    let mut found = Vec::new();
    for (path, names) in &dirs {
        let dir = Dir { path, names };
        for kind in Kind::ALL {
            if !path.is_empty() && members.covers(kind, &dir) {
                continue;
            }
            found.extend(detect_kind(kind, &dir, &mut files));
        }
    }
    found
}

/// The file names in each directory looked at: `""` for the root, then first-level ones.
fn directories<'a>(paths: &[&'a str]) -> BTreeMap<&'a str, BTreeSet<&'a str>> {
    let mut dirs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for path in paths {
        let (dir, name) = match path.split_once('/') {
            None => ("", *path),
            Some((dir, name)) => (dir, name),
        };
        if name.is_empty() || name.contains('/') || dir.starts_with('.') || dir == "node_modules" {
            continue;
        }
        dirs.entry(dir).or_default().insert(name);
    }
    dirs
}

/// One directory of the listing.
struct Dir<'a> {
    path: &'a str,
    names: &'a BTreeSet<&'a str>,
}

impl Dir<'_> {
    fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// A file's path in the repository.
    fn join(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.path)
        }
    }

    fn ecosystem(&self, kind: Kind, program: &str) -> Ecosystem {
        Ecosystem {
            kind,
            dir: self.path.to_owned(),
            install: None,
            program: program.to_owned(),
            caches: Vec::new(),
            note: None,
        }
    }
}

/// The reader, asked at most once per path.
struct Files<'r> {
    read: &'r mut dyn FnMut(&str) -> Option<Vec<u8>>,
    seen: HashMap<String, Option<String>>,
}

impl Files<'_> {
    /// A file's text; `None` when the reader has none or it is not UTF-8.
    fn text(&mut self, path: &str) -> Option<String> {
        if let Some(text) = self.seen.get(path) {
            return text.clone();
        }
        let text = (self.read)(path).and_then(|bytes| String::from_utf8(bytes).ok());
        self.seen.insert(path.to_owned(), text.clone());
        text
    }
}

/// What the root's manifests say about which first-level directories their workspace holds.
#[derive(Default)]
struct Members {
    cargo: Vec<String>,
    npm: Vec<String>,
    maven_pom: Option<String>,
    gradle_settings: bool,
}

impl Members {
    fn of_root(root: &Dir<'_>, files: &mut Files<'_>) -> Members {
        let mut members = Members::default();
        if root.has("Cargo.toml")
            && let Some(manifest) = files.text("Cargo.toml").and_then(|t| parse_toml(&t))
            && let Some(list) = manifest
                .get("workspace")
                .and_then(|w| w.get("members"))
                .and_then(|m| m.as_array())
        {
            members.cargo = list
                .iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect();
        }
        if root.has("package.json")
            && let Some(manifest) = files.text("package.json").and_then(|t| parse_json(&t))
        {
            // `"workspaces": [...]`, or Yarn's `{ "packages": [...] }`, which npm also reads.
            let list = manifest.get("workspaces").and_then(|w| match w {
                serde_json::Value::Array(list) => Some(list),
                other => other.get("packages").and_then(|p| p.as_array()),
            });
            members.npm = list
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect();
        }
        if root.has("pom.xml") {
            members.maven_pom = files.text("pom.xml");
        }
        members.gradle_settings = root.has("settings.gradle") || root.has("settings.gradle.kts");
        members
    }

    fn covers(&self, kind: Kind, dir: &Dir<'_>) -> bool {
        match kind {
            Kind::Cargo => self.cargo.iter().any(|p| pattern_matches(p, dir.path)),
            Kind::Npm => self.npm.iter().any(|p| pattern_matches(p, dir.path)),
            Kind::Maven => self.maven_pom.as_deref().is_some_and(|pom| {
                [dir.path.to_owned(), format!("./{}", dir.path)]
                    .iter()
                    .any(|module| pom.contains(&format!("<module>{module}</module>")))
            }),
            // A directory with settings of its own is a build of its own.
            Kind::Gradle => {
                self.gradle_settings
                    && !dir.has("settings.gradle")
                    && !dir.has("settings.gradle.kts")
            }
            Kind::Pip | Kind::Go | Kind::Bundler => false,
        }
    }
}

/// Whether a workspace's member pattern (`web`, `./web/`, `*`, `app-*`) names the
/// first-level directory `dir`. Patterns of more than one segment never do.
fn pattern_matches(pattern: &str, dir: &str) -> bool {
    let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
    let pattern = pattern.strip_suffix('/').unwrap_or(pattern);
    if pattern.contains('/') {
        return false;
    }
    glob(pattern.as_bytes(), dir.as_bytes())
}

/// `*` matches any run of bytes; everything else matches itself.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| glob(rest, &name[skip..])),
        Some((byte, rest)) => name.first() == Some(byte) && glob(rest, &name[1..]),
    }
}

fn parse_toml(text: &str) -> Option<toml::Table> {
    text.parse().ok()
}

fn parse_json(text: &str) -> Option<serde_json::Value> {
    serde_json::from_str(text).ok()
}

fn detect_kind(kind: Kind, dir: &Dir<'_>, files: &mut Files<'_>) -> Option<Ecosystem> {
    match kind {
        Kind::Cargo => cargo(dir),
        Kind::Npm => npm(dir, files),
        Kind::Pip => pip(dir, files),
        Kind::Go => go(dir),
        Kind::Maven => maven(dir),
        Kind::Gradle => gradle(dir),
        Kind::Bundler => bundler(dir),
    }
}

fn cargo(dir: &Dir<'_>) -> Option<Ecosystem> {
    if !dir.has("Cargo.toml") {
        return None;
    }
    // `--locked`: the versions the repository pinned, or a failure that says the lockfile
    // is out of date, never a quiet re-resolution.
    let install = if dir.has("Cargo.lock") {
        "cargo fetch --locked"
    } else {
        "cargo fetch"
    };
    Some(Ecosystem {
        install: Some(install.to_owned()),
        caches: caches(Kind::Cargo, false),
        ..dir.ecosystem(Kind::Cargo, "cargo")
    })
}

/// Lockfiles of the other package managers that read `package.json`, with what they are.
const OTHER_NODE_LOCKS: [(&str, &str); 4] = [
    ("yarn.lock", "yarn"),
    ("pnpm-lock.yaml", "pnpm"),
    ("bun.lock", "bun"),
    ("bun.lockb", "bun"),
];

fn npm(dir: &Dir<'_>, files: &mut Files<'_>) -> Option<Ecosystem> {
    if !dir.has("package.json") {
        return None;
    }
    let manifest_path = dir.join("package.json");
    let mut ecosystem = dir.ecosystem(Kind::Npm, "npm");
    let mut other: Option<(String, &str)> = OTHER_NODE_LOCKS
        .iter()
        .find(|(lock, _)| dir.has(lock))
        .map(|(lock, manager)| (dir.join(lock), *manager));
    if let Some(text) = files.text(&manifest_path) {
        let Some(manifest) = parse_json(&text) else {
            ecosystem.note = Some(format!(
                "{manifest_path} is not valid JSON, so npm could not read it either; nothing \
                 was installed"
            ));
            return Some(ecosystem);
        };
        // Corepack's field: `"packageManager": "pnpm@9.1.0"` says which tool the project uses.
        if let Some(declared) = manifest.get("packageManager").and_then(|v| v.as_str()) {
            let manager = declared.split('@').next().unwrap_or(declared);
            if manager != "npm" && other.is_none() {
                let manager = match manager {
                    "yarn" => "yarn",
                    "pnpm" => "pnpm",
                    "bun" => "bun",
                    _ => "other",
                };
                other = Some((
                    format!("{manifest_path} (\"packageManager\": \"{declared}\")"),
                    manager,
                ));
            }
        }
    }
    let npm_lock = ["package-lock.json", "npm-shrinkwrap.json"]
        .into_iter()
        .find(|lock| dir.has(lock));
    // `--ignore-scripts`: no package's install scripts run (see the crate's documentation);
    // `--no-audit --no-fund`: no requests beyond the packages themselves.
    let install = match (npm_lock, &other) {
        (Some(lock), Some((evidence, _))) => {
            ecosystem.note = Some(format!(
                "{evidence} is there too; deft installs with npm, from {}",
                dir.join(lock)
            ));
            "npm ci --ignore-scripts --no-audit --no-fund"
        }
        (Some(_), None) => "npm ci --ignore-scripts --no-audit --no-fund",
        (None, Some((evidence, manager))) => {
            let projects = match *manager {
                "yarn" | "pnpm" => "yarn/pnpm projects",
                "bun" => "bun projects",
                _ => "projects of package managers other than npm",
            };
            ecosystem.program = (*manager).to_owned();
            ecosystem.note = Some(format!(
                "{evidence}: {projects} are not installed by deft yet; add a Dockerfile that \
                 installs them, or commit a package-lock.json"
            ));
            return Some(ecosystem);
        }
        // No lockfile: resolve, and write none into the repository.
        (None, None) => "npm install --ignore-scripts --no-audit --no-fund --no-package-lock",
    };
    ecosystem.install = Some(install.to_owned());
    ecosystem.caches = caches(Kind::Npm, false);
    Some(ecosystem)
}

/// The optional-dependency extras and dependency groups installed with a `pyproject.toml`'s
/// dependencies: what running the tests usually needs, not every optional feature.
const PYTHON_DEV_GROUPS: [&str; 4] = ["dev", "test", "tests", "testing"];

fn pip(dir: &Dir<'_>, files: &mut Files<'_>) -> Option<Ecosystem> {
    let mut requirements: Vec<&str> = dir
        .names
        .iter()
        .copied()
        .filter(|name| name.starts_with("requirements") && name.ends_with(".txt"))
        .collect();
    // requirements.txt first, then requirements-dev.txt, then the others by name.
    requirements.sort_by_key(|name| match *name {
        "requirements.txt" => (0, *name),
        "requirements-dev.txt" => (1, *name),
        _ => (2, *name),
    });
    if requirements.is_empty() && !dir.has("pyproject.toml") {
        return None;
    }
    let mut ecosystem = dir.ecosystem(Kind::Pip, "python3");
    let install_words: Vec<String> = if let Some((first, rest)) = requirements.split_first() {
        if !rest.is_empty() {
            let others: Vec<String> = rest.iter().map(|name| dir.join(name)).collect();
            let verb = if others.len() == 1 { "is" } else { "are" };
            ecosystem.note = Some(format!(
                "{} is installed; {} {verb} not",
                dir.join(first),
                others.join(", ")
            ));
        }
        vec!["-r".to_owned(), (*first).to_owned()]
    } else {
        let path = dir.join("pyproject.toml");
        let Some(text) = files.text(&path) else {
            ecosystem.note = Some(format!("{path} could not be read; nothing was installed"));
            return Some(ecosystem);
        };
        let Some(pyproject) = parse_toml(&text) else {
            ecosystem.note = Some(format!("{path} is not valid TOML; nothing was installed"));
            return Some(ecosystem);
        };
        let dependencies = pyproject_dependencies(&pyproject);
        if dependencies.is_empty() {
            ecosystem.note = Some(if pyproject.get("project").is_some() {
                format!("{path} lists no dependencies; nothing to install")
            } else if pyproject
                .get("tool")
                .and_then(|t| t.get("poetry"))
                .is_some()
            {
                format!(
                    "{path}: Poetry projects are not installed by deft yet; add a Dockerfile \
                     that installs them, or a requirements.txt"
                )
            } else {
                format!("{path} has no [project] table; nothing to install")
            });
            return Some(ecosystem);
        }
        // `--`: a dependency written `--index-url=...` is refused as a requirement instead
        // of read as an option.
        std::iter::once("--".to_owned())
            .chain(dependencies)
            .collect()
    };
    // A virtual environment rather than `pip install --user`: Debian's and Ubuntu's Python
    // refuses user installs into the system interpreter (PEP 668, "externally managed"), a
    // venv keeps the project's packages apart from the system's, and `.venv` is where
    // Python's tools look for one. It ignores itself, so deft never commits it.
    let mut pip_install = vec![
        ".venv/bin/python",
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--prefer-binary",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    pip_install.extend(install_words);
    ecosystem.install = Some(script(&[
        "python3 -m venv .venv".to_owned(),
        "printf '*\\n' > .venv/.gitignore".to_owned(),
        command(&pip_install),
    ]));
    ecosystem.caches = caches(Kind::Pip, false);
    Some(ecosystem)
}

/// `[project].dependencies`, then those of the extras and dependency groups (PEP 735) named
/// in [`PYTHON_DEV_GROUPS`], without repeats, in the file's order.
fn pyproject_dependencies(pyproject: &toml::Table) -> Vec<String> {
    let project = pyproject.get("project");
    let mut lists = vec![project.and_then(|p| p.get("dependencies"))];
    for group in PYTHON_DEV_GROUPS {
        lists.push(
            project
                .and_then(|p| p.get("optional-dependencies"))
                .and_then(|o| o.get(group)),
        );
        lists.push(
            pyproject
                .get("dependency-groups")
                .and_then(|g| g.get(group)),
        );
    }
    let mut dependencies: Vec<String> = Vec::new();
    // Entries that are not strings (a group's `{ include-group = "..." }`) are left out.
    for dependency in lists
        .into_iter()
        .flatten()
        .filter_map(|list| list.as_array())
        .flatten()
        .filter_map(|entry| entry.as_str())
    {
        if !dependencies.iter().any(|seen| seen == dependency) {
            dependencies.push(dependency.to_owned());
        }
    }
    dependencies
}

fn go(dir: &Dir<'_>) -> Option<Ecosystem> {
    if !dir.has("go.mod") {
        return None;
    }
    Some(Ecosystem {
        install: Some("go mod download".to_owned()),
        caches: caches(Kind::Go, false),
        ..dir.ecosystem(Kind::Go, "go")
    })
}

fn maven(dir: &Dir<'_>) -> Option<Ecosystem> {
    if !dir.has("pom.xml") {
        return None;
    }
    // The repository's own wrapper names the Maven version it builds with; it fetches that
    // Maven itself and needs only Java.
    let wrapper = dir.has("mvnw");
    let (install, program) = if wrapper {
        ("./mvnw -q -B dependency:go-offline", "java")
    } else {
        ("mvn -q -B dependency:go-offline", "mvn")
    };
    Some(Ecosystem {
        install: Some(install.to_owned()),
        caches: caches(Kind::Maven, wrapper),
        ..dir.ecosystem(Kind::Maven, program)
    })
}

fn gradle(dir: &Dir<'_>) -> Option<Ecosystem> {
    let manifests = [
        "build.gradle",
        "build.gradle.kts",
        "settings.gradle",
        "settings.gradle.kts",
    ];
    if !manifests.iter().any(|name| dir.has(name)) {
        return None;
    }
    let wrapper = dir.has("gradlew");
    let (install, program) = if wrapper {
        ("./gradlew --no-daemon dependencies", "java")
    } else {
        ("gradle --no-daemon dependencies", "gradle")
    };
    Some(Ecosystem {
        install: Some(install.to_owned()),
        caches: caches(Kind::Gradle, wrapper),
        ..dir.ecosystem(Kind::Gradle, program)
    })
}

fn bundler(dir: &Dir<'_>) -> Option<Ecosystem> {
    if !dir.has("Gemfile") {
        return None;
    }
    Some(Ecosystem {
        install: Some("bundle install".to_owned()),
        caches: caches(Kind::Bundler, false),
        ..dir.ecosystem(Kind::Bundler, "bundle")
    })
}

/// A kind's download caches; `wrapper` adds the distributions a `mvnw` or `gradlew` fetches.
fn caches(kind: Kind, wrapper: bool) -> Vec<Cache> {
    let cache = |name, path, env: &[(&'static str, &'static str)]| Cache {
        name,
        path,
        env: env.to_vec(),
    };
    match kind {
        // The git checkouts of git dependencies live beside the registry's crates.
        Kind::Cargo => vec![
            cache("cargo-registry", ".cargo/registry", &[]),
            cache("cargo-git", ".cargo/git", &[]),
        ],
        Kind::Npm => vec![cache(
            "npm",
            ".npm",
            &[("npm_config_cache", "/home/deft/.npm")],
        )],
        Kind::Pip => vec![cache(
            "pip",
            ".cache/pip",
            &[("PIP_CACHE_DIR", "/home/deft/.cache/pip")],
        )],
        // Go writes its module cache read-only; `-modcacherw` keeps it writable, so that a
        // kept cache can be pruned and removed like any other directory.
        Kind::Go => vec![cache(
            "go-mod",
            "go/pkg/mod",
            &[
                ("GOMODCACHE", "/home/deft/go/pkg/mod"),
                ("GOFLAGS", "-modcacherw"),
            ],
        )],
        // Maven has no variable for its local repository; with HOME set it is
        // `~/.m2/repository`, and the wrapper's distributions `~/.m2/wrapper`.
        Kind::Maven => {
            let mut caches = vec![cache("maven", ".m2/repository", &[])];
            if wrapper {
                caches.push(cache("maven-wrapper", ".m2/wrapper", &[]));
            }
            caches
        }
        Kind::Gradle => {
            let mut caches = vec![cache(
                "gradle",
                ".gradle/caches",
                &[("GRADLE_USER_HOME", "/home/deft/.gradle")],
            )];
            if wrapper {
                caches.push(cache("gradle-wrapper", ".gradle/wrapper", &[]));
            }
            caches
        }
        // Downloaded gems (and built extensions) go to the user cache, which is kept;
        // installed gems go under the home, out of the repository, for this task only.
        // Without BUNDLE_PATH, Bundler would install into the system's gems, which the
        // sandbox's user cannot write.
        Kind::Bundler => vec![cache(
            "bundler",
            ".bundle/cache",
            &[
                ("BUNDLE_USER_CACHE", "/home/deft/.bundle/cache"),
                ("BUNDLE_GLOBAL_GEM_CACHE", "true"),
                ("BUNDLE_PATH", "/home/deft/.bundle/gems"),
            ],
        )],
    }
}

/// A script of several commands that stops at the first failure.
fn script(lines: &[String]) -> String {
    let mut script = String::from("set -e\n");
    for line in lines {
        script.push_str(line);
        script.push('\n');
    }
    script
}

/// One command line, each word quoted where the shell would read it otherwise.
fn command(words: &[String]) -> String {
    words
        .iter()
        .map(|word| quote(word))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `word` as the shell reads it back unchanged: as it is when it holds only characters the
/// shell never interprets, else in single quotes (a `'` inside written `'\''`).
fn quote(word: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b);
    if !word.is_empty() && word.bytes().all(plain) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests;
