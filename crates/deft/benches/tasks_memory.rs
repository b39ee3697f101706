//! The memory N running tasks take on one machine, which sets how many `deft serve` runs at
//! once by default (`capacity.rs`). The release `deft serve` on its defaults gets N tasks of
//! one user on a repository of 200 files; the scripted model holds every call, so each task
//! stands where tasks spend their lives: cloned, its sandbox and egress proxy up, waiting on
//! the model. Measured as the proportional set size (PSS, shared pages split among their
//! users) of deft and every process under it (bubblewrap, the sandboxes' init), idle and then
//! with the N tasks waiting.
//!
//! Run with `cargo bench -p deft --bench tasks_memory`; `DEFT_BENCH_TASKS` sets N (default
//! 10). The figures go into docs/PERFORMANCE.md.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on stdout, and its misses on stderr"
)]

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deft_testkit::model_server::{ScriptedModel, Turn};

/// What the machine-wide default sets aside per task
/// (`deft_scheduler::capacity::MEMORY_PER_TASK`).
const BUDGET_PER_TASK_MIB: f64 = 512.0;

fn main() {
    let tasks: usize = std::env::var("DEFT_BENCH_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let model = runtime.block_on(async {
        let model = ScriptedModel::start(vec![]).await;
        // Every call is held for the whole measurement.
        model.set_delay(Duration::from_secs(3600));
        model.respond_with(|_, _| Turn::text("never read"));
        model
    });
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let made = Command::new("sh")
        .arg("-c")
        .arg(
            "for n in $(seq 1 200); do printf 'line %s\\n' $(seq 1 50) > file$n.txt; done \
             && git init -q -b main && git add -A && git -c user.name=t -c user.email=t@t commit -q -m init",
        )
        .current_dir(&repo)
        .status()
        .unwrap();
    assert!(made.success());
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_deft"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("DEFT_LOG", "error")
        .env("DEFT_MODEL", "anthropic/scripted-model")
        .env("DEFT_MODEL_BASE_URL", &model.url)
        .env("DEFT_MODEL_API_KEY", "bench-key")
        .env_remove("DEFT_WORKERS")
        .env_remove("DEFT_CONFIG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("deft serve exited").unwrap();
        if let Some(rest) = line.split("serving the API on ").nth(1) {
            break rest.split("/api/v1").next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let token = std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    // The pool's sandboxes are started ahead: let them settle before the idle figure.
    std::thread::sleep(Duration::from_secs(3));
    let idle = pss_tree(child.id());

    for n in 0..tasks {
        let response = client
            .post(format!("{base}/api/v1/tasks"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"description": format!("task {n}"), "repos": [repo]}))
            .send()
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().unwrap()
        );
    }
    let started = Instant::now();
    while model.requests().len() < tasks {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {} of {tasks} tasks reached the model",
            model.requests().len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The pool refills 200 ms after each take; let it.
    std::thread::sleep(Duration::from_secs(3));
    let busy = pss_tree(child.id());
    let _ = child.kill();
    let _ = child.wait();

    let mib = |kib: u64| kib as f64 / 1024.0;
    let per_task = mib(busy.saturating_sub(idle)) / tasks as f64;
    println!(
        "running tasks' memory: {tasks} tasks waiting on the model, PSS of deft and its sandboxes"
    );
    println!("| measure | value |");
    println!("| --- | --- |");
    println!(
        "| idle `deft serve` (pool of 2 sandboxes) | {:.1} MiB |",
        mib(idle)
    );
    println!("| with {tasks} tasks running | {:.1} MiB |", mib(busy));
    println!("| per running task | {per_task:.1} MiB |");
    if per_task > BUDGET_PER_TASK_MIB {
        eprintln!(
            "target missed: {per_task:.1} MiB per task, over the {BUDGET_PER_TASK_MIB} MiB the default sets aside"
        );
        std::process::exit(1);
    }
    println!("target met: under the {BUDGET_PER_TASK_MIB} MiB a task is given by the default");
}

/// PSS in KiB of `root` and every process descended from it.
fn pss_tree(root: u32) -> u64 {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command's closing parenthesis: state, then the parent's pid.
        let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        if let Some(parent) = after
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok())
        {
            parents.push((pid, parent));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let pid = tree[i];
        tree.extend(parents.iter().filter(|(_, p)| *p == pid).map(|(c, _)| *c));
        i += 1;
    }
    tree.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}
