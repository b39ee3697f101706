//! A setting a person gets wrong, in a `DEFT_*` variable or the config file, stops the real
//! `deft` at once with an error naming the variable or the key and what it takes, rather than
//! being ignored or read as something else.

use std::path::Path;
use std::process::Command;

const DEFT: &str = env!("CARGO_BIN_EXE_deft");

/// The variables these tests set, cleared first so that the caller's environment cannot
/// change what is refused.
const CLEARED: [&str; 7] = [
    "DEFT_CONFIG",
    "DEFT_DATABASE_URL",
    "DEFT_LISTEN",
    "DEFT_LOG",
    "DEFT_WORKERS",
    "DEFT_LEASE_MS",
    "DEFT_HOME",
];

/// Runs `deft ARGS --data-dir DATA` with `env`, checks that it failed, and checks that its
/// standard error holds each of `expect`.
fn check(data: &Path, args: &[&str], env: &[(&str, &str)], expect: &[&str]) {
    let mut command = Command::new(DEFT);
    command.args(args).arg("--data-dir").arg(data);
    for name in CLEARED {
        command.env_remove(name);
    }
    let output = command.envs(env.iter().copied()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} {env:?}: {stderr}");
    for fragment in expect {
        assert!(
            stderr.contains(fragment),
            "{args:?} {env:?}: `{fragment}` not in: {stderr}"
        );
    }
}

/// A timing variable set to nonsense stops the command at once, naming the variable, where it
/// used to be ignored silently.
#[test]
fn a_bad_timing_variable_stops_serve_and_run_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["serve", "--listen", "127.0.0.1:0"][..],
        &["run", "--repo", "/nonexistent", "anything"][..],
    ] {
        check(
            dir.path(),
            args,
            &[("DEFT_LEASE_MS", "soon")],
            &["DEFT_LEASE_MS is `soon`", "whole number of milliseconds"],
        );
    }
}

/// clap names the flag a bad value was for, not the variable it came from: the message names
/// both, and the command stops before it touches the data dir.
#[test]
fn a_bad_workers_variable_stops_serve_and_worker_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (command, value) in [("serve", "many"), ("serve", "-1"), ("worker", "0")] {
        let least = if command == "worker" { "1" } else { "0" };
        check(
            &data,
            &[command],
            &[("DEFT_WORKERS", value)],
            &[
                &format!("invalid value '{value}'"),
                &format!("whole number of tasks run at once, at least {least}"),
                "DEFT_WORKERS",
            ],
        );
    }
    assert!(!data.exists(), "refused before the data dir was made");
}

#[test]
fn a_listen_address_without_a_port_stops_serve_before_it_opens_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for value in ["localhost", "127.0.0.1:http", ":7878"] {
        check(
            &data,
            &["serve"],
            &[("DEFT_LISTEN", value)],
            &["an address and port", "DEFT_LISTEN"],
        );
    }
    assert!(!data.exists(), "refused before the data dir was made");
}

#[test]
fn a_log_filter_that_does_not_parse_stops_the_command_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    check(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0"],
        &[("DEFT_LOG", "deft=loud")],
        &["DEFT_LOG is `deft=loud`, not a log filter", "`info`"],
    );
}

/// A bad value in the config file stops `deft serve` naming the section and the key, before
/// it makes the first admin or listens.
#[test]
fn a_bad_config_value_stops_serve_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("deft.toml");
    for (text, expect) in [
        (
            "[limits]\nconcurrent_tasks_per_user = 0\n",
            &["deft.toml: [limits] concurrent_tasks_per_user must be positive"][..],
        ),
        (
            "[retention]\ndays = \"soon\"\n",
            &["bad [retention] section", "in `days`"][..],
        ),
        (
            "[environments]\ncache_mib = 0\n",
            &["[environments] cache_mib is 0", "in MiB"][..],
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let data = dir.path().join("data");
        check(
            &data,
            &["serve", "--listen", "127.0.0.1:0"],
            &[("DEFT_CONFIG", config.to_str().unwrap())],
            expect,
        );
        assert!(
            !data.join("admin-token").exists(),
            "no admin was made for a server that did not start"
        );
    }
}
