//! Task environments from the repository's Dockerfile, end to end: `deft run` with a real
//! image builder (Podman's Engine API service, started here), a base image made locally from
//! Debian's packages, real bubblewrap sandboxes on the image's root, and the scripted model.

mod common;

use std::path::{Path, PathBuf};

use common::{DEFT, sh};
use deft_testkit::model_server::{ScriptedCall, ScriptedModel, Step, Turn};

/// A repository whose Dockerfile installs `greet`, a tool the host lacks, and sets its
/// greeting; `./test.sh` passes once greeting.txt says hello.
fn repo_with_dockerfile(dir: &Path, dockerfile: &str) -> PathBuf {
    let repo = dir.join("greeter");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(
        repo.join("test.sh"),
        "#!/bin/sh\ntest \"$(cat greeting.txt 2>/dev/null)\" = hello\n",
    )
    .unwrap();
    sh(
        &repo,
        "chmod +x test.sh && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    repo
}

const GREETER: &str = "FROM localhost/deft-test-base:1\n\
RUN printf '#!/bin/sh\\necho \"$GREETING\"\\n' > /usr/local/bin/greet && chmod +x /usr/local/bin/greet\n\
ENV GREETING=hello\n";

/// Plans, has `greet` write greeting.txt, finishes, and passes its review.
fn greeting_task() -> Vec<Step> {
    vec![
        Step::Reply(Turn::calls(vec![ScriptedCall::new(
            "p1",
            "submit_plan",
            r#"{"requirements": ["greeting.txt says hello"], "acceptance_criteria": ["./test.sh passes"], "steps": ["Write greeting.txt with greet"]}"#,
        )])),
        Step::Reply(Turn::calls(vec![ScriptedCall::new(
            "e1",
            "bash",
            r#"{"command": "cd greeter && command -v greet && greet > greeting.txt && ./test.sh && echo made-it"}"#,
        )])),
        Step::Reply(Turn::calls(vec![ScriptedCall::new(
            "e2",
            "finish",
            r#"{"summary": "greeting.txt written by greet"}"#,
        )])),
        Step::Reply(Turn::text(
            r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
        )),
    ]
}

async fn deft_run(
    server: &ScriptedModel,
    data: &Path,
    repo: &Path,
    builder: &Path,
) -> (Option<i32>, String) {
    let output = tokio::process::Command::new(DEFT)
        .args(["run", "--data-dir"])
        .arg(data)
        .arg("--repo")
        .arg(repo)
        .arg("write greeting.txt with the greet tool, so that ./test.sh passes")
        .env("DEFT_MODEL", "anthropic/scripted-model")
        .env("DEFT_MODEL_BASE_URL", &server.url)
        .env("DEFT_MODEL_API_KEY", "test-key")
        .env("DEFT_IMAGE_BUILDER", builder)
        .env_remove("DEFT_CONFIG")
        .output()
        .await
        .unwrap();
    (
        output.status.code(),
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Podman's service on storage kept in the target directory, with the base image made.
fn podman() -> deft_testkit::podman::PodmanService {
    let podman = deft_testkit::podman::PodmanService::start(
        &deft_testkit::rootfs::cache_dir().join("podman"),
    );
    deft_testkit::podman::base_image(&podman);
    podman
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repositorys_dockerfile_is_the_tasks_environment_and_is_built_once() {
    let podman = podman();
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with_dockerfile(dir.path(), GREETER);
    let data = dir.path().join("data");

    let first = ScriptedModel::start(greeting_task()).await;
    let (code, output) = deft_run(&first, &data, &repo, podman.socket()).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("image built"), "{output}");
    let branch = sh(
        &repo,
        "git branch --list 'deft/*' --format='%(refname:short)'",
    )
    .trim()
    .to_owned();
    assert_eq!(
        sh(&repo, &format!("git show {branch}:greeting.txt")),
        "hello\n",
        "the task's command found the image's tool and its ENV"
    );
    let requests = first.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.body.to_string().contains("made-it")),
        "the command's output reached the model"
    );

    // A second task on the same repository uses the same image: nothing is built.
    let second = ScriptedModel::start(greeting_task()).await;
    let (code, output) = deft_run(&second, &data, &repo, podman.socket()).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("image reused"), "{output}");
    assert!(!output.contains("image built"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerfile_that_does_not_build_needs_attention_with_the_builders_words() {
    let podman = podman();
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with_dockerfile(
        dir.path(),
        "FROM localhost/deft-test-base:1\nRUN echo the-build-broke-here >&2 && exit 3\n",
    );
    let server = ScriptedModel::start(vec![]).await;
    let (code, output) = deft_run(&server, &dir.path().join("data"), &repo, podman.socket()).await;
    assert_eq!(code, Some(3), "{output}");
    assert!(output.contains("image failed"), "{output}");
    assert!(
        output.contains("cannot be made") && output.contains("the-build-broke-here"),
        "{output}"
    );
    assert!(
        server.requests().is_empty(),
        "no model call before the environment"
    );
}

fn env_build(data: &Path, repo: &Path, builder: &Path) -> (Option<i32>, String) {
    let output = std::process::Command::new(DEFT)
        .args(["env", "build", "--data-dir"])
        .arg(data)
        .arg("--repo")
        .arg(repo)
        .env("DEFT_IMAGE_BUILDER", builder)
        .env_remove("DEFT_CONFIG")
        .output()
        .unwrap();
    (
        output.status.code(),
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_build_shows_a_dockerfiles_build_alone_and_refuses_what_deft_does_not_build() {
    let podman = podman();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A Dockerfile of its own, so that this test's image is not another test's cached one.
    let repo = repo_with_dockerfile(
        dir.path(),
        &format!(
            "{GREETER}RUN echo built-for-env-build-{}\n",
            std::process::id()
        ),
    );
    let (code, output) = env_build(&data, &repo, podman.socket());
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("building greeter/Dockerfile") && output.contains("built image"),
        "{output}"
    );
    assert!(
        output.contains("built-for-env-build-"),
        "the builder's own output: {output}"
    );
    assert!(output.contains("ENV GREETING=hello"), "{output}");
    // Built once: the second time it comes from the cache.
    let (code, output) = env_build(&data, &repo, podman.socket());
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("cached image"), "{output}");

    let refused = dir.path().join("refused");
    std::fs::create_dir(&refused).unwrap();
    let refused = repo_with_dockerfile(
        &refused,
        "FROM localhost/deft-test-base:1\nRUN --mount=type=bind,source=/,target=/host true\n",
    );
    let (code, output) = env_build(&data, &refused, podman.socket());
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("--mount"), "{output}");

    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    sh(
        &plain,
        "git init -q -b main && echo hi > README && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    let (code, output) = env_build(&data, &plain, podman.socket());
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("has no Dockerfile"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repositorys_setting_names_its_dockerfile_and_a_bad_one_is_refused() {
    let podman = podman();
    let dir = tempfile::tempdir().unwrap();
    // The Dockerfile is not where `auto` looks: only the setting finds it.
    let repo = dir.path().join("greeter");
    std::fs::create_dir_all(repo.join("ci")).unwrap();
    std::fs::write(repo.join("ci/Dockerfile"), GREETER).unwrap();
    std::fs::write(
        repo.join("test.sh"),
        "#!/bin/sh\ntest \"$(cat greeting.txt 2>/dev/null)\" = hello\n",
    )
    .unwrap();
    sh(
        &repo,
        "chmod +x test.sh && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    let model = ScriptedModel::start(greeting_task()).await;
    let data = dir.path().join("data");
    let builder = podman.socket().to_string_lossy().into_owned();
    let server = common::start_with_env(&data, &model, 1, &[("DEFT_IMAGE_BUILDER", &builder)]);
    let added = server
        .call(
            reqwest::Method::POST,
            "/repos",
            Some(serde_json::json!({"path": repo})),
        )
        .await;
    assert_eq!(added["environment"], "auto", "{added}");
    let id = added["id"].as_str().unwrap().to_owned();

    let refused = server
        .call(
            reqwest::Method::PUT,
            &format!("/repos/{id}/environment"),
            Some(serde_json::json!({"environment": "dockerfile ../../etc/passwd"})),
        )
        .await;
    assert!(
        refused.to_string().contains("environment")
            && refused.to_string().contains("inside the repository"),
        "{refused}"
    );
    let set = std::process::Command::new(DEFT)
        .args([
            "env",
            "from",
            "--repo",
            "greeter",
            "dockerfile",
            "ci/Dockerfile",
        ])
        .args(["--server", &server.url, "--token", &server.token])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&set.stdout);
    assert!(
        set.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert_eq!(said.trim(), "greeter: dockerfile ci/Dockerfile");
    // The build alone, by the repository's id: its setting applies.
    let (code, output) = env_build(&data, Path::new(&id), podman.socket());
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("building greeter/ci/Dockerfile"),
        "{output}"
    );

    let task = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(serde_json::json!({
                "description": "write greeting.txt with the greet tool",
                "repos": [id],
            })),
        )
        .await;
    let task_id = task["id"].as_str().unwrap();
    let done = server.until(task_id, "completed").await;
    let branch = done["pull_requests"][0]["head"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sh(&repo, &format!("git show {branch}:greeting.txt")),
        "hello\n",
        "{done}"
    );
}

/// A Node project without a Dockerfile, its lockfile made against the registry stand-in.
fn node_repo(dir: &Path, registry: &str) -> PathBuf {
    let repo = dir.join("app");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(
        repo.join("package.json"),
        r#"{"name": "app", "version": "1.0.0", "dependencies": {"left-pad": "1.0.0"},
            "scripts": {"test": "node -e \"require('left-pad')\""}}"#,
    )
    .unwrap();
    std::fs::write(repo.join(".gitignore"), "node_modules/\n").unwrap();
    let home = dir.join("npm-home");
    std::fs::create_dir(&home).unwrap();
    let locked = std::process::Command::new("npm")
        .args([
            "install",
            "--package-lock-only",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
        ])
        .arg(format!("--registry={registry}"))
        .arg(format!("--cache={}", home.join("cache").display()))
        .current_dir(&repo)
        .env("HOME", &home)
        .env("npm_config_update_notifier", "false")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .output()
        .unwrap();
    assert!(locked.status.success(), "{locked:?}");
    sh(
        &repo,
        "git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    repo
}

/// Plans, shows the dependency is installed by writing proof.txt, finishes, passes review.
fn proof_task() -> Vec<Step> {
    vec![
        Step::Reply(Turn::calls(vec![ScriptedCall::new(
            "p1",
            "submit_plan",
            r#"{"requirements": ["proof.txt"], "acceptance_criteria": ["left-pad loads"], "steps": ["Write proof.txt"]}"#,
        )])),
        Step::Reply(Turn::calls(vec![ScriptedCall::new(
            "e1",
            "bash",
            r#"{"command": "cd app && node -e \"process.stdout.write(require('left-pad'))\" > proof.txt && cat proof.txt"}"#,
        )])),
        Step::Reply(Turn::calls(vec![ScriptedCall::new(
            "e2",
            "finish",
            r#"{"summary": "proof.txt written"}"#,
        )])),
        Step::Reply(Turn::text(
            r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#,
        )),
    ]
}

/// Waits for the task to end its run, completed or not.
async fn until_settled(server: &common::Server, id: &str) -> serde_json::Value {
    let started = std::time::Instant::now();
    loop {
        let task = server
            .call(reqwest::Method::GET, &format!("/tasks/{id}"), None)
            .await;
        if task["state"] == "completed" || task["state"] == "needs_attention" {
            return task;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "{task}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_projects_dependencies_are_installed_once_and_the_next_task_uses_the_cache() {
    use deft_testkit::npm_registry::{NpmRegistry, Package};
    let registry = NpmRegistry::start(vec![Package::new("left-pad", "1.0.0")]).await;
    let dir = tempfile::tempdir().unwrap();
    let repo = node_repo(dir.path(), registry.url());
    let downloads_before = registry.tarball_downloads();
    let model = ScriptedModel::start([proof_task(), proof_task()].concat()).await;
    let data = dir.path().join("data");
    let server = common::start_with(&data, &model, 1);
    // The stand-in is on this machine: only a rule naming the address lets the proxy through,
    // and npm must not go around the proxy for it.
    let settings = server
        .call(
            reqwest::Method::PUT,
            "/settings/environment",
            Some(serde_json::json!({
                "network": {"level": "custom", "allow": ["127.0.0.1"]},
                "env": {"npm_config_registry": registry.url(), "NO_PROXY": "", "no_proxy": ""},
            })),
        )
        .await;
    assert_eq!(settings["network"]["level"], "custom", "{settings}");

    let mut branches = Vec::new();
    let mut after_first = 0;
    for round in 0..2 {
        let task = server
            .call(
                reqwest::Method::POST,
                "/tasks",
                Some(serde_json::json!({
                    "description": format!("write proof.txt, round {round}"),
                    "repos": [repo.to_string_lossy()],
                })),
            )
            .await;
        let id = task["id"].as_str().unwrap().to_owned();
        let done = until_settled(&server, &id).await;
        let events = server
            .call(reqwest::Method::GET, &format!("/tasks/{id}/events"), None)
            .await;
        assert_eq!(done["state"], "completed", "{done}\n{events}");
        let installs: Vec<_> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["data"]["step"] == "install")
            .map(|event| event["data"]["status"].as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(installs, ["started", "done"], "{events}");
        branches.push(
            done["pull_requests"][0]["head"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        if round == 0 {
            after_first = registry.tarball_downloads();
            assert!(
                after_first > downloads_before,
                "the first task downloads the package"
            );
        }
    }
    for branch in &branches {
        assert_eq!(
            sh(&repo, &format!("git show {branch}:proof.txt")),
            "left-pad@1.0.0",
            "the task's command found the installed dependency"
        );
        assert!(
            sh(&repo, &format!("git ls-tree -r --name-only {branch}"))
                .lines()
                .all(|path| !path.starts_with("node_modules")),
            "node_modules is not committed"
        );
    }
    assert_eq!(
        registry.tarball_downloads(),
        after_first,
        "the second task's install took the tarball from the kept cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builds_run_steps_go_out_only_through_the_tasks_egress_proxy() {
    use deft_testkit::npm_registry::{NpmRegistry, Package};
    let podman = podman();
    let registry = NpmRegistry::start(vec![Package::new("left-pad", "1.0.0")]).await;
    let dir = tempfile::tempdir().unwrap();
    // The RUN step speaks to the proxy the build arguments name; a direct connection to the
    // registry would find nothing listening in the build's namespace.
    let dockerfile = format!(
        "{GREETER}RUN bash -c 'exec 9<>/dev/tcp/127.0.0.1/{port} && echo direct$((6*7))' || echo no-direct$((6*7)); \
         bash -c 'p=${{HTTP_PROXY#http://}}; exec 3<>/dev/tcp/${{p%:*}}/${{p##*:}}; \
         printf \"GET {url}/left-pad HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3' | head -c 400\n",
        port = registry
            .url()
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/'),
        url = registry.url().trim_end_matches('/'),
    );
    let repo = repo_with_dockerfile(dir.path(), &dockerfile);
    let model = ScriptedModel::start(greeting_task()).await;
    let data = dir.path().join("data");
    let builder = podman.socket().to_string_lossy().into_owned();
    let server = common::start_with_env(&data, &model, 1, &[("DEFT_IMAGE_BUILDER", &builder)]);
    let settings = server
        .call(
            reqwest::Method::PUT,
            "/settings/environment",
            Some(serde_json::json!({"network": {"level": "custom", "allow": ["127.0.0.1"]}})),
        )
        .await;
    assert_eq!(settings["network"]["level"], "custom", "{settings}");
    let task = server
        .call(
            reqwest::Method::POST,
            "/tasks",
            Some(serde_json::json!({
                "description": "write greeting.txt with the greet tool",
                "repos": [repo.to_string_lossy()],
            })),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let done = until_settled(&server, &id).await;
    let events = server
        .call(reqwest::Method::GET, &format!("/tasks/{id}/events"), None)
        .await;
    assert_eq!(done["state"], "completed", "{done}\n{events}");
    let events = events["events"].as_array().unwrap().clone();
    let built = events
        .iter()
        .find(|event| event["data"]["step"] == "image" && event["data"]["status"] == "built")
        .unwrap_or_else(|| panic!("{events:?}"));
    let output = built["data"]["output"].as_str().unwrap();
    assert!(output.contains("no-direct42"), "{output}");
    assert!(
        output.contains("\"left-pad\""),
        "the packument came through the proxy: {output}"
    );
    assert!(
        events.iter().any(|event| event["kind"] == "network"
            && event["data"]["build"] == true
            && event["data"]["allowed"] == true),
        "the proxy's decision on the build's request is in the task's log: {events:?}"
    );
    assert!(
        registry
            .requests()
            .iter()
            .any(|path| path.contains("left-pad")),
        "{:?}",
        registry.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_dockerfile_the_operators_default_image_is_the_environment() {
    let podman = podman();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("plain");
    std::fs::create_dir(&repo).unwrap();
    sh(
        &repo,
        "echo hi > README && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(
        data.join("config.toml"),
        "[environments]\ndefault_image = \"localhost/deft-test-base:1\"\n",
    )
    .unwrap();
    // The host has bubblewrap; the Debian base image does not.
    assert!(Path::new("/usr/bin/bwrap").exists());
    let model = ScriptedModel::start(vec![
        Step::Reply(Turn::calls(vec![ScriptedCall::new(
            "p1",
            "submit_plan",
            r#"{"requirements": ["where.txt"], "acceptance_criteria": ["it says where"], "steps": ["Write where.txt"]}"#,
        )])),
        Step::Reply(Turn::calls(vec![ScriptedCall::new(
            "e1",
            "bash",
            r#"{"command": "cd plain && (test -e /usr/bin/bwrap && echo host || echo image) > where.txt"}"#,
        )])),
        Step::Reply(Turn::calls(vec![ScriptedCall::new(
            "e2",
            "finish",
            r#"{"summary": "where.txt written"}"#,
        )])),
        Step::Reply(Turn::text(r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#)),
    ])
    .await;
    let (code, output) = deft_run(&model, &data, &repo, podman.socket()).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("image built") || output.contains("image reused"),
        "{output}"
    );
    let branch = sh(
        &repo,
        "git branch --list 'deft/*' --format='%(refname:short)'",
    )
    .trim()
    .to_owned();
    assert_eq!(
        sh(&repo, &format!("git show {branch}:where.txt")),
        "image\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devcontainers_build_is_the_environment_when_there_is_no_dockerfile_at_the_root() {
    let podman = podman();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("greeter");
    std::fs::create_dir_all(repo.join(".devcontainer")).unwrap();
    std::fs::write(repo.join(".devcontainer/Dockerfile"), GREETER).unwrap();
    std::fs::write(
        repo.join(".devcontainer/devcontainer.json"),
        "// as editors write it\n{\"name\": \"greeter\", \"build\": {\"dockerfile\": \"Dockerfile\",},}\n",
    )
    .unwrap();
    std::fs::write(
        repo.join("test.sh"),
        "#!/bin/sh\ntest \"$(cat greeting.txt 2>/dev/null)\" = hello\n",
    )
    .unwrap();
    sh(
        &repo,
        "chmod +x test.sh && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
    );
    let model = ScriptedModel::start(greeting_task()).await;
    let (code, output) = deft_run(&model, &dir.path().join("data"), &repo, podman.socket()).await;
    assert_eq!(code, Some(0), "{output}");
    let branch = sh(
        &repo,
        "git branch --list 'deft/*' --format='%(refname:short)'",
    )
    .trim()
    .to_owned();
    assert_eq!(
        sh(&repo, &format!("git show {branch}:greeting.txt")),
        "hello\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_backend_runs_a_tasks_commands_in_a_container_of_the_image() {
    let podman = podman();
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with_dockerfile(dir.path(), GREETER);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(
        data.join("config.toml"),
        "[environments]\nbackend = \"container\"\n",
    )
    .unwrap();
    let model = ScriptedModel::start(vec![
        Step::Reply(Turn::calls(vec![ScriptedCall::new(
            "p1",
            "submit_plan",
            r#"{"requirements": ["greeting.txt says hello"], "acceptance_criteria": ["./test.sh passes"], "steps": ["Write greeting.txt with greet"]}"#,
        )])),
        Step::Reply(Turn::calls(vec![ScriptedCall::new(
            "e1",
            "bash",
            r#"{"command": "cd greeter && greet > greeting.txt && tr '\\0' ' ' < /proc/1/cmdline > init.txt && ./test.sh"}"#,
        )])),
        Step::Reply(Turn::calls(vec![ScriptedCall::new(
            "e2",
            "finish",
            r#"{"summary": "greeting.txt written by greet"}"#,
        )])),
        Step::Reply(Turn::text(r#"{"verdict": "pass", "checked": ["the diff meets each criterion"]}"#)),
    ])
    .await;
    let (code, output) = deft_run(&model, &data, &repo, podman.socket()).await;
    assert_eq!(code, Some(0), "{output}");
    let branch = sh(
        &repo,
        "git branch --list 'deft/*' --format='%(refname:short)'",
    )
    .trim()
    .to_owned();
    assert_eq!(
        sh(&repo, &format!("git show {branch}:greeting.txt")),
        "hello\n"
    );
    let init = sh(&repo, &format!("git show {branch}:init.txt"));
    assert!(
        init.contains("--control"),
        "pid 1 is deft's init in a container, holding its control socket: {init}"
    );
}
