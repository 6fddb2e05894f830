"""BatchNorm reset + recalibration, alone and inside transfer."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from trajtransfer.method.bn import has_batchnorm, recalibrate_bn, reset_bn_stats  # noqa: E402
from trajtransfer.kit.data import ArrayDataset, DatasetSplits  # noqa: E402
from trajtransfer.core.spec import permutation_spec_from_axes_to_perm  # noqa: E402
from trajtransfer.method.trajectory import Trajectory  # noqa: E402
from trajtransfer.method.transfer import transfer  # noqa: E402


class BNNet(torch.nn.Module):
    def __init__(self, d=6, h=8, c=3):
        super().__init__()
        self.fc1 = torch.nn.Linear(d, h)
        self.bn = torch.nn.BatchNorm1d(h)
        self.fc2 = torch.nn.Linear(h, c)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))

    def permutation_spec(self):
        stats = ["bn.running_mean", "bn.running_var"]
        return permutation_spec_from_axes_to_perm(
            {"fc1.weight": ("h", None), "fc1.bias": ("h",), "bn.weight": ("h",), "bn.bias": ("h",),
             "bn.running_mean": ("h",), "bn.running_var": ("h",), "fc2.weight": (None, "h"),
             "fc2.bias": (None,)}, buffers=stats)


def _batches(k=4, n=16, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, d, generator=g) * 3 + 1, torch.zeros(n, dtype=torch.long)) for _ in range(k)]


def test_recalibration_changes_only_running_stats():
    torch.manual_seed(0)
    net = BNNet()
    net.bn.running_mean.fill_(5.0)
    net.bn.momentum = 0.3
    net.eval()
    params = {k: v.clone() for k, v in net.named_parameters()}
    batches = _batches()
    assert recalibrate_bn(net, batches) == 4
    for k, v in net.named_parameters():
        assert torch.equal(v, params[k]), k
    assert not net.training and net.bn.momentum == 0.3  # mode and momentum restored
    # independent oracle: the cumulative average of per-batch mean / unbiased variance of fc1(x)
    with torch.no_grad():
        pre = [net.fc1(x) for x, _ in batches]
    torch.testing.assert_close(net.bn.running_mean, torch.stack([p.mean(0) for p in pre]).mean(0))
    torch.testing.assert_close(net.bn.running_var, torch.stack([p.var(0, unbiased=True) for p in pre]).mean(0))
    assert int(net.bn.num_batches_tracked) == 4
    assert all(p.grad is None for p in net.parameters())  # no_grad: no autograd work


def test_recalibration_num_batches_and_reset():
    torch.manual_seed(0)
    net = BNNet()
    assert recalibrate_bn(net, iter(_batches(k=10)), num_batches=3) == 3
    assert int(net.bn.num_batches_tracked) == 3
    assert reset_bn_stats(net) == 1
    assert torch.equal(net.bn.running_mean, torch.zeros(8)) and torch.equal(net.bn.running_var, torch.ones(8))
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_bn(net, [])


def test_no_batchnorm_is_a_no_op():
    net = torch.nn.Sequential(torch.nn.Linear(6, 3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert not has_batchnorm(net)
    assert recalibrate_bn(net, _batches()) == 0
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_transfer_recalibrates_bn_models_and_keeps_params():
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    ds = ArrayDataset(x, y, 3)
    data = DatasetSplits(ds.subset(slice(0, 64)), ds.subset(slice(64, 96)), ds.subset(slice(64, 96)))
    src0, src1, tgt = BNNet(), BNNet(), BNNet()
    traj = Trajectory([src0.state_dict(), src1.state_dict()], num_splits=2)
    res = transfer(BNNet(), traj, tgt, data, method="naive", batch_size=16, bn_batches=2)
    assert res.config["uses_batchnorm"]
    # parameters are exactly θ₂⁰ + (θ₁ᴷ − θ₁⁰); the running stats come from recalibration
    for name, v in tgt.named_parameters():
        expect = v + (src1.state_dict()[name] - src0.state_dict()[name])
        torch.testing.assert_close(res.final_params[name], expect, rtol=0, atol=1e-6)
    assert int(res.final_params["bn.num_batches_tracked"]) == 2
    check = BNNet()
    check.load_state_dict(res.final_params)
    with torch.no_grad():
        pre = check.fc1(data.train.x)
    # the recalibrated mean lies within the spread of the training pre-activations, unlike the init's 0
    assert not torch.equal(res.final_params["bn.running_mean"], torch.zeros(8))
    assert torch.all(res.final_params["bn.running_mean"].sub(pre.mean(0)).abs() < 3 * pre.std(0))
    gm = transfer(BNNet(), traj, tgt, data, method="fgmt", batch_size=16, bn_batches=2)
    assert gm.num_gradient_pairs == 2 and int(gm.best_params["bn.num_batches_tracked"]) == 2
    # the BN recalibration is timed as its own part of the evaluation (3 evaluations here)
    assert 0 < gm.timings["bn"] <= gm.timings["evaluation"]


def test_transfer_without_recalibration_keeps_the_models_statistics():
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    ds = ArrayDataset(x, (x[:, 0] > 0).long(), 2)
    model, src0, src1 = BNNet(), BNNet(), BNNet()
    traj = Trajectory([src0.state_dict(), src1.state_dict()], num_splits=2)
    res = transfer(model, traj, BNNet(), ds, method="naive", batch_size=16, bn_batches=0)
    assert res.timings["bn"] == 0.0
    for name in ("bn.running_mean", "bn.running_var", "bn.num_batches_tracked"):
        assert torch.equal(res.final_params[name], model.state_dict()[name]), name
