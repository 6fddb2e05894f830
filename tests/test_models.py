"""Reference models: parameter counts (algorithm-spec §3.3), spec/state-dict agreement, and the
function invariance f(x; π·θ) = f(x; θ) of every hand-written spec, in train and eval mode."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from trajtransfer.kit.models import MLP, Conv8, ResNet18
from trajtransfer.core.permute import apply_permutation, random_permutation
from trajtransfer.core.spec import mlp_spec, permutation_spec_from_axes_to_perm, validate_spec


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def invariance_error(model, spec, x, *, train, seed=0):
    """max |f(x; π·θ) − f(x; θ)| / max |f(x; θ)| in float64, with non-trivial BN statistics.

    Only the state-dict entries the spec lists are permuted (the others are loaded unchanged).
    Also returns how far the permuted tensors moved, so that a vacuous identity permutation
    cannot make a test pass.
    """
    torch.manual_seed(seed)
    model = copy.deepcopy(model).double()
    x = x.double()
    model.train()
    with torch.no_grad():  # a few train-mode passes on shifted data: running stats != (0, 1)
        for k in range(3):
            model(x * (1.5 + k) + 0.3 * k)
    sd = model.state_dict()
    listed = {k: v for k, v in sd.items() if k in spec.axes_to_perm}
    new = apply_permutation(spec, random_permutation(spec, listed, seed), listed)
    permuted = copy.deepcopy(model)
    permuted.load_state_dict({**sd, **new})
    moved = max(float((new[k].double() - sd[k].double()).abs().max())
                for k in new if new[k].numel())
    model.train(train)
    permuted.train(train)
    with torch.no_grad():
        y, y_perm = model(x), permuted(x)
    return float((y - y_perm).abs().max() / y.abs().max()), moved


CASES = {
    "mlp1": (lambda: MLP(in_features=12, hidden=(16,), num_classes=5), (6, 12)),
    "mlp3": (lambda: MLP(in_features=12, hidden=(16, 9, 7), num_classes=5, activation="tanh"),
             (6, 3, 4)),
    "mlp_linear_nobias": (lambda: MLP(in_features=12, hidden=(16,), num_classes=5, bias=False,
                                      activation=None), (6, 12)),
    "conv8": (lambda: Conv8(num_classes=7, width=0.125), (3, 3, 32, 32)),
    "conv8_gray_28": (lambda: Conv8(num_classes=7, width=0.125, in_channels=1, input_size=28,
                                    init="kaiming"), (3, 1, 28, 28)),
    "conv8_odd_27x20": (lambda: Conv8(num_classes=3, width=0.125, in_channels=2,
                                      input_size=(27, 20)), (2, 2, 27, 20)),
    "resnet18_gray": (lambda: ResNet18(num_classes=6, width=8, in_channels=1), (4, 1, 28, 28)),
    "resnet18_cifar": (lambda: ResNet18(num_classes=6, width=8), (4, 3, 16, 16)),
    "resnet18_imagenet": (lambda: ResNet18(num_classes=6, width=8, stem="imagenet"),
                          (4, 3, 32, 32)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("train", [True, False])
def test_builder_spec_is_a_symmetry(case, train):
    make, shape = CASES[case]
    model = make()
    spec = model.permutation_spec()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    err, moved = invariance_error(model, spec, x, train=train)
    assert moved > 1e-3
    assert err < 1e-10


def test_wrong_spec_breaks_invariance():
    model = MLP(in_features=12, hidden=(16, 9), num_classes=5)
    x = torch.randn(6, 12, generator=torch.Generator().manual_seed(2))
    good = model.permutation_spec()
    # c1 forgotten on the second layer's input axis: hidden units move but their readers do not
    a2p = dict(good.axes_to_perm)
    a2p["layers.1.weight"] = ("c2", None)
    err, _ = invariance_error(model, permutation_spec_from_axes_to_perm(a2p), x, train=False)
    assert err > 1e-2


def test_unpermuted_running_stats_break_eval_mode_only():
    # BatchNorm buffers matter: with a spec without them (the paper's), the running stats stay
    # put while the channels move, so eval mode stops matching while train mode still does.
    model = ResNet18(num_classes=6, width=8)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    spec = model.permutation_spec(running_stats=False)
    err_train, moved = invariance_error(model, spec, x, train=True)
    err_eval, _ = invariance_error(model, spec, x, train=False)
    assert moved > 1e-3
    assert err_train < 1e-10
    assert err_eval > 1e-3


def test_sequential_mlp_with_layer_names():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 8), nn.GELU(),
                          nn.Linear(8, 3))
    spec = mlp_spec(2, layer_names=["1", "3", "5"])
    assert set(spec.axes_to_perm) == set(model.state_dict())
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(4))
    err, moved = invariance_error(model, spec, x, train=False)
    assert moved > 1e-3 and err < 1e-10


# ------------------------------------------------------------------------ sizes and names
def test_parameter_counts_match_algorithm_spec():
    assert n_params(Conv8(num_classes=10)) == 4_885_066
    assert n_params(ResNet18(num_classes=1000, width=64, stem="imagenet")) == 11_689_512
    assert n_params(MLP(784, (4096,), 10, bias=False, activation=None)) == 3_252_224


@pytest.mark.parametrize("make", [
    lambda: MLP(), lambda: MLP(hidden=(32, 16), bias=False), lambda: Conv8(), lambda: ResNet18(),
    lambda: ResNet18(num_classes=100, width=16, stem="imagenet"),
])
def test_spec_covers_state_dict_exactly(make):
    model = make()
    spec = model.permutation_spec()
    sd = model.state_dict()
    assert list(spec.axes_to_perm) == list(sd) or set(spec.axes_to_perm) == set(sd)
    sizes = validate_spec(spec, sd)
    buffers = {n for n, _ in model.named_buffers()}
    assert spec.buffers == buffers
    assert all(n > 0 for n in sizes.values())
    validate_spec(spec, {k: v for k, v in sd.items() if k not in buffers})  # buffers optional


def test_resnet_group_sizes_and_shapes():
    model = ResNet18(num_classes=10, width=8)
    sizes = model.permutation_spec().group_sizes(model.state_dict())
    assert sizes == {**{f"c{w}": w for w in (8, 16, 32, 64)},
                     **{f"c{w}-{i}": w for w in (8, 16, 32, 64) for i in (1, 2)}}
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    small = ResNet18(num_classes=5, width=4, stem="imagenet")
    assert small(torch.zeros(2, 3, 64, 64)).shape == (2, 5)
    assert Conv8(num_classes=4, width=0.0625)(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    assert MLP(in_features=6, hidden=(), num_classes=2)(torch.zeros(3, 2, 3)).shape == (3, 2)


def test_constructor_errors():
    with pytest.raises(ValueError, match="activation must be one of"):
        MLP(activation="swish!")
    with pytest.raises(ValueError, match="stem must be 'cifar' or 'imagenet'"):
        ResNet18(stem="tiny")
    with pytest.raises(ValueError, match="at most 32x32 .* got 3x33x32"):
        Conv8(input_size=(33, 32))
    with pytest.raises(ValueError, match="init must be"):
        Conv8(init="xavier")
    with pytest.raises(ValueError, match="in_channels must be >= 1"):
        ResNet18(in_channels=0)


def test_conv8_pads_small_inputs_to_32_and_ends_at_1x1():
    model = Conv8(num_classes=4, width=0.0625, in_channels=1, input_size=28)
    x = torch.randn(2, 1, 28, 28)
    padded = model.pad(x)
    assert padded.shape == (2, 1, 32, 32) and torch.equal(padded[:, :, 2:30, 2:30], x)
    assert torch.count_nonzero(padded) == torch.count_nonzero(x)  # only zeros added
    assert model(x).shape == (2, 4)


def test_kaiming_init_keeps_the_signal_through_relu_layers():
    # He scale: four layers in, activations stay O(1); PyTorch's default shrinks them ~10x+.
    x = torch.randn(64, 1, 28, 28)
    scale = {}
    for init in ("torch", "kaiming"):
        torch.manual_seed(0)
        model = Conv8(width=0.25, in_channels=1, input_size=28, init=init)
        h = model.pad(x)
        for name in ("conv1", "conv2"):
            h = model.relu(getattr(model, name)(h))
        h = model.pool2(h)
        for name in ("conv3", "conv4"):
            h = model.relu(getattr(model, name)(h))
        scale[init] = float(h.detach().pow(2).mean().sqrt())
    assert scale["kaiming"] > 10 * scale["torch"]


def test_conv8_width_keeps_spec_valid():
    model = Conv8(width=0.25)
    sizes = validate_spec(model.permutation_spec(), model.state_dict())
    assert sizes["c64-1"] == 16 and sizes["c512-2"] == 128 and sizes["c256-4"] == 64
    assert np.prod(model.head.weight.shape[2:]) == 1
