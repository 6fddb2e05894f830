"""The device path of the matcher (torch ops + the Python descent), run on CPU tensors.

Oracle: the native C++ path in the same run, on the same tie-free problems (independent random
networks, planted permutations): equal permutations, sweeps and objective. The CUDA build's
on-device descent is exercised with the LAP kernel's host emulation in place of the GPU.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from native_testing import load_testing_module  # noqa: E402
from trajtransfer import _core  # noqa: E402
from trajtransfer.core import device_lap  # noqa: E402
from trajtransfer.core.match import GradientMatcher, match_gradients, match_weights  # noqa: E402
from trajtransfer.core.permute import apply_permutation, random_permutation  # noqa: E402
from trajtransfer.core.spec import permutation_spec_from_axes_to_perm  # noqa: E402
from spec_shapes import conv_chain_spec_and_shapes, mlp_spec_and_shapes  # noqa: E402


def _mlp():
    return mlp_spec_and_shapes([12, 24, 20, 16, 5])


_conv = conv_chain_spec_and_shapes


def _odd_axes():
    spec = permutation_spec_from_axes_to_perm({
        "x": (None, "p", None), "y": ("q", None, "p"), "z": ("q",), "w": (None, None),
        "t": ("p", "q", "r"), "u": ("r", None)})
    shapes = {"x": (3, 7, 2), "y": (5, 4, 7), "z": (5,), "w": (2, 2), "t": (7, 5, 6), "u": (6, 3)}
    return spec, shapes


PROBLEMS = {"mlp": _mlp, "conv": _conv, "odd_axes": _odd_axes}


def _params(spec, shapes, rng):
    return {n: rng.standard_normal(shapes[n]).astype(np.float32) for n in spec.axes_to_perm}


def _torch(params):
    return {k: torch.from_numpy(v.copy()) for k, v in params.items()}


def _assert_same(a, b, spec, rtol=1e-6):
    for g in spec.perm_to_axes:
        assert np.array_equal(np.asarray(a.perms[g]), np.asarray(b.perms[g])), g
    assert a.sweeps == b.sweeps
    assert a.converged == b.converged
    np.testing.assert_allclose(a.objective, b.objective, rtol=rtol)
    np.testing.assert_allclose(a.history, b.history, rtol=rtol)


@pytest.mark.parametrize("init", ["identity", "greedy"])
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_matching_device_path_equals_native(problem, seed, init):
    spec, shapes = PROBLEMS[problem]()
    rng = np.random.default_rng(seed)
    a, b = _params(spec, shapes, rng), _params(spec, shapes, rng)
    native = match_weights(spec, a, b, init=init, seed=seed, backend="native")
    device = match_weights(spec, _torch(a), _torch(b), init=init, seed=seed, backend="torch")
    _assert_same(native, device, spec)
    if init == "identity":
        assert native.sweeps >= 2  # a real descent, not a one-sweep fixed point


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_planted_permutation_recovered_on_the_device_path(problem):
    spec, shapes = PROBLEMS[problem]()
    rng = np.random.default_rng(7)
    a = _params(spec, shapes, rng)
    pi = random_permutation(spec, a, seed=3)
    b = apply_permutation(spec, pi, a)
    res = match_weights(spec, _torch(a), _torch(b), backend="torch")
    back = apply_permutation(spec, res.perms, _torch(b))
    for k in a:
        assert torch.equal(back[k], torch.from_numpy(a[k])), k


def test_weighted_pairs_device_path_equals_native():
    spec, shapes = _mlp()
    rng = np.random.default_rng(11)
    pairs = [(_params(spec, shapes, rng), _params(spec, shapes, rng)) for _ in range(4)]
    weights = [1.0, 0.5, 2.0, -0.25]
    native = match_gradients(spec, pairs, weights, seed=5, backend="native")
    device = match_gradients(spec, [(_torch(t), _torch(s)) for t, s in pairs], weights, seed=5,
                             backend="torch")
    _assert_same(native, device, spec, rtol=1e-5)


@pytest.mark.parametrize("problem", ["mlp", "conv"])
def test_fgmt_and_gmt_loops_device_path_equals_native(problem):
    # FGMT: one matcher, one pair per step, identity start with warm duals; GMT: clear_pairs and
    # re-add every step, warm start from the previous permutations.
    spec, shapes = PROBLEMS[problem]()
    rng = np.random.default_rng(21)
    steps = [(_params(spec, shapes, rng), _params(spec, shapes, rng)) for _ in range(4)]
    for loop in ("fgmt", "gmt"):
        results = {}
        for backend in ("native", "torch"):
            m = GradientMatcher(spec, seed=3, backend=backend)
            out = []
            for s in range(1, len(steps) + 1):
                if loop == "fgmt":
                    t, src = steps[s - 1]
                    m.add(_torch(t) if backend == "torch" else t, _torch(src) if backend == "torch" else src)
                    out.append(m.solve("identity", warm_start=True, exact_objective=False))
                else:
                    m.clear_pairs()
                    for t, src in steps[:s]:
                        m.add(_torch(t) if backend == "torch" else t,
                              _torch(src) if backend == "torch" else src)
                    out.append(m.solve(None, warm_start=True))
            results[backend] = out
        for r_native, r_device in zip(results["native"], results["torch"]):
            _assert_same(r_native, r_device, spec, rtol=1e-5)


def test_init_and_objective_device_path_equal_native():
    spec, shapes = _conv()
    rng = np.random.default_rng(4)
    a, b = _params(spec, shapes, rng), _params(spec, shapes, rng)
    init = random_permutation(spec, a, seed=9)
    res = {}
    for backend in ("native", "torch"):
        m = GradientMatcher(spec, seed=1, backend=backend)
        m.add(a, b)
        res[backend] = (m.solve(init, warm_start=False), m.objective(init))
    _assert_same(res["native"][0], res["torch"][0], spec)
    np.testing.assert_allclose(res["native"][1], res["torch"][1], rtol=1e-12)
    # An independent float64 objective of the start.
    moved = apply_permutation(spec, init, b)
    exact = sum(float(np.dot(a[k].astype(np.float64).ravel(), moved[k].astype(np.float64).ravel()))
                for k in a)
    np.testing.assert_allclose(res["torch"][1], exact, rtol=1e-12)


def test_kind_in_kind_out():
    spec, shapes = _mlp()
    rng = np.random.default_rng(0)
    a, b = _params(spec, shapes, rng), _params(spec, shapes, rng)
    for backend in ("native", "torch"):
        r_np = match_weights(spec, a, b, backend=backend)
        assert all(type(p) is np.ndarray and p.dtype == np.int64 for p in r_np.perms.values())
        r_t = match_weights(spec, _torch(a), _torch(b), backend=backend)
        assert all(isinstance(p, torch.Tensor) and p.dtype == torch.int64 and p.device.type == "cpu"
                   for p in r_t.perms.values())
    m = GradientMatcher(spec, backend="torch")
    m.add(_torch(a), _torch(b))
    assert m.backend == "torch" and str(m.device) == "cpu"
    assert GradientMatcher(spec).backend is None


def test_mixed_devices_raise_an_error_naming_both():
    spec, shapes = _mlp()
    rng = np.random.default_rng(0)
    a, b = _torch(_params(spec, shapes, rng)), _torch(_params(spec, shapes, rng))
    b_meta = dict(b, **{"layers.1.weight": b["layers.1.weight"].to("meta")})
    with pytest.raises(ValueError, match=r"source\['layers.1.weight'\] is on meta but .* is on cpu"):
        GradientMatcher(spec).add(a, b_meta)
    m = GradientMatcher(spec)
    m.add(a, b)
    a_meta = {k: v.to("meta") for k, v in a.items()}
    with pytest.raises(ValueError, match="is on meta but this matcher's pairs are on cpu"):
        m.add(a_meta, {k: v.to("meta") for k, v in b.items()})
    assert m.num_pairs == 1
    with pytest.raises(ValueError, match="backend='native' solves on the CPU but the pairs are on meta"):
        GradientMatcher(spec, backend="native").add(a_meta, {k: v.to("meta") for k, v in b.items()})
    with pytest.raises(ValueError, match="backend must be one of"):
        GradientMatcher(spec, backend="cuda")


def test_device_path_errors_name_the_tensor_and_add_nothing():
    spec, shapes = _mlp()
    rng = np.random.default_rng(0)
    a, b = _torch(_params(spec, shapes, rng)), _torch(_params(spec, shapes, rng))
    m = GradientMatcher(spec, backend="torch")
    m.add(a, b)
    bad = dict(b, **{"layers.2.bias": b["layers.2.bias"].clone()})
    bad["layers.2.bias"][1] = float("nan")
    with pytest.raises(ValueError, match=r"source\['layers.2.bias'\] contains NaN"):
        m.add(a, bad)
    wrong = dict(a, **{"layers.0.bias": torch.zeros(3)})
    with pytest.raises(ValueError, match="layers.0.bias"):
        m.add(wrong, b)
    assert m.num_pairs == 1
    r = m.solve()
    assert r.sweeps >= 1


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_concurrent_first_adds_lose_no_pair(backend):
    spec, shapes = _mlp()
    rng = np.random.default_rng(0)
    pairs = [(_params(spec, shapes, rng), _params(spec, shapes, rng)) for _ in range(8)]
    for _ in range(5):
        m = GradientMatcher(spec, backend=backend)
        barrier = threading.Barrier(len(pairs))

        def add(pair):
            barrier.wait()
            m.add(*pair)

        threads = [threading.Thread(target=add, args=(p,)) for p in pairs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert m.num_pairs == len(pairs)


def _emulated_cuda_batch_solve():
    """The CUDA LAP kernel's own code on the host, in place of the GPU (same contract)."""
    emulate = load_testing_module().cuda_emulation_lap_batch

    def solve(costs, col_duals):
        duals = None if col_duals is None else col_duals.numpy()
        cols, status, _, v = emulate(costs.contiguous().numpy(), True, 4, duals)
        return torch.from_numpy(cols), torch.from_numpy(v), torch.from_numpy(status)

    return solve


