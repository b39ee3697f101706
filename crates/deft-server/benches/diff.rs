//! What drawing a large diff costs the server: the syntax set's first load, then a diff of
//! 5,000 changed lines (five files of 1,000, Python and Rust, all highlighted) drawn unified
//! and split, and one file of 5,000 lines (past the highlighting limit, drawn plain).
//!
//! Run with `cargo bench -p deft-server --bench diff` (`DEFT_BENCH_RUNS=10` by default); the
//! figures go in docs/PERFORMANCE.md.

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::time::{Duration, Instant};

use deft_server::diff_bench::{Drawn, draw, load_syntaxes};

/// A new file of `lines` lines of code like a person writes, as `git diff` shows it.
fn added_file(path: &str, lines: usize, rust: bool) -> String {
    let mut diff = format!(
        "diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{lines} @@\n"
    );
    for n in 0..lines {
        let line = match (rust, n % 4) {
            (true, 0) => format!("/// Adds {n} to what it is given, saturating."),
            (true, 1) => format!("pub fn add_{n}(value: u64) -> u64 {{"),
            (true, 2) => format!("    value.saturating_add({n}) // \"{n}\""),
            (true, _) => "}".to_owned(),
            (false, 0) => format!("# Adds {n} to what it is given."),
            (false, 1) => format!("def add_{n}(value: int) -> int:"),
            (false, 2) => format!("    return value + {n}  # \"{n}\""),
            (false, _) => String::new(),
        };
        diff.push('+');
        diff.push_str(&line);
        diff.push('\n');
    }
    diff
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn measure(name: &str, text: &str, split: bool, runs: usize) {
    let mut times = Vec::new();
    let mut last = Drawn::default();
    for _ in 0..runs {
        let started = Instant::now();
        last = draw(text, split);
        times.push(started.elapsed());
    }
    println!(
        "{name}: median {:.1} ms over {runs} runs; {} lines, {} highlighted, {} KiB of HTML",
        median(times).as_secs_f64() * 1e3,
        last.lines,
        last.highlighted,
        last.html_bytes / 1024
    );
}

fn main() {
    let runs: usize = std::env::var("DEFT_BENCH_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(10);
    let started = Instant::now();
    load_syntaxes();
    println!(
        "syntax set, first load: {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let mut five = String::new();
    for n in 0..5 {
        five.push_str(&added_file(
            &format!("src/part{n}.{}", if n % 2 == 0 { "py" } else { "rs" }),
            1_000,
            n % 2 == 1,
        ));
    }
    measure("5,000 lines in 5 files, unified", &five, false, runs);
    measure("5,000 lines in 5 files, split", &five, true, runs);
    let one = added_file("src/big.py", 5_000, false);
    measure(
        "5,000 lines in 1 file (plain: past the limit), unified",
        &one,
        false,
        runs,
    );
}
