"""Drives a deft binary's `deft run` over a `deft eval` suite (see run.sh): for a deft from
before `deft eval` existed, so that its results sit beside today's in the same report. Per
task: a fresh directory where the suite's setup.sh makes the repository; `deft run` on it with
a data dir of its own, stopped at the task's time limit; the model requests and tokens read
from that data dir's store; then, when the task completed, the branch it pushed is cloned
(hooks, filters and the machine's git config off) and the suite's check.sh runs over the clone
in a sandbox of the checking deft, which the host neither runs nor reads."""

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import find_deft, load_suite, progress, result, run_check, settings, setup, write_report  # noqa: E402

# The variables `deft run` reads its model from; everything else of the caller's deft setup
# (its data dir, config file, database) is left out, so that each task starts from nothing.
MODEL_VARS = ("DEFT_MODEL", "DEFT_MODEL_BASE_URL", "DEFT_MODEL_API_KEY")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("deft_run", help="the deft binary whose `deft run` is evaluated")
    parser.add_argument("--root", required=True)
    parser.add_argument("--runner", default=None, help="the report's runner, e.g. `deft 335cab7`")
    parser.add_argument("--suite", default=None)
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--json", required=True, help="where the report goes")
    parser.add_argument("--timeout", type=int, default=None,
                        help="seconds per task [default: the task's timeout_secs, 1800 unless task.toml says]")
    parser.add_argument("--keep", default=None, help="keep each task's directory (repository, data dir, output) under this new directory")
    parser.add_argument("--deft", default=None, help="the deft binary for the checks' sandboxes")
    args = parser.parse_args()

    root = Path(args.root)
    suite = Path(args.suite or root / "evals/suite").resolve()
    deft = find_deft(args.deft, root, "deft-run")
    missing = [name for name in MODEL_VARS if not os.environ.get(name)]
    if missing:
        sys.exit(f"deft-run: set {', '.join(missing)}: the model `deft run` is to use (see docs/EVALUATION.md)")
    if not os.access(args.deft_run, os.X_OK):
        sys.exit(f"deft-run: {args.deft_run}: not an executable; give the deft binary to evaluate")
    keep = Path(args.keep).resolve() if args.keep else None
    if keep:
        keep.mkdir(parents=True, exist_ok=False)
    tasks = load_suite(suite, args.only)
    started = int(time.time() * 1000)
    reports = []
    for task in tasks:
        report = run_task(args, task, deft, keep)
        progress("deft-run", report)
        reports.append(report)
    report = write_report(Path(args.json).resolve(), args.runner or f"deft run ({Path(args.deft_run).name})",
                          os.environ["DEFT_MODEL"], suite, root, started, reports)
    t = report["totals"]
    print(f"deft-run: {t['solved']}/{t['tasks']} solved, {t['requests']} requests, "
          f"{t['prompt_tokens']} prompt and {t['completion_tokens']} completion tokens; report in {args.json}",
          file=sys.stderr)


def run_task(args, task, deft, keep):
    work = keep / task.name if keep else Path(tempfile.mkdtemp(prefix=f"deft-run-{task.name}-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        repo = work / task.name
        failed = setup(task, repo)
        if failed:
            return result(task.name, "failed", failed)
        data = work / "data"
        limit = args.timeout or settings(task)["timeout_secs"]
        started = time.monotonic()
        code, timed_out = run_deft(args.deft_run, data, repo, task, limit, work / "run.log")
        wall_ms = int((time.monotonic() - started) * 1000)
        ended = read_store(data)
        if ended is None:
            return dict(result(task.name, "failed", f"deft run exited with {code} before storing the task (see run.log)"), wall_ms=wall_ms)
        state, reason, branch, requests, usage = ended
        if timed_out:
            state, reason = "cancelled", f"it ran past its time limit of {limit} s"
        elif state in ("queued", "in_progress"):
            # `deft run` stopped with the task unfinished: its own error says why.
            state, reason = "failed", f"deft run exited with {code}: {last_line(work / 'run.log')}"
        report = result(task.name, state, reason)
        report.update(wall_ms=wall_ms, requests=requests, **usage)
        if state == "completed":
            if branch is None:
                report.update(check="error", check_output="the task completed without a branch")
            else:
                passed, check, output = check_branch(deft, task, repo, branch, settings(task)["check_timeout_secs"])
                report.update(solved=passed, check=check, check_output=output)
        elif reason and reason.startswith("question:"):
            report["solved"] = settings(task)["expect_question"]
        return report
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def run_deft(binary, data, repo, task, limit, log_path):
    """`deft run` on the task, its output to `log_path`; its exit code and whether it was
    stopped at `limit` seconds (SIGINT first, as a person's Ctrl-C, then SIGKILL)."""
    # From nothing but the model's variables: no credential, git setting or deft setup of
    # the caller reaches the deft being evaluated (an older one, with older sandboxes).
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(data.parent), "LANG": "C.UTF-8"}
    env.update({name: os.environ[name] for name in MODEL_VARS})
    command = [binary, "run", "--data-dir", str(data), "--repo", str(repo), (task / "task.md").read_text().strip()]
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True)
        try:
            return child.wait(timeout=limit), False
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGINT)
            try:
                return child.wait(timeout=60), True
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                return child.wait(), True


def last_line(path):
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "(no output)"


def read_store(data):
    """The task's end, its branch, its model requests and tokens, from the SQLite store `deft
    run` made in `data` (opened read-only); None when it holds no task."""
    stores = sorted(data.glob("*.db")) + sorted(data.glob("*.sqlite*"))
    if not stores:
        return None
    db = sqlite3.connect(f"file:{stores[0]}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT id, state, attention_kind, attention_message, input_tokens, output_tokens, cached_tokens "
                         "FROM tasks ORDER BY created_at LIMIT 1").fetchone()
        if row is None:
            return None
        task_id, state, kind, message, prompt, completion, cached = row
        reason = f"{kind}: {(message or '').splitlines()[0] if message else ''}" if kind else None
        branch = db.execute("SELECT head FROM pull_requests WHERE task_id = ?", (task_id,)).fetchone()
        requests = db.execute("SELECT count(*) FROM events WHERE task_id = ? AND kind = 'model_call'", (task_id,)).fetchone()[0]
    finally:
        db.close()
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": cached}
    return state, reason, branch[0] if branch else None, requests, usage


def check_branch(deft, task, repo, branch, timeout):
    """Clones `branch` of `repo` into a fresh directory, with nothing of the branch run on the
    host (no hooks, no filters, no config but the clone's own), then checks it in a sandbox."""
    work = Path(tempfile.mkdtemp(prefix=f"deft-run-check-{task.name}-"))
    try:
        # From nothing: no GIT_CONFIG_* or GIT_DIR of the caller's turns on a filter the
        # branch's .gitattributes could name.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "LANG": "C.UTF-8",
               "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
        cloned = subprocess.run(
            ["git", "-c", "core.hooksPath=/dev/null", "-c", "protocol.allow=never", "-c", "protocol.file.allow=always",
             "clone", "--quiet", "--no-local", "--no-recurse-submodules", "--single-branch", "--branch", branch,
             "--", str(repo), str(work / task.name)],
            env=env, capture_output=True, text=True, timeout=120,
        )
        if cloned.returncode != 0:
            return False, "error", f"cloning {branch}: {cloned.stderr.strip()[-500:]}"
        return run_check(deft, task, work, timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
