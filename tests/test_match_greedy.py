"""The greedy start: one pass over the groups in spec order before the coordinate descent.

Oracles: planted permutations (recovered exactly by the pass alone), repeat runs, the native
path against the device path, and the descent's monotone objective from every start.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from trajtransfer import spec_from_model  # noqa: E402
from trajtransfer.core.match import GradientMatcher, match_weights  # noqa: E402
from trajtransfer.core.permute import apply_permutation, random_permutation  # noqa: E402
from trajtransfer.kit.models import MLP, ResNet18  # noqa: E402

BACKENDS = ["native", "torch"]


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _TracedConvBN(nn.Sequential):
    """A conv net whose spec comes from tracing (the greedy order follows the traced topology)."""

    def __init__(self):
        super().__init__(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def permutation_spec(self):
        return spec_from_model(self, torch.zeros(2, 1, 8, 8))


def _planted(make, seed):
    torch.manual_seed(seed)
    model = make()
    spec = model.permutation_spec()
    a = _state(model)
    b = apply_permutation(spec, random_permutation(spec, a, seed=seed + 1), a)
    return spec, a, b


MODELS = {
    "mlp": lambda: MLP(20, (32, 24, 16), 5),
    "resnet": lambda: ResNet18(num_classes=5, width=4),
    "traced-conv-bn": _TracedConvBN,
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_greedy_pass_alone_recovers_a_planted_permutation(model, backend):
    spec, a, b = _planted(MODELS[model], 0)
    res = match_weights(spec, a, b, init="greedy", max_sweeps=0, backend=backend)
    assert res.sweeps == 0
    back = apply_permutation(spec, res.perms, b)
    for k in a:
        if k not in spec.buffers:
            assert torch.equal(back[k], a[k]), k
    # the identity start with no sweep is far from it
    ident = match_weights(spec, a, b, init="identity", max_sweeps=0, backend=backend)
    assert res.objective > ident.objective


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_start_is_deterministic_and_monotone(backend):
    torch.manual_seed(0)
    make = lambda: MLP(20, (48, 40, 32), 5)  # noqa: E731
    a, b = _state(make()), _state(make())
    spec = make().permutation_spec()
    first = match_weights(spec, a, b, init="greedy", backend=backend)
    again = match_weights(spec, a, b, init="greedy", backend=backend)
    for g in first.perms:
        assert torch.equal(first.perms[g], again.perms[g])
    assert first.history == again.history
    for start in ("greedy", "identity", random_permutation(spec, a, seed=4)):
        h = match_weights(spec, a, b, init=start, backend=backend).history
        assert all(y >= x - 1e-9 * abs(x) for x, y in zip(h, h[1:])), (start, h)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_greedy_device_path_equals_native(model):
    torch.manual_seed(1)
    make = MODELS[model]
    a, b = _state(make()), _state(make())
    spec = make().permutation_spec()
    native = match_weights(spec, a, b, init="greedy", seed=3, backend="native")
    device = match_weights(spec, a, b, init="greedy", seed=3, backend="torch")
    for g in native.perms:
        assert torch.equal(native.perms[g], device.perms[g]), g
    assert native.sweeps == device.sweeps
    np.testing.assert_allclose(native.history, device.history, rtol=1e-6)


def test_greedy_start_ignores_earlier_permutations_but_keeps_duals():
    torch.manual_seed(2)
    make = MODELS["mlp"]
    a, b = _state(make()), _state(make())
    spec = make().permutation_spec()
    m = GradientMatcher(spec)
    m.add(a, b)
    cold = m.solve("greedy", warm_start=False)
    warm = m.solve("greedy", warm_start=True)  # same start, LAPs warm from the last duals
    for g in cold.perms:
        assert torch.equal(cold.perms[g], warm.perms[g])
    with pytest.raises(ValueError, match="init must be a mapping, one of"):
        m.solve("random")
