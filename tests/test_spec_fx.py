"""spec_from_model (torch.fx): agrees with the hand-written builders, is a symmetry of the
function, and refuses what it does not understand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trajtransfer.kit.models import MLP, Conv8, ResNet18
from trajtransfer.core.permute import apply_permutation, random_permutation
from trajtransfer.core.spec_fx import spec_from_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invariance_error(model, spec, x, *, train, seed=0):
    """max |f(x; π·θ) − f(x; θ)| / max |f(x; θ)| in float64 after a few train-mode passes (so
    BatchNorm running statistics are not trivial), plus how far the permuted tensors moved."""
    torch.manual_seed(seed)
    model = copy.deepcopy(model).double()
    x = x.double()
    model.train()
    with torch.no_grad():
        for k in range(3):
            model(x * (1.5 + k) + 0.3 * k)
    sd = model.state_dict()
    new = apply_permutation(spec, random_permutation(spec, sd, seed), sd)
    permuted = copy.deepcopy(model)
    permuted.load_state_dict(new)
    moved = max(float((new[k].double() - sd[k].double()).abs().max()) for k in sd if sd[k].numel())
    model.train(train)
    permuted.train(train)
    with torch.no_grad():
        y, y_perm = model(x), permuted(x)
    return float((y - y_perm).abs().max() / y.abs().max()), moved


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


REFERENCE = {
    "mlp1": (lambda: MLP(in_features=12, hidden=(16,), num_classes=5), (6, 12)),
    "mlp3": (lambda: MLP(in_features=12, hidden=(16, 9, 7), num_classes=5, bias=False), (6, 3, 4)),
    "conv8": (lambda: Conv8(num_classes=7, width=0.125), (3, 3, 32, 32)),
    "conv8_gray_28": (lambda: Conv8(num_classes=7, width=0.125, in_channels=1, input_size=28),
                      (3, 1, 28, 28)),
    "resnet18_cifar": (lambda: ResNet18(num_classes=6, width=8), (4, 3, 16, 16)),
    "resnet18_imagenet": (lambda: ResNet18(num_classes=6, width=8, stem="imagenet"),
                          (4, 3, 32, 32)),
}


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_same_partition_as_builder_and_a_symmetry(case):
    make, shape = REFERENCE[case]
    model = make()
    x = randn(*shape, seed=1)
    spec = spec_from_model(model, x)
    ref = model.permutation_spec()
    assert spec.partition() == ref.partition()
    assert set(spec.axes_to_perm) == set(ref.axes_to_perm)
    assert spec.buffers == ref.buffers
    for train in (True, False):
        err, moved = invariance_error(model, spec, x, train=train)
        assert moved > 1e-3 and err < 1e-10


def test_tracing_leaves_model_state_alone():
    model = ResNet18(num_classes=3, width=4)
    model.train()
    model.layer2.eval()
    before = copy.deepcopy(model.state_dict())
    spec_from_model(model, randn(2, 3, 8, 8))
    assert model.training and not model.layer2.training and model.layer1.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


# --------------------------------------------------------------- other supported patterns
class SharedSquare(nn.Module):
    """The same hidden Linear applied twice (weight sharing): both its axes carry one group."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.hid = nn.Linear(8, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        h = torch.relu(self.hid(h))
        h = self.hid(h).sigmoid()
        return self.out(h)


class TwoBranch(nn.Module):
    """Two parallel Linears summed: the addition unifies their output groups."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 7)
        self.b = nn.Linear(5, 7)
        self.ln = nn.LayerNorm(7)
        self.out = nn.Linear(7, 3)

    def forward(self, x):
        return self.out(self.ln(nn.functional.gelu(self.a(x) + 2.0 * self.b(x))))


class GlobalMeanNet(nn.Module):
    """Conv + depthwise conv + BatchNorm, global pooling by mean and view(x.size(0), -1)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.bn = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 5, 1)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        h = nn.functional.relu(self.bn(self.dw(self.c1(x))))
        h = nn.functional.max_pool2d(h, 2)
        h = self.c2(h).mean((2, 3), keepdim=True)
        return self.fc(h.view(h.size(0), -1))


def test_weight_sharing():
    model = SharedSquare()
    spec = spec_from_model(model, randn(4, 5))
    assert spec.axes_to_perm["hid.weight"][0] == spec.axes_to_perm["hid.weight"][1] is not None
    assert spec.axes_to_perm["inp.weight"][0] == spec.axes_to_perm["hid.weight"][0]
    assert len(spec.groups) == 1
    err, moved = invariance_error(model, spec, randn(4, 5, seed=2), train=False)
    assert moved > 1e-3 and err < 1e-10


def test_addition_unifies_branches_and_layernorm_follows():
    model = TwoBranch()
    spec = spec_from_model(model, randn(4, 5))
    assert len(spec.groups) == 1
    g = spec.groups[0]
    assert {("a.weight", 0), ("b.weight", 0), ("ln.weight", 0), ("out.weight", 1)} <= set(
        spec.perm_to_axes[g])
    err, moved = invariance_error(model, spec, randn(4, 5, seed=3), train=False)
    assert moved > 1e-3 and err < 1e-10


def test_depthwise_mean_pool_and_view():
    model = GlobalMeanNet()
    x = randn(3, 3, 8, 8)
    spec = spec_from_model(model, x)
    assert spec.axes_to_perm["dw.weight"] == (spec.axes_to_perm["c1.weight"][0], None, None, None)
    assert spec.axes_to_perm["bn.running_var"] == (spec.axes_to_perm["c1.weight"][0],)
    assert spec.axes_to_perm["bn.num_batches_tracked"] == ()
    assert spec.axes_to_perm["fc.weight"] == (None, spec.axes_to_perm["c2.weight"][0])
    assert len(spec.groups) == 2
    for train in (True, False):
        err, moved = invariance_error(model, spec, x, train=train)
        assert moved > 1e-3 and err < 1e-10


