"""Process life cycle: interpreter exit with a daemon thread inside a native call, and os.fork.

Each case runs in a fresh interpreter (the failures are aborts, crashes and deadlocks), with a
generous timeout that only guards against a hang of the whole test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import trajtransfer

HANG_GUARD_S = 60

# Work that keeps a thread inside GIL-released native code most of the time.
_WORK = {
    "lap": """
        c = rng.random((1500, 1500))
        def work():
            tt.linear_sum_assignment(c)
    """,
    "batch": """
        c = rng.random((8, 400, 400))
        def work():
            tt.linear_sum_assignment_batch(c, num_threads=2)
    """,
    "matcher": """
        def params():
            return {"layers.0.weight": rng.standard_normal((600, 600), dtype=np.float32),
                    "layers.0.bias": rng.standard_normal(600, dtype=np.float32),
                    "layers.1.weight": rng.standard_normal((600, 600), dtype=np.float32),
                    "layers.1.bias": rng.standard_normal(600, dtype=np.float32)}
        m = tt.GradientMatcher(tt.mlp_spec(1))
        a, b = params(), params()
        def work():
            m.add(a, b)
            m.solve(warm_start=False)
    """,
}


def _script(variant: str, body: str) -> str:
    head = "import os, sys, threading, time\nimport numpy as np\nimport trajtransfer as tt\n"
    head += "rng = np.random.default_rng(0)\n"
    return head + textwrap.dedent(_WORK[variant]) + textwrap.dedent(body)


def _start(script: str) -> subprocess.Popen:
    env = dict(os.environ)
    root = str(Path(trajtransfer.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"child hung for {HANG_GUARD_S} s; stderr: {err[-2000:]}")
    return proc.returncode, out, err


# The main thread returns while the daemon thread is (almost surely) inside a native call.
_EXIT_BODY = """
    started = threading.Event()
    def loop():
        while True:
            work()
            started.set()
    threading.Thread(target=loop, daemon=True).start()
    started.wait()
    time.sleep(0.2)
    print("main done")
"""


@pytest.mark.parametrize("variant", sorted(_WORK))
def test_exit_with_daemon_thread_inside_native_call(variant):
    # Before the fix: rc -6 (terminate called without an active exception) in nearly every run.
    procs = [_start(_script(variant, _EXIT_BODY)) for _ in range(3)]
    for proc in procs:
        rc, out, err = _finish(proc)
        assert (rc, out.strip()) == (0, "main done"), err[-2000:]
