"""Many ``python -m lit_seg`` runs for the price of one interpreter start.

Starting the CLI costs ~8 s of imports (torch, Lightning, W&B) on the 2-core CI machine; the
bad-input tests run it ~20 times. :func:`run_many` starts one Python process that imports the CLI
once and then forks a child per command line. Each child is its own process, as a user's shell
would start it: its own working folder, environment, stdout/stderr (captured from the file
descriptors) and exit status, and it runs ``python -m lit_seg`` itself (``runpy``), with the
interpreter's top level emulated: ``SystemExit`` gives the status, any other exception prints
its traceback and gives 1. The parent never runs a torch operation before forking (torch's
OpenMP pool would not survive a fork).

An argument ``@glob:<pattern>`` is replaced, when its command starts, by the one path matching
the pattern in the command's working folder (e.g. a run folder an earlier command created).

Used as ``python -m tests.cli_fork`` with a JSON list of ``{"args", "cwd", "env"}`` on stdin;
prints a JSON list of ``{"returncode", "stdout", "stderr"}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_MARK = "\n@@cli_fork results@@\n"


def _child(args: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    import runpy
    import traceback

    code = 1
    try:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        for fd, path in ((1, out), (2, err)):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        if env.get("OMP_NUM_THREADS"):  # what a fresh process would read at start
            import torch

            torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
        # "@glob:<pattern>": the one path matching it in the working folder, when the child starts
        # (e.g. the run folder an earlier command of the same batch created).
        sys.argv = ["lit-seg", *(_expand(arg) for arg in args)]
        try:
            runpy.run_module("lit_seg", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit_:
            if exit_.code is None:
                code = 0
            elif isinstance(exit_.code, int):
                code = exit_.code
            else:
                print(exit_.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - what the interpreter's top level does
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _expand(arg: str) -> str:
    if not arg.startswith("@glob:"):
        return arg
    matches = sorted(Path().glob(arg[len("@glob:"):]))
    return str(matches[0]) if len(matches) == 1 else arg


def serve(cases: list[dict], timeout: float, jobs: int = 1) -> list[dict]:
    """Forks one child per case, at most ``jobs`` at a time (in order), each killed after ``timeout`` s."""
    import lit_seg.cli  # noqa: F401 - the imports the children share

    results: list[dict | None] = [None] * len(cases)
    with tempfile.TemporaryDirectory() as tmp:
        def files(i: int) -> tuple[str, str]:
            return os.path.join(tmp, f"{i}.out"), os.path.join(tmp, f"{i}.err")

        def read(path: str) -> str:
            return Path(path).read_text(errors="replace") if os.path.exists(path) else ""

        running: dict[int, tuple[int, float]] = {}  # pid -> (case index, deadline)
        pending = list(range(len(cases)))
        while pending or running:
            while pending and len(running) < jobs:
                i = pending.pop(0)
                pid = os.fork()
                if pid == 0:
                    _child(cases[i]["args"], cases[i]["cwd"], cases[i]["env"], *files(i))
                running[pid] = (i, time.monotonic() + timeout)
            for pid, (i, deadline) in list(running.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    code = os.waitstatus_to_exitcode(status)
                elif time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    code = -9
                else:
                    continue
                del running[pid]
                out, err = files(i)
                results[i] = {"returncode": code, "stdout": read(out), "stderr": read(err)}
            time.sleep(0.05)
    return results


def run_many(cases: list[tuple[list[str], Path, dict[str, str]]],
             timeout: float = 120, jobs: int = 1) -> list[subprocess.CompletedProcess]:
    """Runs each ``(args, cwd, extra env)`` as ``python -m lit_seg *args`` (see the module docstring);
    ``jobs`` > 1 runs that many at once, for commands that do not depend on each other's results."""
    base = {**os.environ, "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "0", "PYTHONPATH": str(ROOT)}
    payload = [{"args": list(args), "cwd": str(cwd), "env": {**base, **env}} for args, cwd, env in cases]
    done = subprocess.run([sys.executable, "-m", "tests.cli_fork", str(timeout), str(jobs)], input=json.dumps(payload),
                          capture_output=True, text=True, cwd=ROOT, env=base, timeout=60 + timeout * len(cases),
                          check=False)
    if done.returncode != 0 or _MARK not in done.stdout:
        raise RuntimeError(f"tests.cli_fork failed:\n{done.stderr[-3000:]}")
    results = json.loads(done.stdout.split(_MARK, 1)[1])
    return [subprocess.CompletedProcess(["lit-seg", *case["args"]], r["returncode"], r["stdout"], r["stderr"])
            for case, r in zip(payload, results)]


if __name__ == "__main__":
    results = serve(json.load(sys.stdin), float(sys.argv[1]) if len(sys.argv) > 1 else 120.0,
                    int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    sys.stdout.write(_MARK + json.dumps(results))
