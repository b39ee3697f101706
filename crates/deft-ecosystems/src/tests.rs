//! Detection checked on small listings: one `check(files, expect)` per case, the result
//! rendered as text, so that each case reads as the repository and what deft would run.

use std::cell::RefCell;

use super::*;

/// Runs [`detect`] on `files` (path and contents) and compares a rendering of the result.
#[track_caller]
fn check(files: &[(&str, &str)], expect: &str) {
    let paths: Vec<&str> = files.iter().map(|(path, _)| *path).collect();
    let mut read = |path: &str| {
        files
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, text)| text.as_bytes().to_vec())
    };
    let found = detect(&paths, &mut read);
    assert_eq!(render(&found).trim(), expect.trim());
}

fn render(found: &[Ecosystem]) -> String {
    let mut out = String::new();
    for ecosystem in found {
        let place = if ecosystem.dir.is_empty() {
            "at the root".to_owned()
        } else {
            format!("in {:?}", ecosystem.dir)
        };
        out.push_str(&format!(
            "{} {place}, needs {}\n",
            ecosystem.kind, ecosystem.program
        ));
        match &ecosystem.install {
            Some(script) => {
                for line in script.lines() {
                    out.push_str(&format!("  {line}\n"));
                }
            }
            None => out.push_str("  (not installed)\n"),
        }
        if let Some(note) = &ecosystem.note {
            out.push_str(&format!("  note: {note}\n"));
        }
    }
    out
}

#[test]
fn cargo_fetches_locked_when_there_is_a_lockfile() {
    check(
        &[("Cargo.toml", ""), ("Cargo.lock", ""), ("src/main.rs", "")],
        "
cargo at the root, needs cargo
  cargo fetch --locked",
    );
    check(
        &[("Cargo.toml", "")],
        "
cargo at the root, needs cargo
  cargo fetch",
    );
}

#[test]
fn npm_uses_ci_with_a_lockfile_and_install_without_one() {
    check(
        &[("package.json", "{}"), ("package-lock.json", "{}")],
        "
npm at the root, needs npm
  npm ci --ignore-scripts --no-audit --no-fund",
    );
    check(
        &[("package.json", "{}"), ("npm-shrinkwrap.json", "{}")],
        "
npm at the root, needs npm
  npm ci --ignore-scripts --no-audit --no-fund",
    );
    check(
        &[("package.json", "{}")],
        "
npm at the root, needs npm
  npm install --ignore-scripts --no-audit --no-fund --no-package-lock",
    );
}

