"""The GPU LAP kernel's code, run on the host by emulated thread blocks, against SciPy.

``trajtransfer._testing.cuda_emulation_lap_batch`` compiles csrc/cuda/lap_kernel.cuh for the host and runs each
problem with ``block_threads`` std::threads separated by real barriers (see lap_emulation.hpp), so
these tests check the kernel's algorithm, its work partition and its barriers without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from lap_cuda_oracle import assignment_total, check_duals, scipy_outcome, total_tolerance
from native_testing import load_testing_module
from trajtransfer._native import _core

pytest.importorskip("scipy")


def emulate(*args):
    """The emulation, resolved per call so that only the tests using it skip without it."""
    return load_testing_module().cuda_emulation_lap_batch(*args)


def _check_batch(costs: np.ndarray, maximize: bool, threads: int, shared_state: int = -1,
                 arr_passes: int = 0) -> None:
    idx, status, u, v = emulate(costs, maximize, threads, None, shared_state, arr_passes)
    assert idx.dtype == np.int64 and idx.shape == (costs.shape[0], min(costs.shape[1:]))
    assert status.dtype == np.int32 and status.shape == (costs.shape[0],)
    for b, cost in enumerate(costs):
        want_status, want_total = scipy_outcome(cost, maximize)
        assert status[b] == want_status, (b, cost, maximize)
        if want_status:
            assert np.all(idx[b] == -1)
            continue
        tol = total_tolerance(cost, costs.dtype)
        assert assignment_total(cost, idx[b]) == pytest.approx(want_total, abs=tol)
        check_duals(cost, idx[b], u[b], v[b], maximize, tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 3, 8])
@pytest.mark.parametrize("shape", [(4, 9, 9), (3, 7, 12), (3, 12, 7)])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("shared_state,arr", [(0, 0), (1, 0), (1, 2)],
                         ids=["global-state", "shared-state", "shared-state-arr2"])
def test_random_batches_match_scipy(dtype, threads, shape, maximize, shared_state, arr, rng):
    _check_batch(rng.random(shape).astype(dtype), maximize, threads, shared_state, arr)


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("arr", [0, 1, 2])
def test_integer_ties_and_constant_matrices(threads, arr, rng):
    costs = rng.integers(0, 3, size=(6, 10, 10)).astype(np.float64)
    costs[0] = 1.0  # SciPy #11602: constant matrix
    costs[1] = 0.0
    _check_batch(costs, False, threads, arr_passes=arr)
    _check_batch(costs, True, threads, arr_passes=arr)


@pytest.mark.parametrize("threads", [2, 5])
@pytest.mark.parametrize("arr", [0, 2])
def test_forbidden_pairs_and_infeasibility(threads, arr, rng):
    costs = rng.random((6, 8, 11))
    costs[rng.random(costs.shape) < 0.5] = np.inf
    costs[0, 3, :] = np.inf  # a row without any allowed column: infeasible
    costs[1, :3, :] = np.inf
    costs[1, :3, 2:4] = 1.0  # three rows sharing two columns: infeasible (Hall's condition)
    _check_batch(costs, False, threads, arr_passes=arr)
    _check_batch(-costs, True, threads, arr_passes=arr)  # -inf: forbidden when maximising


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_invalid_entries(bad):
    costs = np.ones((3, 4, 5))
    costs[1, 2, 3] = bad
    _, status, _, _ = emulate(costs, False, 3)
    assert status.tolist() == [0, 1, 0]
    _, status, _, _ = emulate(-costs, True, 3)
    assert status.tolist() == [0, 1, 0]
    plus = np.ones((1, 3, 3))
    plus[0, 0, 0] = np.inf  # +inf is forbidden when minimising, invalid when maximising
    assert emulate(plus, False, 2)[1].tolist() == [0]
    assert emulate(plus, True, 2)[1].tolist() == [1]


def test_larger_problems_uniform_and_correlation_like(rng):
    n = 48
    uniform = rng.random((2, n, n))
    a = rng.standard_normal((n, 16))
    perm = rng.permutation(n)
    corr = a @ (a[perm] + 0.3 * rng.standard_normal((n, 16))).T  # nearly a permutation
    costs = np.stack([uniform[0], uniform[1], corr])
    _check_batch(costs, False, 8)
    _check_batch(costs, True, 8, arr_passes=2)
    _check_batch(costs.astype(np.float32), True, 4, arr_passes=1)


def test_warm_start_column_duals_reach_the_same_optimum(rng):
    costs = rng.random((3, 20, 20))
    idx, status, _, v = emulate(costs, False, 4)
    assert status.tolist() == [0, 0, 0]
    for warm in (v, v + rng.standard_normal(v.shape), np.zeros_like(v)):
        idx2, status2, u2, v2 = emulate(costs, False, 4, warm)
        assert status2.tolist() == [0, 0, 0]
        for b in range(3):
            assert assignment_total(costs[b], idx2[b]) == pytest.approx(
                assignment_total(costs[b], idx[b]), abs=1e-12)
            check_duals(costs[b], idx2[b], u2[b], v2[b], False, 1e-9)
    bad = v.copy()
    bad[1, 0] = np.nan
    assert emulate(costs, False, 2, bad)[1].tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="square"):
        emulate(np.ones((1, 2, 3)), False, 1, np.zeros((1, 3)))


@pytest.mark.parametrize("shape", [(2, 33, 47), (2, 47, 33)])
@pytest.mark.parametrize("arr", [0, 2])
def test_bitwise_independent_of_block_size_and_state_placement(shape, arr, rng):
    """Exact min-reductions with index tie-breaks make the result a function of the matrix only;
    tests/test_lap_cuda.py relies on this to compare the device with this emulation bit for bit."""
    c = np.round(rng.random(shape) * 20)  # integers: many ties
    for maximize in (False, True):
        ref = emulate(c, maximize, 1, None, 0, arr)
        for threads, shared_state in [(3, 1), (8, 0), (32, 1)]:
            out = emulate(c, maximize, threads, None, shared_state, arr)
            for a, b in zip(ref, out):
                np.testing.assert_array_equal(a, b)


def test_argument_checks():
    with pytest.raises(TypeError, match="float32 or float64"):
        emulate(np.ones((1, 2, 2), dtype=np.int64), False, 1)
    with pytest.raises(ValueError, match="3-dimensional"):
        emulate(np.ones((2, 2)), False, 1)
    with pytest.raises(ValueError, match="block_threads"):
        emulate(np.ones((1, 2, 2)), False, 0)


@pytest.mark.skipif(_core.with_cuda, reason="checks the error of a build without CUDA")
def test_cuda_tensors_need_a_cuda_build():
    torch = pytest.importorskip("torch")
    from trajtransfer import _cuda

    with pytest.raises(RuntimeError, match="TRAJTRANSFER_CUDA=ON"):
        _cuda.solve_batch(torch.ones((1, 2, 2)))
    assert not _cuda.is_cuda_tensor(torch.ones(2)) and not _cuda.is_cuda_tensor(np.ones(2))


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402


@st.composite
def cost_batches(draw):
    b = draw(st.integers(1, 3))
    n = draw(st.integers(1, 7))
    m = draw(st.integers(1, 7))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    kind = draw(st.sampled_from(["int", "float", "inf-mask"]))
    if kind == "int":  # many ties
        costs = draw(hnp.arrays(np.int64, (b, n, m), elements=st.integers(-3, 3))).astype(dtype)
    else:
        costs = draw(hnp.arrays(dtype, (b, n, m),
                                elements=st.floats(-100, 100, allow_nan=False, width=32)))
    if kind == "inf-mask":
        mask = draw(hnp.arrays(np.bool_, (b, n, m)))
        costs[mask] = np.inf
    return costs


@settings(max_examples=120)
@given(costs=cost_batches(), maximize=st.booleans(), threads=st.sampled_from([1, 2, 3, 5]),
       shared_state=st.sampled_from([0, 1]), arr=st.sampled_from([0, 1, 2]))
def test_hypothesis_matches_scipy(costs, maximize, threads, shared_state, arr):
    if maximize:
        costs = -costs  # keep the inf mask meaning "forbidden" (-inf when maximising)
    _check_batch(costs, maximize, threads, shared_state, arr)


def test_kernel_barriers_under_thread_sanitizer(tmp_path):
    """Build tests/cpp/lap_emulation_check.cpp (brute force on small problems, all placements and
    block sizes) with -fsanitize=thread: a barrier missing from lap_kernel.cuh shows up as a data
    race between the emulated threads (or a deadlock, caught by the timeout)."""
    import subprocess

    from cpp_programs import build_check_program

    exe, err = build_check_program("lap_emulation_check", tmp_path,
                                   ["-O1", "-g", "-fsanitize=thread"],
                                   ("cuda/lap_emulation.cpp",))
    if err:
        pytest.skip(f"cannot build with ThreadSanitizer here: {err[-300:]}")
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    if "unexpected memory mapping" in run.stderr:  # TSan vs. some kernels' ASLR settings
        pytest.skip("ThreadSanitizer cannot run on this kernel")
    assert "ThreadSanitizer" not in run.stderr, run.stderr[-2000:]
    assert run.returncode == 0, run.stdout[-2000:]
    assert ", 0 failures" in run.stdout
