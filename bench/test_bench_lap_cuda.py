"""GPU LAP benchmarks: trajtransfer's CUDA kernel against SciPy (host) and, when importable,
torch-linear-assignment, on the same matrices in the same run. Each benchmark checks its optimum
against SciPy's. Skipped without a CUDA build and device.

Run (GPU machine):  python -m pytest bench/test_bench_lap_cuda.py --benchmark-json=out.json
GPU timings synchronise the device inside the timed call; host-to-device copies are excluded
(the matrices already live on the GPU, as in the matcher).
"""

from __future__ import annotations

import numpy as np
import pytest

from trajtransfer._native import _core

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")
scipy_optimize = pytest.importorskip("scipy.optimize")

pytestmark = [
    pytest.mark.skipif(not _core.with_cuda, reason="extension built without CUDA"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

from trajtransfer import _cuda  # noqa: E402

try:  # the only public batched GPU peer (design.md §4); optional
    from torch_linear_assignment import batch_linear_assignment as tla_batch
except ImportError:  # pragma: no cover - depends on the machine
    tla_batch = None


def _costs(kind: str, b: int, n: int, seed: int = 0) -> np.ndarray:
    """(b, n, n) float64: uniform [0, 1), or correlation-like (two layers' units, nearly a
    permutation apart, as in the matcher; maximised)."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.random((b, n, n))
    d = 64
    out = np.empty((b, n, n))
    for i in range(b):
        a = rng.standard_normal((n, d))
        out[i] = a @ (a[rng.permutation(n)] + 0.5 * rng.standard_normal((n, d))).T
    return out


def _maximize(kind: str) -> bool:
    return kind != "uniform"


def _scipy_totals(c: np.ndarray, maximize: bool) -> np.ndarray:
    out = np.empty(c.shape[0])
    for b in range(c.shape[0]):
        r, k = scipy_optimize.linear_sum_assignment(c[b], maximize=maximize)
        out[b] = c[b][r, k].sum()
    return out


def _totals(c: np.ndarray, idx: np.ndarray) -> np.ndarray:
    n = c.shape[1]
    return np.array([c[b][np.arange(n), idx[b]].sum() for b in range(c.shape[0])])


def _assert_optimal(c: np.ndarray, idx: np.ndarray, want: np.ndarray, dtype: str) -> None:
    """Permutations whose totals equal SciPy's up to a few ulps (of the solve's dtype) of the
    largest entry per pair (as tests/lap_cuda_oracle.total_tolerance)."""
    assert np.all(np.sort(idx, axis=1) == np.arange(c.shape[1]))
    eps = float(np.finfo(np.dtype(dtype)).eps)
    tol = 4.0 * eps * max(float(np.abs(c).max()), 1.0) * (c.shape[1] + 1)
    np.testing.assert_allclose(_totals(c, idx), want, rtol=0, atol=tol)


# (kind, B, n, rounds): rounds shrink with size so the whole file fits the GPU session.
SINGLE = [("uniform", 1, 1024, 5), ("uniform", 1, 4096, 2), ("correlation", 1, 1024, 5),
          ("correlation", 1, 4096, 2)]
BATCH = [("uniform", 64, 256, 3), ("correlation", 64, 256, 3), ("uniform", 16, 1024, 2)]
IDS = [f"{k}-B{b}-n{n}" for k, b, n, _ in SINGLE + BATCH]


@pytest.fixture(scope="module")
def problems():
    """Matrices and SciPy's optimal totals, computed once per case."""
    cache: dict = {}

    def get(kind: str, b: int, n: int):
        key = (kind, b, n)
        if key not in cache:
            c = _costs(kind, b, n)
            cache[key] = (c, _scipy_totals(c, _maximize(kind)))
        return cache[key]

    return get


# Tuning variants of the kernel: (block_threads, shared_state, row_reduction_passes).
VARIANTS = {"auto": (0, -1, 0), "t256": (256, -1, 0), "t1024": (1024, -1, 0),
            "global-state": (0, 0, 0), "arr1": (0, -1, 1)}


@pytest.mark.parametrize("case", SINGLE + BATCH, ids=IDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_trajtransfer_cuda(benchmark, problems, case, dtype, variant):
    kind, b, n, rounds = case
    if variant != "auto" and (dtype == "float32" or b > 1):
        pytest.skip("tuning variants only on float64 single problems")
    block_threads, shared_state, arr = VARIANTS[variant]
    c, want = problems(kind, b, n)
    if dtype == "float32":  # the optimum of the matrix actually solved
        c = c.astype(np.float32).astype(np.float64)
        want = _scipy_totals(c, _maximize(kind))
    t = torch.from_numpy(c).to(device="cuda", dtype=getattr(torch, dtype))
    benchmark.group = f"lap-cuda-{kind}-B{b}-n{n}"
    benchmark.extra_info.update(dtype=dtype, variant=variant, device=torch.cuda.get_device_name())

    def run():
        out = _cuda.solve_batch(t, _maximize(kind), block_threads=block_threads,
                                shared_state=shared_state, row_reduction_passes=arr)
        torch.cuda.synchronize()
        return out

    idx = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
    _assert_optimal(c, idx.cpu().numpy(), want, dtype)


@pytest.mark.parametrize("case", SINGLE + BATCH, ids=IDS)
def test_scipy_host(benchmark, problems, case):
    kind, b, n, rounds = case
    c, want = problems(kind, b, n)
    benchmark.group = f"lap-cuda-{kind}-B{b}-n{n}"
    benchmark.extra_info.update(dtype="float64", peer="scipy (host, one problem after another)")
    got = benchmark.pedantic(_scipy_totals, args=(c, _maximize(kind)), rounds=min(rounds, 2),
                             iterations=1)
    np.testing.assert_allclose(got, want)


@pytest.mark.parametrize("case", SINGLE + BATCH, ids=IDS)
def test_trajtransfer_cpu_batch(benchmark, problems, case):
    kind, b, n, rounds = case
    c, want = problems(kind, b, n)
    benchmark.group = f"lap-cuda-{kind}-B{b}-n{n}"
    benchmark.extra_info.update(dtype="float64", peer="trajtransfer CPU (host thread pool)")
    idx = benchmark.pedantic(_core.lap.solve_batch, args=(c, _maximize(kind), 0),
                             rounds=min(rounds, 2), iterations=1)
    _assert_optimal(c, idx, want, "float64")


@pytest.mark.skipif(tla_batch is None, reason="torch-linear-assignment is not installed")
@pytest.mark.parametrize("case", [x for x in SINGLE + BATCH if x[2] <= 1024],
                         ids=[i for x, i in zip(SINGLE + BATCH, IDS) if x[2] <= 1024])
def test_torch_linear_assignment(benchmark, problems, case):
    kind, b, n, rounds = case
    c, want = problems(kind, b, n)
    t = torch.from_numpy(c).cuda()
    if _maximize(kind):
        t = -t
    benchmark.group = f"lap-cuda-{kind}-B{b}-n{n}"
    benchmark.extra_info.update(dtype="float64", peer="torch-linear-assignment")

    def run():
        out = tla_batch(t)
        torch.cuda.synchronize()
        return out

    idx = benchmark.pedantic(run, rounds=min(rounds, 2), iterations=1, warmup_rounds=1)
    _assert_optimal(c, idx.cpu().numpy().astype(np.int64), want, "float64")
