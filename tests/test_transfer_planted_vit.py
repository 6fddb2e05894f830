"""Planted permutation on the ViT: transfer onto a permuted copy of the source init.

When θ₂⁰ = π(θ₁⁰), gradient matching can recover π (heads, per-head dimensions, residual stream
and MLP units), and the transfer then moves along π(source trajectory): the same functions, so the
same accuracies at every step as the source's own trajectory. GELU units have no dead zone, so
every unit's gradient is seen and the recovered permutation must be π itself.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from trajtransfer.core.permute import apply_permutation, random_permutation  # noqa: E402
from trajtransfer.kit.data import load_digits_data  # noqa: E402
from trajtransfer.kit.models import ViT  # noqa: E402
from trajtransfer.kit.training import TrainConfig, evaluate, train  # noqa: E402
from trajtransfer.method.trajectory import Trajectory  # noqa: E402
from trajtransfer.method.transfer import transfer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

K = 3


def _make() -> ViT:
    return ViT(image_size=8, patch_size=4, width=16, heads=2, depth=1)


@pytest.mark.parametrize("method", ["gmt", "fgmt"])
def test_planted_vit_transfer_follows_the_permuted_source(method):
    data = load_digits_data(seed=0)
    torch.manual_seed(1)
    src = _make()
    init = {k: v.clone() for k, v in src.state_dict().items()}
    train(src, data.train, TrainConfig(epochs=2, lr=0.05, batch_size=32), seed=0)
    traj = Trajectory([init, src.state_dict()], num_splits=K)
    spec = src.permutation_spec()
    pi = random_permutation(spec, init, seed=3)
    res = transfer(_make(), traj, apply_permutation(spec, pi, init), data.train, method=method,
                   eval_data=data.val, batch_size=64, match_init="greedy")
    for g in spec.groups:
        assert torch.equal(torch.as_tensor(res.perms[-1][g]), torch.as_tensor(pi[g])), g
    reference = _make()
    for s in range(1, K + 1):
        reference.load_state_dict(traj[s])
        assert res.accuracy[s] == pytest.approx(evaluate(reference, data.val), abs=1e-9), s
