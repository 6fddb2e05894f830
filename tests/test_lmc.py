"""Linear mode connectivity: end points against plain (or BN-recalibrated) evaluation, the
permutation-invariance oracle, and argument checks."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from trajtransfer import (MLP, apply_permutation, evaluate, lmc_curve, match_weights,  # noqa: E402
                          random_permutation, recalibrate_bn, train)
from trajtransfer.kit.data import DatasetSplits, Loader, load_digits_data  # noqa: E402
from trajtransfer.kit.models import ResNet  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return load_digits_data()


@pytest.fixture(scope="module")
def digit_images(digits):
    def image(ds):
        return type(ds)(ds.x.reshape(-1, 1, 8, 8), ds.y, ds.num_classes)

    return DatasetSplits(image(digits.train), image(digits.val), image(digits.test), "digits 8x8")


def _trained_mlp(data, seed):
    torch.manual_seed(seed)
    net = MLP(64, (32, 32), 10)
    train(net, data.train, epochs=3, lr=0.05, batch_size=32, seed=seed, num_threads=1)
    return net


def _trained_resnet(data, seed):
    torch.manual_seed(seed)
    net = ResNet((1, 1), num_classes=10, width=4, in_channels=1)
    train(net, data.train, epochs=2, lr=0.05, batch_size=32, seed=seed, num_threads=1)
    return net


@pytest.fixture(scope="module")
def mlps(digits):
    return _trained_mlp(digits, 0), _trained_mlp(digits, 1)


@pytest.fixture(scope="module")
def resnets(digit_images):
    return _trained_resnet(digit_images, 0), _trained_resnet(digit_images, 1)


def test_end_points_are_the_models_plain_accuracy_and_loss_without_bn(digits, mlps):
    a, b = mlps
    curve = lmc_curve(MLP(64, (32, 32), 10), a, b.state_dict(), digits, points=5)
    assert curve.alphas == [0.0, 0.25, 0.5, 0.75, 1.0] and not curve.recalibrated
    assert curve.accuracy[0] == evaluate(a, digits.val) and curve.accuracy[-1] == evaluate(b, digits.val)
    with torch.no_grad():  # the loss in one batch, with torch's own mean
        for end, net in ((0, a), (-1, b)):
            net.eval()
            assert curve.loss[end] == pytest.approx(float(F.cross_entropy(net(digits.val.x), digits.val.y)),
                                                    rel=1e-5)
    # two independently trained nets: the middle of the segment is worse than the line (ReLU MLPs
    # from different seeds are not linearly connected without alignment)
    assert curve.barrier > 0.05 and curve.accuracy_barrier > 0.0
    d = curve.to_dict()
    assert d["barrier"] == curve.barrier and len(d["loss"]) == 5


def test_end_points_equal_the_models_after_the_same_bn_recalibration(digit_images, resnets):
    a, b = resnets
    bn_batches, bn_size = 3, 64
    # stale running statistics on the end points: only the recalibration can give the oracle's answer
    stale = {k: (v + 3.0 if k.endswith("running_mean") else v) for k, v in a.state_dict().items()}
    curve = lmc_curve(ResNet((1, 1), num_classes=10, width=4, in_channels=1), stale, b, digit_images,
                      points=3, bn_batches=bn_batches, bn_batch_size=bn_size, seed=7)
    assert curve.recalibrated
    for end, params in ((0, stale), (-1, b.state_dict())):
        net = ResNet((1, 1), num_classes=10, width=4, in_channels=1)
        net.load_state_dict(params)
        recalibrate_bn(net, Loader(digit_images.train, bn_size, seed=7, drop_last=False), bn_batches)
        assert curve.accuracy[end] == evaluate(net, digit_images.val)
    net = ResNet((1, 1), num_classes=10, width=4, in_channels=1)
    net.load_state_dict(stale)
    assert evaluate(net, digit_images.val) != curve.accuracy[0]  # the stale statistics do matter


def test_without_recalibration_bn_statistics_are_interpolated(digit_images, resnets):
    a, b = resnets
    curve = lmc_curve(ResNet((1, 1), num_classes=10, width=4, in_channels=1), a, b, digit_images,
                      points=2, bn_batches=0)
    assert not curve.recalibrated
    assert curve.accuracy == [evaluate(a, digit_images.val), evaluate(b, digit_images.val)]


def test_a_permuted_copy_realigned_by_matching_gives_a_flat_curve(digits, mlps):
    a = mlps[0]
    spec = a.permutation_spec()
    pi = random_permutation(spec, a.state_dict(), seed=3)
    permuted = apply_permutation(spec, pi, a.state_dict())
    unaligned = lmc_curve(MLP(64, (32, 32), 10), a, permuted, digits, points=5)
    # same function at both ends, different weights: a barrier in between
    assert unaligned.accuracy[0] == unaligned.accuracy[-1] and unaligned.barrier > 0.05
    aligned = apply_permutation(spec, match_weights(spec, a.state_dict(), permuted).perms, permuted)
    flat = lmc_curve(MLP(64, (32, 32), 10), a, aligned, digits, points=5)
    assert flat.accuracy == [evaluate(a, digits.val)] * 5
    assert flat.loss == pytest.approx([flat.loss[0]] * 5, abs=1e-6) and flat.barrier < 1e-6


def test_permuting_both_ends_leaves_the_curve_unchanged_with_bn(digit_images, resnets):
    a, b = resnets
    spec = a.permutation_spec()
    pi = random_permutation(spec, a.state_dict(), seed=5)
    make = lambda: ResNet((1, 1), num_classes=10, width=4, in_channels=1)  # noqa: E731
    plain = lmc_curve(make(), a, b, digit_images, points=4, bn_batches=2)
    moved = lmc_curve(make(), apply_permutation(spec, pi, a.state_dict()),
                      apply_permutation(spec, pi, b.state_dict()), digit_images, points=4, bn_batches=2)
    assert moved.loss == pytest.approx(plain.loss, rel=1e-4)
    n = len(digit_images.val)
    assert all(abs(x - y) <= 1.0 / n for x, y in zip(moved.accuracy, plain.accuracy))


def test_bad_arguments_are_named(digits, mlps):
    a, b = mlps
    net = MLP(64, (32, 32), 10)
    with pytest.raises(ValueError, match="points"):
        lmc_curve(net, a, b, digits, points=1)
    with pytest.raises(ValueError, match="points"):
        lmc_curve(net, a, b, digits, points=2.5)
    with pytest.raises(ValueError, match="bn_batches"):
        lmc_curve(net, a, b, digits, bn_batches=-1)
    missing = {k: v for k, v in b.state_dict().items() if k != "layers.1.bias"}
    with pytest.raises(ValueError, match="params_b.*layers.1.bias"):
        lmc_curve(net, a, missing, digits)
    with pytest.raises(ValueError, match=r"params_a\['layers.0.weight'\] has shape"):
        lmc_curve(net, MLP(64, (16, 32), 10), b, digits)
    with pytest.raises(TypeError, match="data"):
        lmc_curve(net, a, b, digits.val.x)
    with pytest.raises(TypeError, match="params_a"):
        lmc_curve(net, [1, 2], b, digits)


def test_plot_writes_a_png(tmp_path, digits, mlps):
    pytest.importorskip("matplotlib")
    from trajtransfer.kit.plot import plot_lmc_curves

    curve = lmc_curve(MLP(64, (32, 32), 10), *mlps, digits, points=3)
    path = plot_lmc_curves({"fgmt": curve, "naive": curve.to_dict()}, tmp_path / "sub" / "lmc.png", title="t")
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