def test_residual_with_input_pins_group():
    # x + Linear(x): the Linear's output is added to the (unpermuted) input, so it is pinned.
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 6)
            self.b = nn.Linear(6, 4)

        def forward(self, x):
            return x + self.b(torch.relu(self.a(x)))

    spec = spec_from_model(Res(), randn(3, 4))
    assert spec.axes_to_perm["b.weight"] == (None, spec.axes_to_perm["a.weight"][0])
    assert spec.axes_to_perm["b.bias"] == (None,)


# -------------------------------------------------------------------------------- refusals
class CatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(4, 3)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        return self.out(torch.cat([self.a(x), self.b(x)], dim=1))


class FlattenSpace(nn.Module):
    """Flatten of a 4x4 map: channels and space are mixed before the Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16, 2)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        h = self.proj(x)
        return self.out(self.attn(h, h, h)[0])


class Slice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        return self.out(self.a(x)[:, :3])


class RawParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.scale = nn.Parameter(torch.ones(6))

    def forward(self, x):
        return self.a(x) * self.scale


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(4, 4, 3, groups=2)

    def forward(self, x):
        return self.b(self.a(x)).mean((1, 2, 3))


class Transposed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.out = nn.Linear(2, 2)

    def forward(self, x):
        return self.out(self.a(x).t())


@pytest.mark.parametrize("model, x, match", [
    (CatNet(), randn(2, 4), r"node 'cat' \(call_function cat\).*not supported"),
    (FlattenSpace(), randn(2, 3, 4, 4), r"node 'flatten'.*mixing the permuted channel axis 1"),
    (Attention(), randn(2, 5, 4),
     r"node 'attn' \(call_module attn\): module type MultiheadAttention"),
    (Slice(), randn(2, 4), r"node 'getitem'.*not supported"),
    (RawParam(), randn(2, 4), r"uses parameter/buffer 'scale' directly"),
    (Grouped(), randn(2, 3, 5, 5), r"node 'b'.*grouped convolution \(groups=2\)"),
    (Transposed(), randn(2, 4), r"tensor method 't' is not supported"),
])
def test_unsupported_ops_raise_naming_the_node(model, x, match):
    with pytest.raises(ValueError, match=match):
        spec_from_model(model, x)


def test_flatten_of_unpermuted_input_is_fine_but_untraceable_models_raise():
    # flattening the image (MLP on 28x28) mixes only unpermuted axes
    spec = spec_from_model(MLP(in_features=16, hidden=(5,), num_classes=2), randn(2, 1, 4, 4))
    assert spec.axes_to_perm["layers.0.weight"] == ("layers.0", None)

    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else x

    with pytest.raises(ValueError, match="could not trace DataDependent"):
        spec_from_model(DataDependent(), randn(2, 2))
    msg = r"does not run through MLP \(input shapes \[\(2, 3\)\]\) at node 'layers_0'"
    with pytest.raises(ValueError, match=msg):
        spec_from_model(MLP(in_features=4, hidden=(3,), num_classes=2), randn(2, 3))


# ----------------------------------------------------------- random architectures (hypothesis)
ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "identity": nn.Identity}


class RandomNet(nn.Module):
    """A random residual MLP or conv net: blocks of (layer, [BN], activation, [pool]) where a
    block whose width equals its input's adds a skip connection when asked."""

    def __init__(self, conv, widths, acts, skips, bns, pools, n_in=3, n_out=2):
        super().__init__()
        self.conv = conv
        self.blocks = nn.ModuleList()
        self.plan = []
        c = n_in
        for i, (w, act, skip, bn, pool) in enumerate(zip(widths, acts, skips, bns, pools)):
            layer = nn.Conv2d(c, w, 3, padding=1) if conv else nn.Linear(c, w)
            norm = (nn.BatchNorm2d(w) if conv else nn.BatchNorm1d(w)) if bn else nn.Identity()
            self.blocks.append(nn.Sequential(layer, norm, ACTS[act]()))
            self.plan.append((skip and i > 0 and c == w, pool and conv))
            c = w
        self.head = nn.Linear(c, n_out)

    def forward(self, x):
        for block, (skip, pool) in zip(self.blocks, self.plan):
            x = x + block(x) if skip else block(x)
            if pool:
                x = nn.functional.avg_pool2d(x, 2)
        if self.conv:
            x = torch.flatten(nn.functional.adaptive_max_pool2d(x, 1), 1)
        return self.head(x)


def test_random_architectures_are_symmetries():
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    @hypothesis.settings(max_examples=12)
    @hypothesis.given(st.data())
    def check(data):
        conv = data.draw(st.booleans())
        n = data.draw(st.integers(1, 4))
        lists = lambda s: data.draw(st.lists(s, min_size=n, max_size=n))  # noqa: E731
        widths = lists(st.integers(2, 4))
        model = RandomNet(conv, widths, lists(st.sampled_from(sorted(ACTS))), lists(st.booleans()),
                          lists(st.booleans()), lists(st.booleans()))
        # 16 x 16: room for up to 4 (n) pools of 2 (8 x 8 ran out of pixels after 3)
        x = randn(*((4, 3, 16, 16) if conv else (4, 3)), seed=data.draw(st.integers(0, 99)))
        spec = spec_from_model(model, x)
        # every residual connection merges two hidden groups; nothing else does
        assert len(spec.groups) == n - sum(skip for skip, _ in model.plan)
        for train in (True, False):
            err, _ = invariance_error(model, spec, x, train=train)  # (tiny groups may not move)
            assert err < 1e-10

    check()