@pytest.mark.parametrize("init", ["identity", "greedy"])
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_on_device_descent_with_the_cuda_kernel_equals_native(problem, init, monkeypatch):
    # The CUDA build's path: LAP results and the accept rule stay on the device, one host read
    # per sweep. Every group is visited each sweep (no per-visit read to skip clean ones), which
    # changes the work, not the result.
    monkeypatch.setattr(device_lap, "cuda_lap_available", lambda device: True)
    monkeypatch.setattr(device_lap, "cuda_batch_solve", _emulated_cuda_batch_solve())
    spec, shapes = PROBLEMS[problem]()
    rng = np.random.default_rng(5)
    a, b = _params(spec, shapes, rng), _params(spec, shapes, rng)
    native = match_weights(spec, a, b, init=init, seed=2, backend="native")
    m = GradientMatcher(spec, seed=2, backend="torch")
    m.add(_torch(a), _torch(b))
    assert isinstance(m._path.lap, device_lap.CudaLap)
    _assert_same(native, m.solve(init, warm_start=False), spec)
    # A warm re-solve (duals kept on the device) stays at the optimum.
    again = m.solve(warm_start=True)
    for g in spec.perm_to_axes:
        assert torch.equal(again.perms[g], torch.from_numpy(native.perms[g]))


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_cached_cost_terms_equal_fresh_builds(problem):
    # The host-LAP path keeps dynamic cost terms, extends them with new pairs and corrects the
    # slices whose permutation moved; each must equal a term built from scratch.
    from trajtransfer.core.match import _CompiledSpec
    from trajtransfer.core.torch_pairs import TorchPairs

    spec, shapes = PROBLEMS[problem]()
    rng = np.random.default_rng(3)
    compiled = _CompiledSpec(spec, _params(spec, shapes, rng), "target")
    sizes = [compiled.sizes[g] for g in compiled.groups]
    store = TorchPairs(sizes, [compiled.shapes[n] for n in compiled.names], compiled.axis_groups, "cpu")
    host = [np.arange(n) for n in sizes]
    deltas = 0
    for step in range(6):
        t, s = _params(spec, shapes, rng), _params(spec, shapes, rng)
        store.add([torch.from_numpy(t[n]) for n in compiled.names],
                  [torch.from_numpy(s[n]) for n in compiled.names], 1.0 + step)
        for g, n in enumerate(sizes):  # move a few slices (step odd) or most of them (even)
            k = 2 if step % 2 else n
            idx = rng.choice(n, size=min(k, n), replace=False)
            host[g][idx] = host[g][rng.permutation(idx)]
        perms = [torch.from_numpy(p.copy()) for p in host]
        for g in range(len(sizes)):
            cached, (_, delta) = store.cost(g, perms, host)
            fresh, _ = store.cost(g, perms)
            deltas += delta
            torch.testing.assert_close(cached, fresh, rtol=1e-5, atol=1e-4)
    assert deltas > 0  # the correction path ran