#[test]
fn yarn_and_pnpm_projects_are_skipped_with_a_note() {
    check(
        &[("package.json", "{}"), ("yarn.lock", "")],
        "
npm at the root, needs yarn
  (not installed)
  note: yarn.lock: yarn/pnpm projects are not installed by deft yet; add a Dockerfile that installs them, or commit a package-lock.json",
    );
    check(
        &[("web/package.json", "{}"), ("web/pnpm-lock.yaml", "")],
        r#"
npm in "web", needs pnpm
  (not installed)
  note: web/pnpm-lock.yaml: yarn/pnpm projects are not installed by deft yet; add a Dockerfile that installs them, or commit a package-lock.json"#,
    );
    check(
        &[("package.json", r#"{"packageManager": "pnpm@9.1.0"}"#)],
        r#"
npm at the root, needs pnpm
  (not installed)
  note: package.json ("packageManager": "pnpm@9.1.0"): yarn/pnpm projects are not installed by deft yet; add a Dockerfile that installs them, or commit a package-lock.json"#,
    );
    check(
        &[("package.json", "{}"), ("bun.lockb", "")],
        "
npm at the root, needs bun
  (not installed)
  note: bun.lockb: bun projects are not installed by deft yet; add a Dockerfile that installs them, or commit a package-lock.json",
    );
}

#[test]
fn a_package_lock_beside_a_yarn_lock_installs_with_npm_and_says_so() {
    check(
        &[
            ("package.json", "{}"),
            ("package-lock.json", "{}"),
            ("yarn.lock", ""),
        ],
        "
npm at the root, needs npm
  npm ci --ignore-scripts --no-audit --no-fund
  note: yarn.lock is there too; deft installs with npm, from package-lock.json",
    );
    check(
        &[
            ("package.json", r#"{"packageManager": "npm@10.8.0"}"#),
            ("package-lock.json", "{}"),
        ],
        "
npm at the root, needs npm
  npm ci --ignore-scripts --no-audit --no-fund",
    );
}

#[test]
fn a_broken_package_json_is_reported_not_installed() {
    check(
        &[("package.json", "{ nope")],
        "
npm at the root, needs npm
  (not installed)
  note: package.json is not valid JSON, so npm could not read it either; nothing was installed",
    );
}

#[test]
fn pip_prefers_requirements_txt_then_dev_then_others() {
    let pip = |file: &str| {
        format!(
            "
pip at the root, needs python3
  set -e
  python3 -m venv .venv
  printf '*\\n' > .venv/.gitignore
  .venv/bin/python -m pip install --disable-pip-version-check --no-input --prefer-binary -r {file}"
        )
    };
    check(&[("requirements.txt", "")], &pip("requirements.txt"));
    check(
        &[("requirements-dev.txt", "")],
        &pip("requirements-dev.txt"),
    );
    check(
        &[
            ("requirements-test.txt", ""),
            ("requirements-dev.txt", ""),
            ("requirements.txt", ""),
            ("pyproject.toml", "[project]\ndependencies = [\"x\"]"),
        ],
        &(pip("requirements.txt")
            + "\n  note: requirements.txt is installed; requirements-dev.txt, requirements-test.txt are not"),
    );
    check(
        &[("requirements-test.txt", ""), ("requirements-ci.txt", "")],
        &(pip("requirements-ci.txt")
            + "\n  note: requirements-ci.txt is installed; requirements-test.txt is not"),
    );
}

#[test]
fn pip_installs_a_pyprojects_dependencies_and_its_test_groups() {
    check(
        &[(
            "pyproject.toml",
            r#"
[project]
name = "app"
dependencies = ["requests>=2", "click"]

[project.optional-dependencies]
test = ["pytest", "click"]
gpu = ["torch"]

[dependency-groups]
dev = ["ruff", { include-group = "test" }]
"#,
        )],
        "
pip at the root, needs python3
  set -e
  python3 -m venv .venv
  printf '*\\n' > .venv/.gitignore
  .venv/bin/python -m pip install --disable-pip-version-check --no-input --prefer-binary -- 'requests>=2' click ruff pytest",
    );
}

#[test]
fn a_pyproject_without_dependencies_says_why_nothing_is_installed() {
    check(
        &[("pyproject.toml", "[project]\nname = \"app\"\n")],
        "
pip at the root, needs python3
  (not installed)
  note: pyproject.toml lists no dependencies; nothing to install",
    );
    check(
        &[("pyproject.toml", "[tool.ruff]\nline-length = 100\n")],
        "
pip at the root, needs python3
  (not installed)
  note: pyproject.toml has no [project] table; nothing to install",
    );
    check(
        &[(
            "pyproject.toml",
            "[tool.poetry.dependencies]\npython = \"^3.11\"\n",
        )],
        "
pip at the root, needs python3
  (not installed)
  note: pyproject.toml: Poetry projects are not installed by deft yet; add a Dockerfile that installs them, or a requirements.txt",
    );
    check(
        &[("pyproject.toml", "[project\n")],
        "
pip at the root, needs python3
  (not installed)
  note: pyproject.toml is not valid TOML; nothing was installed",
    );
}

#[test]
fn go_maven_gradle_and_bundler() {
    check(
        &[("go.mod", ""), ("go.sum", "")],
        "
go at the root, needs go
  go mod download",
    );
    check(
        &[("pom.xml", "<project/>")],
        "
maven at the root, needs mvn
  mvn -q -B dependency:go-offline",
    );
    check(
        &[("pom.xml", "<project/>"), ("mvnw", "")],
        "
maven at the root, needs java
  ./mvnw -q -B dependency:go-offline",
    );
    check(
        &[("build.gradle.kts", "")],
        "
gradle at the root, needs gradle
  gradle --no-daemon dependencies",
    );
    check(
        &[("settings.gradle", ""), ("gradlew", "")],
        "
gradle at the root, needs java
  ./gradlew --no-daemon dependencies",
    );
    check(
        &[("Gemfile", ""), ("Gemfile.lock", "")],
        "
bundler at the root, needs bundle
  bundle install",
    );
}

#[test]
fn the_root_comes_first_then_directories_in_order_and_kinds_in_order() {
    check(
        &[
            ("Gemfile", ""),
            ("package.json", "{}"),
            ("Cargo.toml", ""),
            ("zeta/go.mod", ""),
            ("api/requirements.txt", ""),
            ("api/Cargo.toml", ""),
            ("README.md", ""),
        ],
        r#"
cargo at the root, needs cargo
  cargo fetch
npm at the root, needs npm
  npm install --ignore-scripts --no-audit --no-fund --no-package-lock
bundler at the root, needs bundle
  bundle install
cargo in "api", needs cargo
  cargo fetch
pip in "api", needs python3
  set -e
  python3 -m venv .venv
  printf '*\n' > .venv/.gitignore
  .venv/bin/python -m pip install --disable-pip-version-check --no-input --prefer-binary -r requirements.txt
go in "zeta", needs go
  go mod download"#,
    );
}

#[test]
fn first_level_directories_count_and_deeper_ones_do_not() {
    check(
        &[
            ("web/package.json", "{}"),
            ("web/package-lock.json", "{}"),
            ("web/src/index.ts", ""),
            ("tools/scripts/package.json", "{}"),
            ("examples/basic/Cargo.toml", ""),
            ("node_modules/package.json", "{}"),
            (".github/package.json", "{}"),
        ],
        r#"
npm in "web", needs npm
  npm ci --ignore-scripts --no-audit --no-fund"#,
    );
    check(&[("README.md", ""), ("docs/index.md", "")], "");
}

#[test]
fn members_of_the_roots_workspace_are_installed_by_the_root() {
    check(
        &[
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\"cli\", \"./core/\"]\n",
            ),
            ("Cargo.lock", ""),
            ("cli/Cargo.toml", ""),
            ("core/Cargo.toml", ""),
            ("other/Cargo.toml", ""),
        ],
        r#"
cargo at the root, needs cargo
  cargo fetch --locked
cargo in "other", needs cargo
  cargo fetch"#,
    );
    check(
        &[
            ("package.json", r#"{"workspaces": ["app-*", "packages/*"]}"#),
            ("package-lock.json", "{}"),
            ("app-web/package.json", "{}"),
            ("site/package.json", "{}"),
        ],
        r#"
npm at the root, needs npm
  npm ci --ignore-scripts --no-audit --no-fund
npm in "site", needs npm
  npm install --ignore-scripts --no-audit --no-fund --no-package-lock"#,
    );
    check(
        &[
            ("package.json", r#"{"workspaces": {"packages": ["*"]}}"#),
            ("web/package.json", "{}"),
        ],
        "
npm at the root, needs npm
  npm install --ignore-scripts --no-audit --no-fund --no-package-lock",
    );
    check(
        &[
            (
                "pom.xml",
                "<project><modules><module>core</module></modules></project>",
            ),
            ("core/pom.xml", ""),
            ("standalone/pom.xml", ""),
        ],
        r#"
maven at the root, needs mvn
  mvn -q -B dependency:go-offline
maven in "standalone", needs mvn
  mvn -q -B dependency:go-offline"#,
    );
    check(
        &[
            ("settings.gradle.kts", ""),
            ("app/build.gradle.kts", ""),
            ("plugin/settings.gradle", ""),
            ("plugin/build.gradle", ""),
        ],
        r#"
gradle at the root, needs gradle
  gradle --no-daemon dependencies
gradle in "plugin", needs gradle
  gradle --no-daemon dependencies"#,
    );
}

#[test]
fn odd_directory_names_are_carried_as_they_are_and_never_put_in_the_script() {
    let files = [
        ("my web/package.json", "{}"),
        ("-rf/go.mod", ""),
        ("it's $(here)/requirements.txt", ""),
    ];
    let paths: Vec<&str> = files.iter().map(|(path, _)| *path).collect();
    let found = detect(&paths, &mut |_| Some(b"{}".to_vec()));
    let dirs: Vec<&str> = found.iter().map(|e| e.dir.as_str()).collect();
    assert_eq!(dirs, ["-rf", "it's $(here)", "my web"]);
    for ecosystem in &found {
        let script = ecosystem.install.as_deref().unwrap();
        assert!(!script.contains(&ecosystem.dir), "{script}");
    }
}

#[test]
fn dependencies_from_a_pyproject_reach_pip_unchanged() {
    let dependencies = [
        "plain",
        "with space >= 1",
        "it's",
        "$(touch /tmp/pwned)",
        "`id`",
        "--index-url=http://127.0.0.1:9/",
        "a\"b\\c",
        "semi;colon&amp|pipe",
        "new\nline",
    ];
    let listed = dependencies
        .iter()
        .map(|d| format!("{:?}", d))
        .collect::<Vec<_>>()
        .join(", ");
    let pyproject = format!("[project]\ndependencies = [{listed}]\n");
    let found = detect(&["pyproject.toml"], &mut |_| {
        Some(pyproject.clone().into_bytes())
    });
    let script = found[0].install.as_deref().unwrap();
    let pip_line = script
        .split_once(".venv/bin/python")
        .map(|(_, rest)| rest)
        .unwrap();
    // The shell parses the line's words back; they must be exactly what the file listed.
    let output = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("set -- {pip_line}\nprintf '%s\\0' \"$@\""))
        .output()
        .expect("/bin/sh runs");
    assert!(output.status.success(), "{output:?}");
    let words: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .split_terminator('\0')
        .map(str::to_owned)
        .collect();
    let separator = words.iter().position(|w| w == "--").unwrap();
    assert_eq!(words[..separator].first().map(String::as_str), Some("-m"));
    assert_eq!(words[separator + 1..], dependencies);
}

#[test]
fn quoting_leaves_plain_words_alone_and_quotes_the_rest() {
    for (word, quoted) in [
        ("requests>=2", "'requests>=2'"),
        ("click", "click"),
        ("pkg==1.0", "pkg==1.0"),
        ("", "''"),
        ("it's", r"'it'\''s'"),
        ("-rf", "-rf"),
        ("a b", "'a b'"),
    ] {
        assert_eq!(quote(word), quoted, "{word:?}");
    }
}

#[test]
fn each_manifest_is_read_at_most_once_and_nothing_else_is_read() {
    let asked = RefCell::new(Vec::new());
    let files = [
        "package.json",
        "package-lock.json",
        "Cargo.toml",
        "pyproject.toml",
        "pom.xml",
        "src/lib.rs",
        "web/package.json",
    ];
    detect(&files, &mut |path| {
        asked.borrow_mut().push(path.to_owned());
        Some(b"{}".to_vec())
    });
    let mut asked = asked.into_inner();
    asked.sort();
    assert_eq!(
        asked,
        [
            "Cargo.toml",
            "package.json",
            "pom.xml",
            "pyproject.toml",
            "web/package.json"
        ]
    );
}

#[test]
fn a_manifest_the_reader_does_not_give_is_still_an_ecosystem() {
    let found = detect(&["package.json", "web/pyproject.toml"], &mut |_| None);
    assert_eq!(found[0].kind, Kind::Npm);
    assert!(found[0].install.is_some());
    assert_eq!(
        found[1].note.as_deref(),
        Some("web/pyproject.toml could not be read; nothing was installed")
    );
}

#[test]
fn every_cache_lies_under_the_home_and_its_variables_point_into_it() {
    for (kind, wrapper) in Kind::ALL.iter().flat_map(|k| [(*k, false), (*k, true)]) {
        let caches = caches(kind, wrapper);
        assert!(!caches.is_empty(), "{kind}");
        for cache in &caches {
            assert!(!cache.path.starts_with('/'), "{}", cache.name);
            for (name, value) in &cache.env {
                if value.starts_with('/') {
                    let inside = value.strip_prefix(HOME).and_then(|v| v.strip_prefix('/'));
                    assert!(inside.is_some(), "{name}={value} is outside {HOME}");
                    // The variable names the cache's own directory, or the tool's home
                    // holding it, or (BUNDLE_PATH) an install directory beside it.
                    assert!(
                        caches.iter().any(|c| c.path.starts_with(inside.unwrap()))
                            || *name == "BUNDLE_PATH",
                        "{name}={value} is not where {kind}'s caches are"
                    );
                }
                assert_ne!(*name, "CARGO_HOME", "deft sets CARGO_HOME already");
            }
        }
    }
    let names = |kind, wrapper| {
        caches(kind, wrapper)
            .iter()
            .map(|c| format!("{}={}", c.name, c.path))
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        names(Kind::Cargo, false),
        "cargo-registry=.cargo/registry cargo-git=.cargo/git"
    );
    assert_eq!(names(Kind::Npm, false), "npm=.npm");
    assert_eq!(names(Kind::Pip, false), "pip=.cache/pip");
    assert_eq!(names(Kind::Go, false), "go-mod=go/pkg/mod");
    assert_eq!(
        names(Kind::Maven, true),
        "maven=.m2/repository maven-wrapper=.m2/wrapper"
    );
    assert_eq!(
        names(Kind::Gradle, true),
        "gradle=.gradle/caches gradle-wrapper=.gradle/wrapper"
    );
    assert_eq!(names(Kind::Bundler, false), "bundler=.bundle/cache");
}

#[test]
fn a_skipped_project_keeps_no_cache() {
    let found = detect(&["package.json", "yarn.lock"], &mut |_| None);
    assert!(found[0].install.is_none() && found[0].caches.is_empty());
}

#[test]
fn kinds_display_as_their_names() {
    let names: Vec<String> = Kind::ALL.iter().map(Kind::to_string).collect();
    assert_eq!(
        names,
        ["cargo", "npm", "pip", "go", "maven", "gradle", "bundler"]
    );
}
