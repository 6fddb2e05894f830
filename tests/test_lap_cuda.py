"""The CUDA LAP backend against SciPy: same optimum, same errors, results on the input's device.

Skipped unless the extension was built with TRAJTRANSFER_CUDA=ON and a CUDA device is visible.
"""

from __future__ import annotations

import numpy as np
import pytest

from lap_cuda_oracle import assignment_total, check_duals, scipy_outcome, total_tolerance
from native_testing import load_testing_module
from trajtransfer._native import _core

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _core.with_cuda, reason="extension built without CUDA"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

import trajtransfer as tt  # noqa: E402
from trajtransfer import _cuda  # noqa: E402

from scipy.optimize import linear_sum_assignment as scipy_lsa  # noqa: E402


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


def _np(dtype) -> type:
    return np.float32 if dtype == torch.float32 else np.float64


def _check_single(cost: np.ndarray, maximize: bool) -> None:
    """Solve one matrix on the GPU through the public API; compare with SciPy (or its error)."""
    want_status, want_total = scipy_outcome(cost, maximize)
    t = torch.from_numpy(cost).cuda()
    if want_status:
        msg = {1: "matrix contains invalid numeric entries", 2: "cost matrix is infeasible"}
        with pytest.raises(ValueError, match=msg[want_status]):
            tt.linear_sum_assignment(t, maximize=maximize)
        return
    rows, cols = tt.linear_sum_assignment(t, maximize=maximize)
    for out in (rows, cols):
        assert out.device == t.device and out.dtype == torch.int64
    r, c = rows.cpu().numpy(), cols.cpu().numpy()
    assert np.all(np.diff(r) > 0)
    total = float(cost.astype(np.float64)[r, c].sum())
    assert total == pytest.approx(want_total, abs=total_tolerance(cost, cost.dtype))


@pytest.mark.parametrize("shape", [(1, 1), (5, 5), (6, 9), (9, 6), (64, 64), (50, 130), (130, 50)])
@pytest.mark.parametrize("maximize", [False, True])
def test_random_matrices_match_scipy(shape, maximize, dtype, rng):
    _check_single(rng.random(shape).astype(_np(dtype)), maximize)


@pytest.mark.parametrize("n", [256, 700])
def test_larger_uniform_and_correlation_like(n, dtype, rng):
    _check_single(rng.random((n, n)).astype(_np(dtype)), False)
    a = rng.standard_normal((n, 32))
    corr = a @ (a[rng.permutation(n)] + 0.3 * rng.standard_normal((n, 32))).T
    _check_single(corr.astype(_np(dtype)), True)


def test_ties_constant_and_integer_inputs(rng):
    _check_single(np.ones((7, 7)), False)
    _check_single(np.zeros((4, 9)), True)
    ints = rng.integers(0, 3, size=(40, 40))
    _check_single(ints.astype(np.float64), False)
    rows, cols = tt.linear_sum_assignment(torch.from_numpy(ints).cuda())  # int64 -> float64
    r, c = scipy_lsa(ints)
    assert int(ints[rows.cpu().numpy(), cols.cpu().numpy()].sum()) == int(ints[r, c].sum())


def test_forbidden_pairs_and_errors(dtype, rng):
    cost = rng.random((12, 15)).astype(_np(dtype))
    cost[rng.random(cost.shape) < 0.6] = np.inf
    _check_single(cost, False)
    _check_single(-cost, True)
    blocked = np.ones((4, 4), dtype=_np(dtype))
    blocked[:, 1:] = np.inf
    _check_single(blocked, False)  # infeasible
    for bad in (np.nan, -np.inf):
        c = np.ones((3, 3), dtype=_np(dtype))
        c[1, 1] = bad
        _check_single(c, False)  # invalid
    c = np.ones((3, 3), dtype=_np(dtype))
    c[0, 0] = np.inf
    _check_single(c, True)  # +inf is invalid when maximising


def test_batch_matches_scipy_per_problem(dtype, rng):
    costs = rng.random((16, 40, 57)).astype(_np(dtype))
    costs[3, 5, :50] = np.inf
    wide = torch.from_numpy(costs).cuda()
    for t in (wide, wide.transpose(1, 2)):  # also a non-contiguous, tall input
        out = tt.linear_sum_assignment_batch(t)
        assert out.device == t.device and out.dtype == torch.int64
        assert out.shape == (16, 40)
        idx, c = out.cpu().numpy(), t.cpu().numpy()
        for b in range(16):
            _, want = scipy_outcome(c[b], False)
            tol = total_tolerance(c[b], c.dtype)
            assert assignment_total(c[b], idx[b]) == pytest.approx(want, abs=tol)