def test_lap_placement_setting(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(_core, "with_cuda", True, raising=False)
    monkeypatch.delenv("TRAJTRANSFER_DEVICE_LAP", raising=False)
    assert device_lap.cuda_lap_available(cuda)
    assert not device_lap.cuda_lap_available(torch.device("cpu"))
    monkeypatch.setenv("TRAJTRANSFER_DEVICE_LAP", "host")
    assert not device_lap.cuda_lap_available(cuda)
    monkeypatch.setenv("TRAJTRANSFER_DEVICE_LAP", "gpu")
    with pytest.raises(ValueError, match="TRAJTRANSFER_DEVICE_LAP must be one of"):
        device_lap.cuda_lap_available(cuda)
    monkeypatch.setattr(_core, "with_cuda", False, raising=False)
    monkeypatch.setenv("TRAJTRANSFER_DEVICE_LAP", "device")
    with pytest.raises(ValueError, match="needs a CUDA build"):
        device_lap.cuda_lap_available(cuda)


# ------------------------------------------------------------- the LAP entry points on devices
def test_lap_on_a_meta_tensor_is_a_clear_error():
    from trajtransfer import linear_sum_assignment

    with pytest.raises(ValueError, match="cost_matrix is a meta tensor"):
        linear_sum_assignment(torch.empty((3, 3), device="meta"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cuda_build", [False, True])
def test_lap_on_cuda_tensors_with_and_without_a_cuda_build(cuda_build, monkeypatch):
    # Without a CUDA build the cost matrix is solved on the host; results come back on its device.
    from scipy.optimize import linear_sum_assignment as scipy_lsa

    from trajtransfer import linear_sum_assignment, linear_sum_assignment_batch

    if cuda_build and not getattr(_core, "with_cuda", False):
        pytest.skip("extension built without CUDA")
    monkeypatch.setattr(_core, "with_cuda", cuda_build, raising=False)
    cost = torch.rand((40, 50), device="cuda", dtype=torch.float64)
    r, c = linear_sum_assignment(cost)
    assert r.device == cost.device and c.device == cost.device
    r0, c0 = scipy_lsa(cost.cpu().numpy())
    assert float(cost[r, c].sum()) == pytest.approx(float(cost.cpu().numpy()[r0, c0].sum()))
    batch = linear_sum_assignment_batch(torch.rand((3, 20, 20), device="cuda"))
    assert batch.device == cost.device and batch.shape == (3, 20)


@pytest.mark.parametrize("init", ["identity", "greedy"])
@pytest.mark.parametrize("placement", ["native", "host", "device"])
def test_overflowing_cost_matrix_names_the_group(placement, init, monkeypatch):
    if placement == "device":
        monkeypatch.setattr(device_lap, "cuda_lap_available", lambda device: True)
        monkeypatch.setattr(device_lap, "cuda_batch_solve", _emulated_cuda_batch_solve())
    spec, shapes = _mlp()
    rng = np.random.default_rng(0)
    a, b = _params(spec, shapes, rng), _params(spec, shapes, rng)
    a["layers.1.weight"] *= 1e30  # finite, but products of 1e30 overflow float32
    b["layers.1.weight"] *= 1e30
    with pytest.raises(ValueError, match=r"group 'c[12]' has non-finite entries: .* overflow float32"):
        match_weights(spec, _torch(a), _torch(b), init=init,
                      backend="native" if placement == "native" else "torch")
