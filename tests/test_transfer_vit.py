"""Learning transfer of an Adam-trained ViT trajectory (the SGD case: test_transfer_planted_vit)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from trajtransfer.core.permute import apply_permutation, random_permutation  # noqa: E402
from trajtransfer.kit.data import load_digits_data  # noqa: E402
from trajtransfer.kit.models import ViT  # noqa: E402
from trajtransfer.kit.training import evaluate, train  # noqa: E402
from trajtransfer.method.trajectory import TrajectoryRecorder  # noqa: E402
from trajtransfer.method.transfer import transfer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _vit(seed: int) -> ViT:
    torch.manual_seed(seed)
    return ViT(image_size=8, patch_size=4, width=16, heads=2, depth=1, num_classes=10)


@pytest.mark.parametrize("match_init", ["identity", "greedy"])
def test_planted_permutation_is_recovered_at_every_step_of_an_adam_vit_transfer(tmp_path, match_init):
    """Target init = π·(source init) with π over the residual stream, heads, per-head and MLP
    groups: every step of GMT and FGMT finds π, so the transfer ends at π·(source end)."""
    data = load_digits_data(seed=0)
    rec = TrajectoryRecorder(tmp_path)
    source = _vit(1)
    train(source, data.train, epochs=2, lr=3e-3, batch_size=32, optimizer="adam", recorder=rec)
    traj = rec.trajectory(num_splits=3)
    spec = source.permutation_spec()
    pi = random_permutation(spec, traj[0], seed=7)
    assert {"res", "blocks.0.heads", "blocks.0.qk", "blocks.0.v", "blocks.0.mlp"} <= set(pi)
    planted = apply_permutation(spec, pi, traj[0])
    for method in ("fgmt", "gmt"):
        res = transfer(_vit(0), traj, planted, data, method=method, batch_size=64,
                       match_init=match_init)
        for p in res.perms:
            for g in pi:
                assert torch.equal(torch.as_tensor(p[g]).cpu(), torch.as_tensor(pi[g])), (method, g)
        for n, v in apply_permutation(spec, pi, traj[traj.num_steps]).items():
            if n in res.final_params:
                torch.testing.assert_close(res.final_params[n], v, rtol=1e-5, atol=1e-6)
        assert res.final_accuracy == pytest.approx(evaluate(source, data.val), abs=1 / 180)
