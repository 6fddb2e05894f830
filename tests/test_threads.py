"""The thread budget: the policy's arithmetic, its probes, explicit choices, and restoring settings."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

import pytest

import trajtransfer as tt
from trajtransfer.core import threads
from trajtransfer.core.threads import (
    ENV_VAR,
    current_budget,
    other_runnable_load,
    pick_num_threads,
    policy_num_threads,
    thread_budget,
    usable_cores,
)

linux_only = pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="reads /proc (Linux)")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    threads._load_probe[0] = float("-inf")  # no probe reused from another test
    before = tt.set_num_threads(0)
    yield
    tt.set_num_threads(before)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.fixture
def burner():
    """One more process that is always runnable (once it is in its loop: past the start-up I/O)."""
    p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    deadline = time.monotonic() + 30
    while _cpu_seconds(p.pid) < 0.3 and time.monotonic() < deadline:
        time.sleep(0.05)
    yield p
    p.kill()
    p.wait()


@pytest.mark.parametrize("usable, load, cap, expected", [
    (2, 0.0, None, 2),     # idle: every usable core
    (2, 1.0, None, 1),     # one busy process on two cores
    (2, 0.25, None, 1),    # any part of a core in use counts as taken
    (2, 9.0, None, 1),     # overloaded: still one thread
    (1, 0.0, None, 1),
    (64, 3.2, None, 60),
    (64, 0.0, 16, 16),     # never more than the cap (torch's setting)
    (8, 6.0, 4, 2),
    (8, 0.0, 0, 1),        # a cap below 1 still leaves one thread
])
def test_pick_num_threads(usable, load, cap, expected):
    assert pick_num_threads(usable, load, cap) == expected


@pytest.mark.parametrize("usable, load, name", [(0, 0.0, "usable"), (2, -1.0, "other_load"),
                                                (2, float("nan"), "other_load")])
def test_pick_num_threads_names_a_bad_argument(usable, load, name):
    with pytest.raises(ValueError, match=name):
        pick_num_threads(usable, load)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_usable_cores_follows_cpu_affinity():
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert usable_cores() == 1
    finally:
        os.sched_setaffinity(0, before)
    assert usable_cores() == min(len(before), threads._cgroup_cpus() or len(before))


@pytest.mark.parametrize("text, cores", [("max 100000\n", None), ("150000 100000\n", 2),
                                         ("50000 100000\n", 1), ("400000 100000\n", 4)])
def test_cgroup_quota_in_whole_cores(tmp_path, text, cores):
    f = tmp_path / "cpu.max"
    f.write_text(text)
    assert threads._cgroup_cpus(str(f)) == cores
    assert threads._cgroup_cpus(str(tmp_path / "absent")) is None


@linux_only
def test_a_busy_process_counts_as_load(burner):
    assert other_runnable_load(samples=8) >= 1.0
    # so the policy leaves its core alone (no cap: torch's setting is not the question here)
    usable = usable_cores()
    threads._load_probe[0] = float("-inf")
    if usable >= 2:
        assert pick_num_threads(usable, threads._recent_load()) <= usable - 1


@linux_only
def test_own_busy_threads_are_not_load():
    """A thread of this process running native code (GIL released) is ours, not other load."""
    stop = threading.Event()
    data = os.urandom(1 << 22)

    def spin():
        while not stop.is_set():
            hashlib.sha256(data).digest()  # releases the GIL: the thread stays runnable

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.05)
        assert max(threads._own_running_threads() for _ in range(50)) >= 2
    finally:
        stop.set()
        t.join()


def test_explicit_count_wins_over_env_and_load(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "3")
    assert policy_num_threads(5) == 5
    assert policy_num_threads() == 3


@pytest.mark.parametrize("raw", ["zero", "0", "-2", "1.5"])
def test_bad_env_value_warns_once_and_falls_back(monkeypatch, raw):
    monkeypatch.setenv(ENV_VAR, raw)
    threads._env_warned.discard(raw)
    with pytest.warns(RuntimeWarning, match=ENV_VAR):
        n = policy_num_threads()
    assert 1 <= n <= usable_cores()
    policy_num_threads()  # no second warning (warnings are errors in this suite)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_num_threads_names_the_argument(bad):
    with pytest.raises(ValueError, match="num_threads"):
        thread_budget(bad)
    with pytest.raises(ValueError, match="num_threads"):
        policy_num_threads(bad)


def test_policy_is_capped_by_torchs_setting():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert policy_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_budget_sets_both_pools_and_restores_the_users_settings():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # the user's own choice
        tt.set_num_threads(3)
        assert current_budget() is None
        with thread_budget(1) as n:
            assert n == 1 == current_budget()
            assert torch.get_num_threads() == 1 and tt.set_num_threads(0) == 1
            with thread_budget(2) as inner:  # nested: the outer budget applies
                assert inner == 1 and torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert (torch.get_num_threads(), tt.set_num_threads(0)) == (3, 3)
        with pytest.raises(KeyError):
            with thread_budget(2):
                raise KeyError("restored on errors too")
        assert (torch.get_num_threads(), tt.set_num_threads(0), current_budget()) == (3, 3, None)
    finally:
        torch.set_num_threads(before)


def test_process_default_follows_env(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "1")
    assert threads.set_process_default() == 1 == tt.set_num_threads(0)
    monkeypatch.delenv(ENV_VAR)
    assert threads.set_process_default() == usable_cores()


def test_transfer_and_train_run_under_the_budget_and_restore_torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from trajtransfer.kit.data import load_digits_data
    from trajtransfer.kit.models import MLP
    from trajtransfer.kit.training import train
    from trajtransfer.method.trajectory import Trajectory
    from trajtransfer.method.transfer import transfer

    data = load_digits_data()
    before = torch.get_num_threads()
    seen = []
    torch.manual_seed(0)
    src = MLP(64, (16,), 10)
    init = {k: v.clone() for k, v in src.state_dict().items()}
    train(src, data.train, epochs=1, batch_size=64, num_threads=1,
          callback=lambda e, rec: seen.append(torch.get_num_threads()))
    assert seen == [1] and torch.get_num_threads() == before
    res = transfer(MLP(64, (16,), 10), Trajectory([init, src.state_dict()], num_splits=2),
                   MLP(64, (16,), 10), data, method="fgmt", num_threads=1,
                   callback=lambda info: seen.append(torch.get_num_threads()))
    assert seen == [1, 1, 1] and res.config["num_threads"] == 1
    assert torch.get_num_threads() == before
    res = transfer(MLP(64, (16,), 10), Trajectory([init, src.state_dict()], num_splits=2),
                   MLP(64, (16,), 10), data, method="naive")
    assert 1 <= res.config["num_threads"] <= min(before, usable_cores())
    assert torch.get_num_threads() == before


def test_lap_batch_default_threads_follow_the_budget(monkeypatch):
    import types

    import numpy as np
    from scipy.optimize import linear_sum_assignment as scipy_lsa

    from trajtransfer.core import lap

    seen = []
    real = lap._core.lap.solve_batch

    def solve_batch(arr, maximize, num_threads, exact):  # records the thread count it is given
        seen.append(num_threads)
        return real(arr, maximize, num_threads, exact)

    monkeypatch.setattr(lap, "_core", types.SimpleNamespace(lap=types.SimpleNamespace(solve_batch=solve_batch)))
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    costs = np.random.default_rng(0).random((3, 5, 5))
    with threads.thread_budget(1):
        cols = lap.linear_sum_assignment_batch(costs)
    monkeypatch.setenv(threads.ENV_VAR, "2")
    lap.linear_sum_assignment_batch(costs)
    lap.linear_sum_assignment_batch(costs, num_threads=3)  # an explicit count wins
    assert seen == [1, 2, 3]
    for b in range(3):
        assert np.array_equal(cols[b], scipy_lsa(costs[b])[1])
