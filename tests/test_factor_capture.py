"""Weight gradients captured as factors during backward, and transfer() with them.

Oracles: autograd's own ``.grad`` (the factors' product must equal it), the set of layers that
qualify by construction, and transfer() with dense gradients on the native core (identical
permutations).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from trajtransfer.core.factored import Factored  # noqa: E402
from trajtransfer.core.match import GradientMatcher  # noqa: E402
from trajtransfer.method.factor_capture import FactorCapture, factorable_layers  # noqa: E402
from trajtransfer.method.pairs import mean_gradient  # noqa: E402
from trajtransfer.method.transfer import transfer  # noqa: E402
from transfer_setup import tanh_mlp, trained_source_and_target  # noqa: E402


class _Mixed(nn.Module):
    """Every kind of layer the capture must take or leave."""

    def __init__(self) -> None:
        super().__init__()
        self.pw = nn.Conv2d(3, 6, 1)                      # taken: pointwise
        self.bn = nn.BatchNorm2d(6)                       # left: BatchNorm
        self.k3 = nn.Conv2d(6, 5, 3, padding=1)           # left: 3x3 kernel
        self.strided = nn.Conv2d(5, 5, 1, stride=2)       # left: stride 2 subsamples the input
        self.fc = nn.Linear(5 * 2 * 2, 7)                 # taken
        self.tied_a = nn.Linear(7, 7)                     # left: weight shared with tied_b
        self.tied_b = nn.Linear(7, 7)
        self.tied_b.weight = self.tied_a.weight
        self.twice = nn.Linear(7, 7, bias=False)          # taken: called twice, rows stacked
        self.frozen = nn.Linear(7, 7)                     # left: weight frozen
        self.frozen.weight.requires_grad_(False)
        self.head = nn.Linear(7, 3)                       # taken

    def forward(self, x):
        x = torch.tanh(self.bn(self.pw(x)))
        x = self.strided(torch.tanh(self.k3(x))).flatten(1)
        x = torch.tanh(self.fc(x))
        x = torch.tanh(self.tied_b(torch.tanh(self.tied_a(x))))
        x = self.twice(torch.tanh(self.twice(x)))
        return self.head(self.frozen(x))


def test_the_capture_takes_exactly_the_qualifying_layers():
    model = _Mixed()
    assert sorted(factorable_layers(model)) == ["fc.weight", "head.weight", "pw.weight",
                                                "twice.weight"]


@pytest.mark.parametrize("batches", [1, 3])
def test_captured_factors_multiply_to_the_gradient(batches):
    torch.manual_seed(0)
    model = _Mixed()
    data = [(torch.randn(4, 3, 4, 4), torch.randint(0, 3, (4,))) for _ in range(batches)]
    dense = mean_gradient(model, data)
    factored = mean_gradient(model, data, FactorCapture(model))
    assert sorted(n for n, g in factored.items() if isinstance(g, Factored)) == [
        "fc.weight", "head.weight", "pw.weight", "twice.weight"]
    assert factored.keys() == dense.keys()
    for n, g in factored.items():
        got = g.dense() if isinstance(g, Factored) else g
        torch.testing.assert_close(got, dense[n], rtol=1e-5, atol=1e-6)
    assert factored["pw.weight"].rows == batches * 4 * 4 * 4   # samples x positions
    assert factored["twice.weight"].rows == batches * 4 * 2    # two calls per sample


def test_hooks_are_removed_after_recording():
    model = _Mixed()
    cap = FactorCapture(model)
    with cap.recording():
        pass
    assert all(not m._forward_hooks for m in model.modules())


K = 3


_mlp = tanh_mlp


@pytest.fixture(scope="module")
def setup():
    return trained_source_and_target(_mlp, K)


@pytest.mark.parametrize("method", ["fgmt", "gmt"])
@pytest.mark.parametrize("batch_size, grad_batches", [(8, 1), (4, 2)])
@pytest.mark.parametrize("backend, path", [("auto", "native"), ("torch", "torch")])
def test_transfer_with_factored_pairs_equals_the_dense_path(setup, method, batch_size,
                                                             grad_batches, backend, path,
                                                             monkeypatch):
    # Small minibatches so that the hidden layers' factors are the cheaper form (8 rows:
    # 8 * (64 + 32) < 64 * 32) while the output layer stays dense (8 * 34 > 24 * 10).
    data, traj, target_init, _ = setup
    added = []
    real_add = GradientMatcher.add

    def add(self, target, source, weight=1.0):
        real_add(self, target, source, weight)
        added.append((sorted(n for n, x in target.items() if isinstance(x, Factored)),
                      self.backend))

    monkeypatch.setattr(GradientMatcher, "add", add)
    dense = transfer(_mlp(0), traj, target_init, data, method=method, batch_size=batch_size,
                     grad_batches=grad_batches, factored_pairs=False)
    assert added and all(names == [] and backend == "native" for names, backend in added)
    added.clear()
    fac = transfer(_mlp(0), traj, target_init, data, method=method, batch_size=batch_size,
                   grad_batches=grad_batches, factored_pairs=True, backend=backend)
    # On the CPU the native core keeps the factors itself; backend="torch" takes the device path.
    assert added and all(names == ["layers.0.weight", "layers.1.weight", "layers.2.weight"]
                         and taken == path for names, taken in added)
    assert fac.config["factored_pairs"] and not dense.config["factored_pairs"]
    for pa, pb in zip(dense.perms, fac.perms):
        for g in pa:
            assert torch.equal(pa[g], pb[g]), g
    assert dense.sweeps == fac.sweeps
    np.testing.assert_allclose(dense.objective, fac.objective, rtol=1e-5)
    assert max(dense.sweeps) >= 2
    for n in dense.final_params:
        torch.testing.assert_close(dense.final_params[n], fac.final_params[n])
