"""One thread budget for the library's CPU pools: torch's intra-op pool and the native matcher's.

Policy
------
:func:`~trajtransfer.transfer`, :func:`~trajtransfer.train` and :func:`~trajtransfer.evaluate`
run under a *thread budget* of ``n`` threads, chosen when the call starts:

1. ``num_threads=n`` passed to the call, else
2. the environment variable ``TRAJTRANSFER_NUM_THREADS=n``, else
3. the cores this process may use (CPU affinity and cgroup quota) minus the other runnable load
   on the machine (``procs_running`` of ``/proc/loadavg``, less this process's own running
   threads, averaged over a few samples and rounded up), at least 1 and at most torch's current
   setting (``torch.get_num_threads()``, whether torch's default or the user's own
   ``torch.set_num_threads``).

During the call torch's intra-op pool and the matcher's GEMM threads are both set to ``n``; they
take turns (gradients, then matching), so at most ``n`` threads are busy at a time. OpenBLAS is
always called single-threaded by the native core. Afterwards both settings are restored. Nested
calls (``evaluate`` inside ``transfer``) run under the outer budget.

Why: torch's OpenMP pool synchronises its threads at every operation. With the small operations of
a learning transfer (an MLP on minibatches of 128) a descheduled thread stalls the others: two
threads on a shared 2-core machine made the README's example about 20x slower than one, while on
idle cores the second thread gained nothing (docs/guide.md, "Threads").
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
import time
import warnings
from typing import Any, Callable, Optional, TypeVar

from .match import set_num_threads as _set_match_threads

__all__ = [
    "ENV_VAR",
    "pick_num_threads",
    "usable_cores",
    "other_runnable_load",
    "policy_num_threads",
    "thread_budget",
    "current_budget",
    "set_process_default",
    "with_thread_budget",
]

#: Environment variable that fixes the budget (a positive integer) for every call.
ENV_VAR = "TRAJTRANSFER_NUM_THREADS"

F = TypeVar("F", bound=Callable[..., Any])


def pick_num_threads(usable: int, other_load: float, cap: Optional[int] = None) -> int:
    """The policy's thread count for ``usable`` cores with ``other_load`` runnable tasks elsewhere.

    A core counts as taken when any fraction of one is in use (rounded up: a thread that waits
    for a core costs far more than one thread too few), and at least one thread is always used.

    >>> pick_num_threads(2, 0.0)
    2
    >>> pick_num_threads(2, 1.0)
    1
    >>> pick_num_threads(16, 2.5, cap=8)
    8
    """
    if usable < 1:
        raise ValueError(f"usable must be >= 1, got {usable}")
    if other_load < 0 or not math.isfinite(other_load):
        raise ValueError(f"other_load must be a finite number >= 0, got {other_load}")
    free = usable - math.ceil(other_load - 1e-9)
    n = max(1, free)
    if cap is not None:
        n = min(n, max(1, int(cap)))
    return n


def _cgroup_cpus(path: str = "/sys/fs/cgroup/cpu.max") -> Optional[int]:
    """The cgroup v2 CPU quota in whole cores (rounded up), or None without one."""
    try:
        with open(path) as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        n = os.cpu_count() or 1
    quota = _cgroup_cpus()
    return max(1, min(n, quota) if quota is not None else n)


def _own_running_threads() -> int:
    """This process's threads that are running or runnable now (Linux)."""
    n = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        if stat[stat.rindex(")") + 2] == "R":
            n += 1
    return max(1, n)


def other_runnable_load(samples: int = 4, interval: float = 5e-4) -> float:
    """Runnable tasks of other processes, averaged over ``samples`` reads ``interval`` s apart.

    Linux: ``procs_running`` of ``/proc/loadavg`` less this process's running threads. Elsewhere:
    the one-minute load average less one (this process), which lags and counts this process's own
    recent work, so it errs towards fewer threads.
    """
    try:
        total = 0.0
        for i in range(samples):
            if i:
                time.sleep(interval)
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])
            total += max(0, running - _own_running_threads())
        return total / samples
    except (OSError, ValueError, IndexError):
        pass
    try:
        return max(0.0, os.getloadavg()[0] - 1.0)
    except (AttributeError, OSError):  # Windows
        return 0.0