def test_batch_reports_the_failing_problem(dtype):
    costs = torch.ones((3, 4, 4), dtype=dtype, device="cuda")
    costs[2, :, 0] = float("nan")
    with pytest.raises(ValueError,
                       match="problem 2 of the batch: matrix contains invalid numeric entries"):
        tt.linear_sum_assignment_batch(costs)
    costs = torch.ones((3, 4, 4), dtype=dtype, device="cuda")
    costs[1, 0, :] = float("inf")
    with pytest.raises(ValueError, match="problem 1 of the batch: cost matrix is infeasible"):
        tt.linear_sum_assignment_batch(costs)
    out, status = _cuda.solve_batch(costs, check=False)  # no raise, no sync: status returned
    assert status.device == costs.device and status.tolist() == [0, 2, 0]
    assert out[1].tolist() == [-1] * 4 and sorted(out[0].tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("threads", [32, 64, 96, 256, 1024])
@pytest.mark.parametrize("shared_state", [0, 1], ids=["global-state", "shared-state"])
def test_block_sizes_and_state_placement_agree(threads, shared_state, rng):
    costs = torch.from_numpy(rng.random((4, 100, 130))).cuda()
    out = _cuda.solve_batch(costs, block_threads=threads, shared_state=shared_state).cpu().numpy()
    c = costs.cpu().numpy()
    for b in range(4):
        want = scipy_outcome(c[b], False)[1]
        assert assignment_total(c[b], out[b]) == pytest.approx(want, abs=1e-9)


def test_duals_and_warm_start(dtype, rng):
    c = rng.random((5, 60, 60)).astype(_np(dtype))
    costs = torch.from_numpy(c).cuda()
    out, u, v = _cuda.solve_batch(costs, maximize=True, return_duals=True)
    tol = total_tolerance(c[0], c.dtype)
    for b in range(5):
        ub, vb = u[b].cpu().numpy(), v[b].cpu().numpy()
        check_duals(c[b], out[b].cpu().numpy(), ub, vb, True, tol)
    out2 = _cuda.solve_batch(costs, maximize=True, col_duals=v + 0.01 * torch.randn_like(v))
    for b in range(5):
        assert assignment_total(c[b], out2[b].cpu().numpy()) == pytest.approx(
            assignment_total(c[b], out[b].cpu().numpy()), abs=tol)
    with pytest.raises(ValueError, match="square"):
        _cuda.solve_batch(costs[:, :, :50], col_duals=v[:, :50])


@pytest.mark.parametrize("shape", [(3, 33, 47), (2, 47, 33), (2, 64, 64)])
@pytest.mark.parametrize("arr", [0, 2])
def test_gpu_equals_host_emulation_exactly(shape, arr, dtype, rng):
    """The algorithm is deterministic (min-reductions are exact, ties broken by index, claims by
    lowest row) and uses no FMA-contractible expression, so the device must reproduce the host
    emulation bit for bit: this is what makes the CPU-side emulation tests evidence."""
    emulate = load_testing_module().cuda_emulation_lap_batch
    c = np.round(rng.random(shape) * 20).astype(_np(dtype))  # integers: many ties
    for maximize in (False, True):
        idx, u, v = _cuda.solve_batch(torch.from_numpy(c).cuda(), maximize, return_duals=True,
                                      row_reduction_passes=arr)
        emu, status, eu, ev = emulate(c, maximize, 4, None, -1, arr)
        assert status.tolist() == [0] * shape[0]
        np.testing.assert_array_equal(idx.cpu().numpy(), emu)
        np.testing.assert_array_equal(u.cpu().numpy(), eu)
        np.testing.assert_array_equal(v.cpu().numpy(), ev)


def test_empty_shapes_and_bad_arguments(dtype):
    for shape in [(0, 0), (0, 3), (3, 0)]:
        r, c = tt.linear_sum_assignment(torch.empty(shape, dtype=dtype, device="cuda"))
        assert r.shape == (0,) and r.device.type == "cuda" and r.dtype == torch.int64
    out = tt.linear_sum_assignment_batch(torch.empty((2, 0, 4), dtype=dtype, device="cuda"))
    assert out.shape == (2, 0) and out.device.type == "cuda"
    with pytest.raises(ValueError, match="2-d"):
        tt.linear_sum_assignment(torch.ones(3, device="cuda"))
    with pytest.raises(TypeError, match="real"):
        tt.linear_sum_assignment(torch.ones((2, 2), dtype=torch.complex64, device="cuda"))


def test_runs_on_the_tensors_device_and_stream(rng):
    c = rng.random((20, 20))
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        t = torch.from_numpy(c).cuda()
        rows, cols = tt.linear_sum_assignment(t)
        total = t[rows, cols].sum()
    stream.synchronize()
    assert float(total) == pytest.approx(scipy_outcome(c, False)[1])
    if torch.cuda.device_count() > 1:
        t1 = torch.from_numpy(c).to("cuda:1")
        _, cols1 = tt.linear_sum_assignment(t1)
        assert cols1.device == t1.device


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402


@st.composite
def cost_matrices(draw):
    n = draw(st.integers(1, 9))
    m = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    kind = draw(st.sampled_from(["int", "float", "inf-mask"]))
    if kind == "int":
        cost = draw(hnp.arrays(np.int64, (n, m), elements=st.integers(-3, 3))).astype(dtype)
    else:
        elements = st.floats(-100, 100, allow_nan=False, width=32)
        cost = draw(hnp.arrays(dtype, (n, m), elements=elements))
    if kind == "inf-mask":
        cost[draw(hnp.arrays(np.bool_, (n, m)))] = np.inf
    return cost


@settings(max_examples=150)
@given(cost=cost_matrices(), maximize=st.booleans())
def test_hypothesis_matches_scipy(cost, maximize):
    _check_single(-cost if maximize else cost, maximize)
