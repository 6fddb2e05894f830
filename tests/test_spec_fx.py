"""spec_from_model (torch.fx): agrees with the hand-written builders, is a symmetry of the
function, and refuses what it does not understand."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trajtransfer.kit.models import MLP, Conv8, ResNet18
from trajtransfer.core.match import match_weights
from trajtransfer.core.permute import apply_permutation, random_permutation
from trajtransfer.core.spec_fx import spec_from_model

from test_rebasin_specs import ChannelsLastLayerNorm  # Flax's LayerNorm(): permute, LN(C), back


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


def test_square_layer_applied_to_its_own_output():
    # hid's input and output are one group: a (g, g) weight, which matching cannot solve.
    model = SharedSquare()
    with pytest.raises(ValueError, match=r"node 'hid' \(call_module hid\): Linear 'hid' maps a "
                                         r"group onto itself: its tensor 'hid.weight'"):
        spec_from_model(model, randn(4, 5))
    spec = spec_from_model(model, randn(4, 5), on_self_map="unpermute")
    assert spec.groups == []  # the only group was the shared one
    assert spec.axes_to_perm["hid.weight"] == (None, None)
    # keep: (g, g), a symmetry to permute with (the matchers refuse it)
    spec = spec_from_model(model, randn(4, 5), on_self_map="keep")
    assert spec.axes_to_perm["hid.weight"][0] == spec.axes_to_perm["hid.weight"][1] is not None
    assert spec.axes_to_perm["inp.weight"][0] == spec.axes_to_perm["hid.weight"][0]
    assert len(spec.groups) == 1
    err, moved = invariance_error(model, spec, randn(4, 5, seed=2), train=False)
    assert moved > 1e-3 and err < 1e-10
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="'hid.weight' carries group"):
        match_weights(spec, sd, sd)
    with pytest.raises(ValueError, match="on_self_map must be"):
        spec_from_model(model, randn(4, 5), on_self_map="ignore")


def test_weight_sharing_across_parallel_branches():
    # One Linear applied to two different inputs ties their groups without a self-map.
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 6)
            self.b = nn.Linear(3, 6)
            self.shared = nn.Linear(6, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x):
            return self.out(torch.tanh(self.shared(torch.relu(self.a(x))))
                            * self.shared(torch.sigmoid(self.b(x))))

    model = Shared()
    spec = spec_from_model(model, randn(4, 3))
    assert spec.axes_to_perm["a.weight"][0] == spec.axes_to_perm["b.weight"][0] == \
        spec.axes_to_perm["shared.weight"][1]
    assert len(spec.groups) == 2
    err, moved = invariance_error(model, spec, randn(4, 3, seed=2), train=False)
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


class OneLayerBranch(nn.Module):
    """stem -> x + relu(b(x)) -> [hidden layer mid] -> head: b maps the stream onto itself."""

    def __init__(self, two_layer=False):
        super().__init__()
        self.stem = nn.Linear(4, 6)
        self.b = nn.Linear(6, 5 if two_layer else 6)
        self.b2 = nn.Linear(5, 6) if two_layer else None
        self.mid = nn.Linear(6, 7)
        self.head = nn.Linear(7, 3)

    def forward(self, x):
        x = self.stem(x)
        branch = torch.relu(self.b(x))
        x = x + (self.b2(branch) if self.b2 is not None else branch)
        return self.head(torch.tanh(self.mid(x)))


def planted_recovery(spec, model, seed=5):
    """match_weights(a, π(a)) finds π⁻¹ exactly: the permuted dict maps back onto a."""
    a = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    b = apply_permutation(spec, random_permutation(spec, a, seed), a)
    res = match_weights(spec, a, b)
    back = apply_permutation(spec, res.perms, b)
    return max(float(abs(back[k] - a[k]).max()) for k in a)


def test_one_layer_residual_branch_refused_naming_the_module():
    model = OneLayerBranch()
    with pytest.raises(ValueError, match=r"node 'b' \(call_module b\): Linear 'b' maps a group "
                                         r"onto itself: its tensor 'b.weight' would be permuted "
                                         r"by the same group on two axes.*residual branch of a "
                                         r"single layer.*Put a hidden layer in the branch"):
        spec_from_model(model, randn(3, 4))
    # unpermute: the stream is left alone, the hidden group of mid is still matched
    spec = spec_from_model(model, randn(3, 4), on_self_map="unpermute")
    assert spec.groups == ["mid"]
    assert spec.axes_to_perm["b.weight"] == (None, None)
    assert spec.axes_to_perm["stem.weight"] == (None, None)
    err, moved = invariance_error(model, spec, randn(3, 4, seed=2), train=False)
    assert moved > 1e-3 and err < 1e-10
    assert planted_recovery(spec, model) == 0.0


def test_two_layer_residual_branch_is_a_matchable_symmetry():
    model = OneLayerBranch(two_layer=True)
    spec = spec_from_model(model, randn(3, 4))
    stream, hidden = spec.axes_to_perm["stem.weight"][0], spec.axes_to_perm["b.weight"][0]
    assert spec.axes_to_perm["b.weight"] == (hidden, stream)
    assert spec.axes_to_perm["b2.weight"] == (stream, hidden)
    assert spec.axes_to_perm["mid.weight"] == ("mid", stream)
    assert len({stream, hidden, "mid"}) == 3 == len(spec.groups)
    err, moved = invariance_error(model, spec, randn(3, 4, seed=2), train=False)
    assert moved > 1e-3 and err < 1e-10
    assert planted_recovery(spec, model) == 0.0


NORMS = {
    "layernorm_chw": lambda c, hw: nn.LayerNorm([c, hw, hw]),
    "groupnorm_1": lambda c, hw: nn.GroupNorm(1, c),
    "groupnorm_c": lambda c, hw: nn.GroupNorm(c, c),
    "channels_last_layernorm": lambda c, hw: ChannelsLastLayerNorm(c),
}


class ConvNormNet(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.n1 = NORMS[norm](6, 8)
        self.c2 = nn.Conv2d(6, 5, 3, padding=1, stride=2)
        self.n2 = NORMS[norm](5, 4)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        h = torch.relu(self.n1(self.c1(x)))
        h = torch.relu(self.n2(self.c2(h)))
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("norm", sorted(NORMS))
def test_norms_over_channels_and_space_are_symmetries(norm):
    model = ConvNormNet(norm)
    for p in model.parameters():  # non-trivial affine weights, so a wrong axis would show
        nn.init.normal_(p)
    x = randn(3, 3, 8, 8)
    spec = spec_from_model(model, x)
    g1, g2 = spec.axes_to_perm["c1.weight"][0], spec.axes_to_perm["c2.weight"][0]
    assert g1 and g2 and g1 != g2 and len(spec.groups) == 2
    w1 = "n1.ln.weight" if norm == "channels_last_layernorm" else "n1.weight"
    # LayerNorm([C, H, W]): the weight is (C, H, W), permuted along C only
    assert spec.axes_to_perm[w1] == ((g1, None, None) if norm == "layernorm_chw" else (g1,))
    assert spec.axes_to_perm[w1.replace("weight", "bias")] == spec.axes_to_perm[w1]
    for train in (True, False):
        err, moved = invariance_error(model, spec, x, train=train)
        assert moved > 1e-3 and err < 1e-10


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
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True, add_bias_kv=True)
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
        return self.a(x) * torch.relu(self.scale)


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(4, 4, 3, groups=2)

    def forward(self, x):
        return self.b(self.a(x)).mean((1, 2, 3))


class GroupNormTwoGroups(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.gn = nn.GroupNorm(2, 4)

    def forward(self, x):
        return self.gn(self.a(x)).mean((1, 2, 3))


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
     r"node 'attn' \(call_module attn\): MultiheadAttention 'attn' uses add_bias_kv"),
    (Slice(), randn(2, 4), r"node 'getitem'.*not supported"),
    (RawParam(), randn(2, 4), r"uses parameter/buffer 'scale' directly"),
    (Grouped(), randn(2, 3, 5, 5), r"node 'b'.*grouped convolution \(groups=2\)"),
    (Transposed(), randn(2, 4), r"tensor method 't' is not supported"),
    (GroupNormTwoGroups(), randn(2, 3, 5, 5),
     r"node 'gn'.*GroupNorm with 2 groups of 2 channels ties contiguous channels"),
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
    """A random residual MLP or conv net: blocks of (layer, [BN], activation, [pool]); a block
    whose width equals its input's, when asked, becomes a residual branch with a second layer
    back to the stream (a one-layer branch maps the stream onto itself, which is refused)."""

    def __init__(self, conv, widths, acts, skips, bns, pools, n_in=3, n_out=2):
        super().__init__()
        self.conv = conv
        self.blocks = nn.ModuleList()
        self.plan = []
        c = n_in
        for i, (w, act, skip, bn, pool) in enumerate(zip(widths, acts, skips, bns, pools)):
            layer = nn.Conv2d(c, w, 3, padding=1) if conv else nn.Linear(c, w)
            norm = (nn.BatchNorm2d(w) if conv else nn.BatchNorm1d(w)) if bn else nn.Identity()
            skip = skip and i > 0 and c == w
            back = (nn.Conv2d(w, c, 1) if conv else nn.Linear(w, c)) if skip else nn.Identity()
            self.blocks.append(nn.Sequential(layer, norm, ACTS[act](), back))
            self.plan.append((skip, pool and conv))
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
        # every block adds one group (a residual branch: its inner one; its output joins
        # the stream)
        assert len(spec.groups) == n
        for train in (True, False):
            err, _ = invariance_error(model, spec, x, train=train)  # (tiny groups may not move)
            assert err < 1e-10

    check()