_env_warned: set = set()


def _env_num_threads() -> Optional[int]:
    raw = os.environ.get(ENV_VAR)
    if raw is None or raw.strip() == "":
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n >= 1:
        return n
    if raw not in _env_warned:
        _env_warned.add(raw)
        warnings.warn(f"{ENV_VAR}={raw!r} is not a positive integer; ignored, the thread policy "
                      "picks the count from the free cores", RuntimeWarning, stacklevel=4)
    return None


def _check_num_threads(num_threads: Any) -> Optional[int]:
    if num_threads is None:
        return None
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
    return int(num_threads)


def _torch() -> Any:
    """torch if it was imported already (the budget never imports it)."""
    return sys.modules.get("torch")


def policy_num_threads(num_threads: Optional[int] = None) -> int:
    """The budget a call with this ``num_threads`` argument gets now (see the module's policy).

    >>> policy_num_threads(3)
    3
    """
    explicit = _check_num_threads(num_threads)
    if explicit is None:
        explicit = _env_num_threads()
    if explicit is not None:
        return explicit
    torch = _torch()
    cap = torch.get_num_threads() if torch is not None else None
    return pick_num_threads(usable_cores(), _recent_load(), cap)


_load_probe = [-math.inf, 0.0]  # (monotonic time, load): one probe serves the calls of a second


def _recent_load(max_age: float = 1.0) -> float:
    """:func:`other_runnable_load`, reused for ``max_age`` seconds (it sleeps ~2 ms per probe)."""
    now = time.monotonic()
    if now - _load_probe[0] > max_age:
        _load_probe[1] = other_runnable_load()
        _load_probe[0] = time.monotonic()
    return _load_probe[1]


class _Budget:
    """The process's budget in force: depth of nested budgets and the settings to restore."""

    lock = threading.Lock()
    depth = 0
    threads = 0
    saved_torch: Optional[int] = None
    saved_match = 0


class thread_budget:
    """Context manager: torch's intra-op pool and the matcher's threads both set to one budget.

    Parameters
    ----------
    num_threads : int, optional
        The budget; default: ``TRAJTRANSFER_NUM_THREADS``, else the free cores
        (:func:`policy_num_threads`). Inside another budget (also from another Python thread)
        the outer one applies.

    Examples
    --------
    >>> import trajtransfer as tt
    >>> with thread_budget(1) as n:
    ...     tt.set_num_threads(0)
    1
    """

    def __init__(self, num_threads: Optional[int] = None) -> None:
        self.num_threads = _check_num_threads(num_threads)

    def __enter__(self) -> int:
        with _Budget.lock:
            if _Budget.depth == 0:
                n = policy_num_threads(self.num_threads)
                torch = _torch()
                _Budget.saved_torch = torch.get_num_threads() if torch is not None else None
                _Budget.saved_match = _set_match_threads(0)
                if torch is not None and torch.get_num_threads() != n:
                    torch.set_num_threads(n)
                _set_match_threads(n)
                _Budget.threads = n
            _Budget.depth += 1
            return _Budget.threads

    def __exit__(self, *exc: Any) -> None:
        with _Budget.lock:
            _Budget.depth -= 1
            if _Budget.depth == 0:
                torch = _torch()
                if torch is not None and _Budget.saved_torch is not None \
                        and torch.get_num_threads() != _Budget.saved_torch:
                    torch.set_num_threads(_Budget.saved_torch)
                _set_match_threads(_Budget.saved_match)


def set_process_default() -> int:
    """The matcher's thread count outside budgets: ``TRAJTRANSFER_NUM_THREADS``, else the usable
    cores (the native default counts every hardware thread, ignoring CPU affinity). Run at import.
    """
    n = _env_num_threads() or usable_cores()
    return _set_match_threads(n)


def current_budget() -> Optional[int]:
    """The thread budget in force (None outside :class:`thread_budget`)."""
    return _Budget.threads if _Budget.depth > 0 else None


def with_thread_budget(fn: F) -> F:
    """Run ``fn`` under :class:`thread_budget`, sized by its keyword argument ``num_threads``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with thread_budget(kwargs.get("num_threads")):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
