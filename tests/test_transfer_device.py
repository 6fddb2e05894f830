"""transfer() on the device path and on a device: results against the native CPU path.

On CPU tensors, ``backend="torch"`` runs the code a GPU runs (pairs, cost matrices and descent
in torch ops, LAP from a host copy); it must give the native path's permutations, with
parameters within float32 rounding. With a GPU, the transfer itself runs there.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trajtransfer.kit.data import load_digits_data  # noqa: E402
from trajtransfer.method import methods  # noqa: E402
from transfer_setup import tanh_mlp, trained_source_and_target  # noqa: E402
from trajtransfer.method.transfer import transfer  # noqa: E402

K = 4


_mlp = tanh_mlp


@pytest.fixture(scope="module")
def setup():
    return trained_source_and_target(_mlp, K)


def _run(setup, method, **kw):
    data, traj, target_init, target_final = setup
    if method == "oracle":
        kw["target_final"] = target_final
    return transfer(_mlp(0), traj, target_init, data, method=method, batch_size=64, **kw)


def _assert_same_transfer(a, b, same_accuracy=True):
    assert len(a.perms) == len(b.perms)
    for pa, pb in zip(a.perms, b.perms):
        for g in pa:
            assert torch.equal(pa[g].cpu(), pb[g].cpu()), g
    assert a.sweeps == b.sweeps
    np.testing.assert_allclose([o for o in a.objective if o is not None],
                               [o for o in b.objective if o is not None], rtol=1e-5)
    for n in a.final_params:
        torch.testing.assert_close(a.final_params[n].cpu(), b.final_params[n].cpu(),
                                   rtol=1e-6, atol=1e-6)
    if same_accuracy:
        assert a.accuracy == b.accuracy and a.best_step == b.best_step
    else:  # other GEMM kernels: a borderline sample may flip
        n_val = len(load_digits_data(seed=0).val)
        np.testing.assert_allclose(a.accuracy, b.accuracy, atol=1.5 / n_val)


@pytest.mark.parametrize("method", ["fgmt", "gmt", "oracle"])
def test_device_path_on_cpu_equals_the_native_path(setup, method):
    native = _run(setup, method, backend="native")
    device = _run(setup, method, backend="torch")
    assert native.config["backend"] == "native" and device.config["backend"] == "torch"
    _assert_same_transfer(native, device)
    assert max(s for s in native.sweeps if s is not None) >= 2  # a multi-sweep descent


def test_warm_start_variants_on_the_device_path(setup):
    for warm in (True, "both"):
        _assert_same_transfer(_run(setup, "fgmt", warm_start=warm, backend="native"),
                              _run(setup, "fgmt", warm_start=warm, backend="torch"))


def test_results_are_tensors_on_the_transfer_device(setup):
    res = _run(setup, "fgmt", keep_perms="final")
    assert res.config["device"] == "cpu"
    assert len(res.perms) == 1
    for p in res.perms[0].values():
        assert isinstance(p, torch.Tensor) and p.dtype == torch.int64 and p.device.type == "cpu"
    for d in (res.best_params, res.final_params):
        assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in d.values())
    naive = _run(setup, "naive")
    assert all(torch.equal(p, torch.arange(len(p))) for p in naive.perms[0].values())


def test_a_new_method_is_one_registered_class(setup, monkeypatch):
    # A fifth method: a fixed random permutation. Registering it is the only change needed.
    data, traj, target_init, _ = setup
    fixed = {"c1": torch.randperm(32, generator=torch.Generator().manual_seed(0)),
             "c2": torch.randperm(24, generator=torch.Generator().manual_seed(1))}

    class Fixed(methods.TransferMethod):
        name = "fixed"

        def step(self, s, prev):
            return methods.StepMatch(fixed)

    monkeypatch.setitem(methods.METHODS, "fixed", Fixed)
    res = _run(setup, "fixed", eval_every=K)
    assert res.method == "fixed" and res.eval_steps == [0, K]
    assert all(torch.equal(res.perms[-1][g], fixed[g]) for g in fixed)
    # θ₂ᴷ = θ₂⁰ + π(θ₁ᴷ − θ₁⁰), checked on the first layer (rows follow c1).
    want = target_init["layers.0.weight"] + (traj[K]["layers.0.weight"] - traj[0]["layers.0.weight"])[fixed["c1"]]
    torch.testing.assert_close(res.final_params["layers.0.weight"], want)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["fgmt", "gmt"])
def test_transfer_on_a_gpu_equals_the_cpu(setup, method):
    data, traj, target_init, _ = setup
    cpu = _run(setup, method)
    gpu = transfer(_mlp(0), traj, {k: v.cuda() for k, v in target_init.items()}, data,
                   method=method, batch_size=64)
    assert gpu.config["device"].startswith("cuda")
    assert all(v.is_cuda for v in gpu.final_params.values())
    assert all(p.is_cuda for perm in gpu.perms for p in perm.values())
    # Different GEMM kernels: the permutations agree on this tie-free problem, the parameters
    # within float32 rounding; the minibatches are the same (drawn on the host).
    _assert_same_transfer(cpu, gpu, same_accuracy=False)
