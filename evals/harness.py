"""What the suite's outside drivers share (mini-swe-agent's, and the one for an earlier deft's
`deft run`): reading the suite, making a task's repository, running its check in a deft
sandbox, and the report in the shape of `deft eval --json` (version 1, docs/EVALUATION.md)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SETUP_TIMEOUT = 300
# The same author as `deft eval` gives setup.sh, so that the repositories are the same.
GIT_AUTHOR = {
    "GIT_AUTHOR_NAME": "deft eval",
    "GIT_AUTHOR_EMAIL": "eval@deft.invalid",
    "GIT_COMMITTER_NAME": "deft eval",
    "GIT_COMMITTER_EMAIL": "eval@deft.invalid",
}


def find_deft(given, root, who):
    """The deft binary whose `deft sandbox run` runs the checks."""
    candidates = [given] if given else [
        os.environ.get("DEFT_BIN"),
        str(root / "target/release/deft"),
        str(root / "target/debug/deft"),
        shutil.which("deft"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    sys.exit(f"{who}: no deft binary for the checks' sandboxes: build it (`cargo build --release -p deft`) or pass --deft PATH")


def load_suite(suite, only):
    if not suite.is_dir():
        sys.exit(f"{suite}: not a directory; give the suite with --suite DIR")
    tasks = []
    for entry in sorted(suite.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        for required in ("setup.sh", "task.md", "check.sh"):
            if not (entry / required).is_file():
                sys.exit(f"{entry / required}: missing; every task needs setup.sh, task.md, check.sh (see docs/EVALUATION.md)")
        tasks.append(entry)
    names = [t.name for t in tasks]
    for name in only:
        if name not in names:
            sys.exit(f"--only {name}: {suite} has no such task; its tasks are {', '.join(names)}")
    tasks = [t for t in tasks if not only or t.name in only]
    if not tasks:
        sys.exit(f"{suite} holds no task (see docs/EVALUATION.md)")
    return tasks


def settings(task):
    """task.toml's keys the drivers use (a flat file of `key = value` lines)."""
    found = {"expect_question": False, "timeout_secs": 1800, "check_timeout_secs": 300}
    path = task / "task.toml"
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if "=" in line:
                key, value = (part.strip() for part in line.split("=", 1))
                if key == "expect_question":
                    found[key] = value == "true"
                elif key in ("timeout_secs", "check_timeout_secs"):
                    found[key] = int(value)
    return found


def setup(task, repo):
    """Runs the suite's setup.sh (trusted: it runs on the host) in `repo`, a new empty
    directory; None when it made the repository, else why not."""
    repo.mkdir(parents=True)
    env = dict(os.environ, **GIT_AUTHOR)
    ran = subprocess.run(["/bin/sh", str(task / "setup.sh")], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=SETUP_TIMEOUT)
    if ran.returncode != 0:
        return f"setup.sh exited with {ran.returncode}: {ran.stderr.strip()[-300:]}"
    return None


def run_check(deft, task, work, timeout):
    """The suite's check.sh, copied beside the task's result `work/NAME`, in a deft sandbox
    over `work`: the host neither runs nor reads what the task wrote."""
    suite_copy = work / ".suite"
    shutil.copytree(task, suite_copy, symlinks=False, ignore=lambda _dir, names: [n for n in names if (Path(_dir) / n).is_symlink()])
    # The throwaway data dir of `deft sandbox run`, outside the sandbox's workspace.
    data = Path(tempfile.mkdtemp(prefix="deft-check-"))
    script = f"cd /workspace/{task.name} && exec /bin/sh /workspace/.suite/check.sh"
    try:
        ran = subprocess.run(
            [deft, "sandbox", "run", "--data-dir", str(data), "--network", "connections",
             "--timeout", str(timeout), "--workspace", str(work), "--", "/bin/sh", "-c", script],
            capture_output=True, text=True, timeout=timeout + 60,
        )
    except subprocess.TimeoutExpired:
        return False, "timed_out", f"killed after {timeout} s"
    finally:
        shutil.rmtree(data, ignore_errors=True)
    output = (ran.stdout + ran.stderr)[-2000:].rstrip()
    if ran.returncode == 0:
        return True, "passed", output
    if ran.returncode == 124:
        return False, "timed_out", output
    return False, "failed", output


def result(name, state, reason):
    report = {
        "name": name, "solved": False, "state": state, "check": "not_run",
        "wall_ms": 0, "requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0,
    }
    if reason:
        report["reason"] = reason
    return report


def totals(reports):
    keys = ("wall_ms", "requests", "prompt_tokens", "completion_tokens")
    found = {"tasks": len(reports), "solved": sum(r["solved"] for r in reports)}
    found.update({key: sum(r[key] for r in reports) for key in keys})
    return found


def write_report(path, runner, model, suite, root, started, reports):
    report = {
        "version": 1,
        "runner": runner,
        "model": model,
        # Relative to the checkout when inside it: a report names no path of the machine.
        "suite": str(suite.relative_to(root.resolve())) if suite.is_relative_to(root.resolve()) else str(suite),
        "started_at_unix_ms": started,
        "tasks": reports,
        "totals": totals(reports),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def progress(who, report):
    print(
        f"{who}: {report['name']}: "
        f"{'solved' if report['solved'] else 'not solved'} ({report['state']}, "
        f"check {report['check']}) in {report['wall_ms'] / 1000:.1f} s, "
        f"{report['requests']} requests",
        file=sys.stderr,
    )
