"""Learning transfer of a conv net with BatchNorm on real images (Fashion-MNIST), end to end.

A small conv net (three 3x3 conv + BN + ReLU layers, global average pool, linear head; its spec
derived by ``spec_from_model``) trains a source for three epochs on a 3,000-image subset; its
trajectory is transferred onto another init with BN recalibration at every evaluated step.
Halfway along it, GMT must beat Naive: permuting the source's displacement into the target's
units is what makes the transferred network work.
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from trajtransfer import spec_from_model  # noqa: E402
from trajtransfer.kit.data import FASHION_MNIST_DIR, load_fashion_mnist  # noqa: E402
from trajtransfer.kit.training import TrainConfig, train  # noqa: E402
from trajtransfer.method.trajectory import Trajectory  # noqa: E402
from trajtransfer.method.transfer import transfer  # noqa: E402

K = 4


def _small_conv_bn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="Debian fashion-mnist not installed")
def test_gmt_beats_naive_halfway_on_fashion_mnist_with_batchnorm(one_torch_thread):
    data = load_fashion_mnist()
    train_set, val = data.train.subset(slice(0, 3000)), data.val.subset(slice(0, 1000))
    spec = spec_from_model(_small_conv_bn(), torch.zeros(2, 1, 28, 28))
    assert any(name.endswith("running_mean") for name in spec.buffers)  # BN statistics move too
    torch.manual_seed(1)
    source = _small_conv_bn()
    init = {k: v.clone() for k, v in source.state_dict().items()}
    hist = train(source, train_set, TrainConfig(epochs=3, lr=0.05, batch_size=64), val=val, seed=0)
    assert hist.val_accuracy[-1] > 0.5  # the source learns (chance: 0.1)
    torch.manual_seed(2)
    target_init = _small_conv_bn().state_dict()
    trajectory = Trajectory([init, source.state_dict()], num_splits=K)
    acc = {}
    for method in ("naive", "gmt"):
        res = transfer(_small_conv_bn(), trajectory, target_init, train_set, method=method,
                       spec=spec, eval_data=val, batch_size=64, grad_batches=2, bn_batches=5)
        assert res.config["uses_batchnorm"] and res.eval_steps == list(range(K + 1))
        acc[method] = dict(zip(res.eval_steps, res.accuracy))
    assert acc["gmt"][K // 2] > acc["naive"][K // 2] + 0.03, acc
