"""Drives mini-swe-agent over a `deft eval` suite (see run.sh, which installs it and starts
this). Per task: a fresh directory where the suite's setup.sh makes the repository (the suite
is trusted: it runs on the host); mini-swe-agent's `mini` run on the task's description with
the repository as its bubblewrap sandbox's only writable directory; then the suite's check.sh
in a deft sandbox over the directory the agent wrote, which the host neither runs nor reads.
Writes a report per mode in the shape of `deft eval --json` (version 1)."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import find_deft, load_suite, progress, result, run_check, settings, setup, write_report  # noqa: E402

MODES = {
    # mode: (mini's model class, its config, the report's runner)
    "toolcall": ("litellm", "mini.yaml", "tool calls"),
    "text": ("litellm_textbased", "mini_textbased.yaml", "text-based"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base_url")
    parser.add_argument("--venv", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--mode", choices=["toolcall", "text", "both"], default="both")
    parser.add_argument("--suite", default=None)
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--out", default=None)
    parser.add_argument("--step-limit", type=int, default=50)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per task")
    parser.add_argument("--deft", default=None, help="the deft binary for the checks' sandboxes")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="the most one answer may hold (mini-swe-agent sets none, and a small model's answer can run on until the window is full)")
    args = parser.parse_args()

    root = Path(args.root)
    suite = Path(args.suite or root / "evals/suite").resolve()
    out = Path(args.out or root / "target/mini-swe-agent/results").resolve()
    deft = find_deft(args.deft, root, "mini-swe-agent")
    tasks = load_suite(suite, args.only)
    modes = list(MODES) if args.mode == "both" else [args.mode]
    out.mkdir(parents=True, exist_ok=True)
    for mode in modes:
        started = int(time.time() * 1000)
        reports = []
        for task in tasks:
            report = run_task(args, mode, task, out, deft)
            progress(f"mini-swe-agent ({mode})", report)
            reports.append(report)
        path = out / f"{mode}.json"
        report = write_report(path, f"mini-swe-agent {args.version} ({MODES[mode][2]})",
                              f"openai-compatible/{args.model}", suite, root, started, reports)
        t = report["totals"]
        print(
            f"mini-swe-agent ({mode}): {t['solved']}/{t['tasks']} solved, {t['requests']} requests, "
            f"{t['prompt_tokens']} prompt and {t['completion_tokens']} completion tokens; report in {path}",
            file=sys.stderr,
        )


def run_task(args, mode, task, out, deft):
    model_class, config, _ = MODES[mode]
    work = Path(tempfile.mkdtemp(prefix=f"mswea-{task.name}-"))
    try:
        repo = work / task.name
        failed = setup(task, repo)
        if failed:
            return result(task.name, "failed", failed)
        trajectory = out / mode / f"{task.name}.traj.json"
        trajectory.parent.mkdir(parents=True, exist_ok=True)
        if trajectory.exists():
            trajectory.unlink()
        started = time.monotonic()
        ran = run_mini(args, model_class, config, task, repo, trajectory, work)
        wall_ms = int((time.monotonic() - started) * 1000)
        (out / mode / f"{task.name}.log").write_text(ran)
        info, requests, prompt, completion, cached = read_trajectory(trajectory)
        exit_status = info.get("exit_status") or (
            "no end: it was stopped or crashed (see its log)" if info else "no trajectory: it did not start (see its log)"
        )
        if exit_status == "Submitted":
            state, reason = "completed", None
        else:
            state, reason = "failed", f"mini-swe-agent ended with {exit_status}"
        report = result(task.name, state, reason)
        report.update(wall_ms=wall_ms, requests=requests, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
        if state == "completed":
            passed, check, output = run_check(deft, task, work, settings(task)["check_timeout_secs"])
            report.update(solved=passed, check=check, check_output=output)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_mini(args, model_class, config, task, repo, trajectory, work):
    """`mini` on the task, in its bubblewrap environment; what it printed."""
    wrapper = [
        "--unshare-all", "--die-with-parent", "--new-session",
        "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc",
        "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev",
    ]
    path = "/usr/local/bin:/usr/bin:/bin"
    # The host's toolchains under the home, read-only, as deft's sandboxes have them.
    home = Path.home()
    for name in (".cargo/bin", ".rustup", ".pyenv"):
        if (home / name).is_dir():
            wrapper += ["--ro-bind", str(home / name), str(home / name)]
    if (home / ".cargo/bin").is_dir():
        path = f"{home / '.cargo/bin'}:{path}"
        wrapper += ["--setenv", "RUSTUP_HOME", str(home / ".rustup")]
    wrapper += ["--setenv", "PATH", path, "--setenv", "HOME", "/tmp"]
    env = dict(os.environ)
    env.update(
        MSWEA_CONFIGURED="true",
        MSWEA_SILENT_STARTUP="1",
        MSWEA_COST_TRACKING="ignore_errors",
        MSWEA_GLOBAL_CONFIG_DIR=str(work / "mini-config"),
        # litellm's own copy of its model list: no fetch from the network at each start.
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    command = [
        str(Path(args.venv) / "bin/mini"),
        "--model", f"openai/{args.model}",
        "--model-class", model_class,
        "--agent-class", "default",
        "--environment-class", "bubblewrap",
        "-c", config,
        "-c", f"model.model_kwargs.api_base={args.base_url}",
        "-c", "model.model_kwargs.api_key=none",
        *(["-c", f"model.model_kwargs.max_tokens={args.max_tokens}"] if args.max_tokens else []),
        "-c", f"environment.cwd={repo}",
        "-c", "environment.wrapper_args=" + json.dumps(wrapper),
        "-c", f"agent.step_limit={args.step_limit}",
        "-c", f"agent.wall_time_limit_seconds={args.timeout}",
        "-c", "agent.cost_limit=0",
        "--task", (task / "task.md").read_text().strip(),
        "--yolo", "--exit-immediately",
        "--output", str(trajectory),
    ]
    try:
        ran = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=args.timeout + 120)
        return ran.stdout + ran.stderr
    except subprocess.TimeoutExpired as error:
        return f"killed after {args.timeout + 120} s\n{error.stdout or ''}"


def read_trajectory(path):
    """The run's end, its model requests and their tokens, from mini's trajectory file."""
    if not path.is_file():
        return {}, 0, 0, 0, 0
    data = json.loads(path.read_text())
    info = data.get("info") or {"exit_status": ""}
    prompt = completion = cached = responses = 0
    for message in data.get("messages", []):
        response = (message.get("extra") or {}).get("response")
        usage = response.get("usage") if isinstance(response, dict) else None
        if not usage:
            continue
        responses += 1
        prompt += usage.get("prompt_tokens") or 0
        completion += usage.get("completion_tokens") or 0
        cached += ((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0
    requests = info.get("model_stats", {}).get("api_calls", responses)
    return info, requests, prompt, completion, cached


if __name__ == "__main__":
    main()
