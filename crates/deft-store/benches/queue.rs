//! The scheduler's own cost: tasks that do nothing, so that what is measured is the queue
//! (claim, lease, state changes, events) and the way an idle worker waits for work.
//!
//! Each worker here runs the loop `deft serve` and `deft worker` run, minus the engine: put back
//! expired leases, claim the next task, and when there is none wait for a state change (or a
//! 200 ms poll). "Running" a task is completing it at once.
//!
//! - Throughput: 1,000 queued tasks of 10 users, 4 workers, until all are completed.
//! - Slot to start: one user limited to one running task, 200 tasks queued, 2 workers; each task
//!   "runs" 5 ms; measured is the time from a task's completion (its slot freeing) to the next
//!   task's claim. Target: p50 under 50 ms.
//!
//! Run with `cargo bench -p deft-store --bench queue`; PostgreSQL too when
//! `DEFT_TEST_DATABASE_URL` is set (`scripts/test` shows how to start one).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports on stdout, and its misses on stderr"
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deft_core::{ForgeKind, RepoId, Timestamp, Transition, UserId};
use deft_store::{Actor, MasterKey, NewRepository, NewTask, Store};
use deft_testkit::TestDatabase;

const THROUGHPUT_TASKS: usize = 1_000;
const THROUGHPUT_USERS: usize = 10;
const THROUGHPUT_WORKERS: usize = 4;
const LATENCY_TASKS: usize = 200;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut missed = false;
    println!("| database | 1,000 no-op tasks, 4 workers | slot free → next start p50 | p99 |");
    println!("| --- | --- | --- | --- |");
    let mut databases = vec![("SQLite", TestDatabase::sqlite())];
    if std::env::var(deft_testkit::TEST_DATABASE_URL).is_ok() {
        databases.push(("PostgreSQL", runtime.block_on(TestDatabase::postgres())));
    } else {
        eprintln!(
            "PostgreSQL skipped: set {} to measure it too",
            deft_testkit::TEST_DATABASE_URL
        );
    }
    for (name, database) in &databases {
        let (elapsed, latencies) = runtime.block_on(measure(&database.url));
        let per_second = THROUGHPUT_TASKS as f64 / elapsed.as_secs_f64();
        let p50 = percentile(&latencies, 0.50);
        let p99 = percentile(&latencies, 0.99);
        println!(
            "| {name} | {:.2} s ({per_second:.0} tasks/s) | {:.1} ms | {:.1} ms |",
            elapsed.as_secs_f64(),
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        );
        if p50 >= Duration::from_millis(50) {
            eprintln!("target missed on {name}: p50 slot to start is not under 50 ms");
            missed = true;
        }
    }
    if missed {
        std::process::exit(1);
    }
}

async fn measure(url: &str) -> (Duration, Vec<Duration>) {
    let key = MasterKey::from_hex(&"42".repeat(32)).unwrap();
    let store = Store::open(url, key).await.unwrap();

    let mut repos = Vec::new();
    for n in 0..THROUGHPUT_USERS {
        repos.push(user_with_repo(&store, &format!("user{n}")).await);
    }
    for n in 0..THROUGHPUT_TASKS {
        let (user, repo) = &repos[n % THROUGHPUT_USERS];
        queue(&store, user, repo).await;
    }
    let started = Instant::now();
    let done = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..THROUGHPUT_WORKERS)
        .map(|n| {
            tokio::spawn(work(
                store.clone(),
                format!("bench-{n}"),
                10,
                Duration::ZERO,
                done.clone(),
                THROUGHPUT_TASKS,
            ))
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let throughput = started.elapsed();
    assert_eq!(done.lock().unwrap().len(), THROUGHPUT_TASKS);

    let (user, repo) = user_with_repo(&store, "latency").await;
    for _ in 0..LATENCY_TASKS {
        queue(&store, &user, &repo).await;
    }
    let done = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..2)
        .map(|n| {
            tokio::spawn(work(
                store.clone(),
                format!("latency-{n}"),
                1,
                Duration::from_millis(5),
                done.clone(),
                LATENCY_TASKS,
            ))
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let mut marks = done.lock().unwrap().clone();
    marks.sort_by_key(|(claimed, _)| *claimed);
    // Each claim after the first follows the completion of the task before it.
    let latencies = marks
        .windows(2)
        .map(|pair| pair[1].0.saturating_duration_since(pair[0].1))
        .collect();
    store.close().await;
    (throughput, latencies)
}

/// The worker loop of `deft serve`, with a task that takes `runs` instead of the engine.
/// Records (claimed, completed) instants; stops once `total` tasks are done.
async fn work(
    store: Store,
    name: String,
    per_user: i64,
    runs: Duration,
    done: Arc<Mutex<Vec<(Instant, Instant)>>>,
    total: usize,
) {
    let mut changes = store.events().queue_changes();
    while done.lock().unwrap().len() < total {
        changes.mark_seen();
        store.requeue_expired(Timestamp::now()).await.unwrap();
        let expires = Timestamp::now().plus_millis(30_000);
        let Some(task) = store.claim_next(&name, expires, per_user).await.unwrap() else {
            changes.wait(Duration::from_millis(200)).await;
            continue;
        };
        let claimed = Instant::now();
        if !runs.is_zero() {
            tokio::time::sleep(runs).await;
        }
        store
            .transition(Actor::Deft, &task, Transition::Complete, None)
            .await
            .unwrap();
        done.lock().unwrap().push((claimed, Instant::now()));
    }
}

async fn user_with_repo(store: &Store, name: &str) -> (UserId, RepoId) {
    let user = store.create_user(name, false).await.unwrap();
    let repo = store
        .add_repository(
            &user.id,
            NewRepository {
                name: "widgets".into(),
                forge: ForgeKind::Local,
                location: format!("/srv/git/{name}/widgets"),
                default_branch: "main".into(),
            },
        )
        .await
        .unwrap();
    (user.id, repo.id)
}

async fn queue(store: &Store, user: &UserId, repo: &RepoId) {
    store
        .create_task(
            user,
            NewTask {
                description: "nothing".into(),
                repos: vec![repo.clone()],
                chat_id: None,
                approve_plan: false,
            },
        )
        .await
        .unwrap();
}

fn percentile(sorted_or_not: &[Duration], quantile: f64) -> Duration {
    let mut sorted = sorted_or_not.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
    sorted[index]
}
