//! How long a task takes to start: from `POST /tasks` to the model's first request, on a
//! repository of 1,000 files, through the release `deft serve` on its defaults (SQLite, the
//! bubblewrap sandbox with its pool, the local forge). Everything a task does before it can
//! think is in it: the claim, the clone, the analysis, the environment, the sandbox.
//!
//! Run with `cargo bench -p deft --bench task_start`; `DEFT_BENCH_RUNS` sets how many tasks
//! are timed (default 5, after one that warms up). Target: a median under 100 ms. The
//! figures go into docs/PERFORMANCE.md.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on stdout, and its misses on stderr"
)]

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deft_testkit::model_server::{ScriptedModel, Turn};

const TARGET: Duration = Duration::from_millis(100);

fn main() {
    let runs: usize = std::env::var("DEFT_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let model = runtime.block_on(async {
        let model = ScriptedModel::start(vec![]).await;
        // The first request is what is timed; the task is cancelled while it waits.
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
            "mkdir -p src docs && for n in $(seq 1 500); do printf 'line %s\\n' $(seq 1 40) > src/file$n.py; \
             printf '# doc %s\\n' $n > docs/page$n.md; done \
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
        // `DEFT_BENCH_LOG=deft_agent=debug` shows where a start's time goes.
        .env(
            "DEFT_LOG",
            std::env::var("DEFT_BENCH_LOG").unwrap_or_else(|_| "error".into()),
        )
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
    let echo = std::env::var_os("DEFT_BENCH_LOG").is_some();
    std::thread::spawn(move || {
        let echo = std::env::var_os("DEFT_BENCH_LOG").is_some();
        for line in lines.map_while(Result::ok) {
            if echo {
                eprintln!("{line}");
            }
        }
    });
    let token = std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    // The pool's sandboxes are started ahead; let them settle.
    std::thread::sleep(Duration::from_secs(2));

    let mut times = Vec::new();
    for n in 0..=runs {
        let seen = model.requests().len();
        let posted = Instant::now();
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
        let task: serde_json::Value = response.json().unwrap();
        let first = loop {
            if let Some(request) = model.requests().get(seen) {
                break request.at;
            }
            assert!(
                posted.elapsed() < Duration::from_secs(60),
                "task {n} never reached the model"
            );
            std::thread::sleep(Duration::from_micros(200));
        };
        if n > 0 {
            times.push(first.saturating_duration_since(posted));
        }
        if echo {
            eprintln!(
                "bench: posted at {}, first request {:.1} ms later",
                wall_seconds(posted),
                first.saturating_duration_since(posted).as_secs_f64() * 1000.0
            );
        }
        let id = task["id"].as_str().unwrap();
        let cancelled = client
            .post(format!("{base}/api/v1/tasks/{id}/cancel"))
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert!(cancelled.status().is_success());
        // Let the cancelled run end and the pool refill before the next.
        std::thread::sleep(Duration::from_millis(1500));
    }
    let _ = child.kill();
    let _ = child.wait();

    let mut sorted = times.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("task start: POST /tasks to the model's first request, 1,000-file repository");
    println!("| measure | value |");
    println!("| --- | --- |");
    println!(
        "| each of {runs} runs | {} |",
        times
            .iter()
            .map(|t| format!("{:.0} ms", ms(*t)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("| median | {:.0} ms |", ms(median));
    if median >= TARGET {
        eprintln!(
            "target missed: a median of {:.0} ms, not under {} ms",
            ms(median),
            TARGET.as_millis()
        );
        std::process::exit(1);
    }
    println!("target met: under {} ms", TARGET.as_millis());
}

/// The wall-clock time of `at`, to set beside the server's log lines.
fn wall_seconds(at: Instant) -> String {
    let now = std::time::SystemTime::now() - at.elapsed();
    let since = now.duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("{}.{:06}", since.as_secs() % 60, since.subsec_micros())
}
