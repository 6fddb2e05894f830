"""Git Re-Basin's published permutation specs (``weight_matching.py``: ``mlp_permutation_spec``,
``vgg16_permutation_spec``, ``resnet20_permutation_spec``), written out in PyTorch layout, on the
same networks built as torch modules (small widths).

Flax -> PyTorch: ``Dense_i/kernel`` (in, out) becomes ``Dense_i.weight`` (out, in); a conv kernel
(H, W, in, out) becomes (out, in, kh, kw); ``scale`` becomes ``weight``; ``a/b`` becomes ``a.b``
and a Flax list entry ``blocks_0`` (``layers_0``) the ModuleList index ``blocks.0`` (``0``).

The published networks normalise with Flax's ``nn.LayerNorm()`` on NHWC activations: statistics
over the channels of each pixel, a (C,) scale. Each model here takes the norm as a parameter:
that channels-last LayerNorm (permute, ``LayerNorm(C)``, permute back; its tensors are then
``<norm>.ln.weight``), ``GroupNorm(1, C)`` (statistics over C, H, W; (C,) weight, the published
tensor layout exactly) and ``LayerNorm([C, H, W])`` (the same statistics; a (C, H, W) weight, so
its axes are ``(P, None, None)``). The partition of (tensor, axis) pairs is the same for all.

Checked for each: (a) the dict builds and validates against the module's state dict; (b) it is a
symmetry, f(x; π·θ) = f(x; θ); (c) ``match_weights`` runs on two independent initialisations and
recovers a planted permutation exactly; (d) ``spec_from_model`` derives the same partition.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from trajtransfer.core.match import match_weights
from trajtransfer.core.permute import (
    apply_permutation,
    invert_permutation,
    permute_model,
    random_permutation,
)
from trajtransfer.core.spec import permutation_spec_from_axes_to_perm, validate_spec
from trajtransfer.core.spec_fx import spec_from_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------- norms
class ChannelsLastLayerNorm(nn.Module):
    """Flax's ``nn.LayerNorm()`` on NHWC: statistics over the channels of each pixel."""

    def __init__(self, c: int):
        super().__init__()
        self.ln = nn.LayerNorm(c)

    def forward(self, x):  # (both spellings of permute, for spec_from_model)
        return torch.permute(self.ln(x.permute(0, 2, 3, 1)), (0, 3, 1, 2))


NORMS = ("channels_last", "groupnorm", "layernorm_chw")


def make_norm(kind: str, c: int, hw: int) -> nn.Module:
    if kind == "channels_last":
        return ChannelsLastLayerNorm(c)
    if kind == "groupnorm":
        return nn.GroupNorm(1, c)
    return nn.LayerNorm([c, hw, hw])


def norm_axes(kind: str, name: str, p: str) -> dict:
    """Published ``norm``: ``{name/scale: (p,), name/bias: (p,)}``, for each PyTorch norm."""
    if kind == "channels_last":
        return {f"{name}.ln.weight": (p,), f"{name}.ln.bias": (p,)}
    extra = (None, None) if kind == "layernorm_chw" else ()
    return {f"{name}.weight": (p, *extra), f"{name}.bias": (p, *extra)}


def conv_axes(name: str, p_in, p_out, bias: bool = False) -> dict:
    out = {f"{name}.weight": (p_out, p_in, None, None)}  # (out, in, kh, kw)
    if bias:
        out[f"{name}.bias"] = (p_out,)
    return out


def dense_axes(name: str, p_in, p_out) -> dict:
    return {f"{name}.weight": (p_out, p_in), f"{name}.bias": (p_out,)}  # (out, in)


# ------------------------------------------------------------------------------------- MLP
def mlp_axes_to_perm(num_hidden_layers: int) -> dict:
    """``mlp_permutation_spec``: groups ``P_0 .. P_{L-1}``."""
    L = num_hidden_layers
    return {
        "Dense_0.weight": ("P_0", None),
        **{f"Dense_{i}.weight": (f"P_{i}", f"P_{i - 1}") for i in range(1, L)},
        **{f"Dense_{i}.bias": (f"P_{i}",) for i in range(L)},
        f"Dense_{L}.weight": (None, f"P_{L - 1}"),
        f"Dense_{L}.bias": (None,),
    }


class MLP(nn.Module):
    """Git Re-Basin's MLP: flatten, (Dense, relu) x L, Dense, log_softmax."""

    def __init__(self, widths=(12, 10, 8), in_features=16, num_classes=5):
        super().__init__()
        self.n = len(widths)
        sizes = (in_features, *widths, num_classes)
        for i in range(self.n + 1):
            setattr(self, f"Dense_{i}", nn.Linear(sizes[i], sizes[i + 1]))

    def forward(self, x):
        x = torch.flatten(x, 1)
        for i in range(self.n):
            x = torch.relu(getattr(self, f"Dense_{i}")(x))
        return torch.log_softmax(getattr(self, f"Dense_{self.n}")(x), dim=-1)


# ---------------------------------------------------------------------------------- VGG-16
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_axes_to_perm(norm: str) -> dict:
    """``vgg16_permutation_spec``: ``P_Conv_0 .. P_Conv_12``, ``P_Dense_0``, ``P_Dense_1``."""
    axes = {"Conv_0.weight": ("P_Conv_0", None, None, None)}
    axes.update({f"Conv_{i}.weight": (f"P_Conv_{i}", f"P_Conv_{i - 1}", None, None)
                 for i in range(1, 13)})
    axes.update({f"Conv_{i}.bias": (f"P_Conv_{i}",) for i in range(13)})
    for i in range(13):
        axes.update(norm_axes(norm, f"LayerNorm_{i}", f"P_Conv_{i}"))
    axes.update({
        "Dense_0.weight": ("P_Dense_0", "P_Conv_12"),
        "Dense_0.bias": ("P_Dense_0",),
        "Dense_1.weight": ("P_Dense_1", "P_Dense_0"),
        "Dense_1.bias": ("P_Dense_1",),
        "Dense_2.weight": (None, "P_Dense_1"),
        "Dense_2.bias": (None,),
    })
    return axes


class VGG16(nn.Module):
    """(Conv 3x3, norm, relu) per entry of the VGG-16 table, max-pool at "M"; on a 32x32 image
    the last pool leaves 1x1, flattened into Dense_0 (4096) -> Dense_1 (4096) -> Dense_2."""

    def __init__(self, norm: str, width_div: int = 16, dense: int = 12, num_classes: int = 5):
        super().__init__()
        self.plan = []
        c, hw, i = 3, 32, 0
        for v in VGG16_CFG:
            if v == "M":
                self.plan.append("M")
                hw //= 2
                continue
            w = v // width_div
            setattr(self, f"Conv_{i}", nn.Conv2d(c, w, 3, padding=1))
            setattr(self, f"LayerNorm_{i}", make_norm(norm, w, hw))
            self.plan.append(i)
            c, i = w, i + 1
        self.Dense_0 = nn.Linear(c, dense)
        self.Dense_1 = nn.Linear(dense, dense)
        self.Dense_2 = nn.Linear(dense, num_classes)

    def forward(self, x):
        for step in self.plan:
            if step == "M":
                x = nn.functional.max_pool2d(x, 2)
            else:
                x = torch.relu(getattr(self, f"LayerNorm_{step}")(getattr(self, f"Conv_{step}")(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.Dense_0(x))
        x = torch.relu(self.Dense_1(x))
        return torch.log_softmax(self.Dense_2(x), dim=-1)


# ------------------------------------------------------------------------------- ResNet-20
def resnet20_axes_to_perm(norm: str, blocks_per_group=(3, 3, 3)) -> dict:
    """``resnet20_permutation_spec``: one group per stage's residual stream (``P_bg0..2``) and
    one inner group per block (``P_<block>_inner``)."""

    def easyblock(name, p):
        inner = f"P_{name}_inner"
        return {**conv_axes(f"{name}.conv1", p, inner), **norm_axes(norm, f"{name}.norm1", inner),
                **conv_axes(f"{name}.conv2", inner, p), **norm_axes(norm, f"{name}.norm2", p)}

    def shortcutblock(name, p_in, p_out):
        return {**conv_axes(f"{name}.conv1", p_in, f"P_{name}_inner"),
                **norm_axes(norm, f"{name}.norm1", f"P_{name}_inner"),
                **conv_axes(f"{name}.conv2", f"P_{name}_inner", p_out),
                **norm_axes(norm, f"{name}.norm2", p_out),
                **conv_axes(f"{name}.shortcut.0", p_in, p_out),
                **norm_axes(norm, f"{name}.shortcut.1", p_out)}

    axes = {**conv_axes("conv1", None, "P_bg0"), **norm_axes(norm, "norm1", "P_bg0")}
    for g, nb in enumerate(blocks_per_group):
        for b in range(nb):
            name = f"blockgroups.{g}.blocks.{b}"
            if g > 0 and b == 0:
                axes.update(shortcutblock(name, f"P_bg{g - 1}", f"P_bg{g}"))
            else:
                axes.update(easyblock(name, f"P_bg{g}"))
    axes.update(dense_axes("dense", f"P_bg{len(blocks_per_group) - 1}", None))
    return axes


class Block(nn.Module):
    def __init__(self, norm, c_in, c, stride, hw):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, c, hw)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, c, hw)
        # As published: a 3x3 stride-2 conv + norm shortcut where the stage changes width.
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c, 3, stride=stride, padding=1,
                                                 bias=False), make_norm(norm, c, hw))
                         if stride != 1 else nn.Identity())

    def forward(self, x):
        y = torch.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


class BlockGroup(nn.Module):
    def __init__(self, norm, c_in, c, num_blocks, stride, hw):
        super().__init__()
        self.blocks = nn.ModuleList(
            [Block(norm, c_in, c, stride, hw)]
            + [Block(norm, c, c, 1, hw) for _ in range(num_blocks - 1)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class ResNet20(nn.Module):
    """Stem conv + norm, three block groups of widths 16w, 32w, 64w (strides 1, 2, 2), global
    mean, dense, log_softmax."""

    def __init__(self, norm, width_multiplier=1, blocks_per_group=(3, 3, 3), hw=8,
                 num_classes=5):
        super().__init__()
        wm = width_multiplier
        self.conv1 = nn.Conv2d(3, 16 * wm, 3, padding=1, bias=False)
        self.norm1 = make_norm(norm, 16 * wm, hw)
        groups, c_in = [], 16 * wm
        for c, nb, s in zip((16 * wm, 32 * wm, 64 * wm), blocks_per_group, (1, 2, 2)):
            hw //= s
            groups.append(BlockGroup(norm, c_in, c, nb, s, hw))
            c_in = c
        self.blockgroups = nn.ModuleList(groups)
        self.dense = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = torch.relu(self.norm1(self.conv1(x)))
        for group in self.blockgroups:
            x = group(x)
        return torch.log_softmax(self.dense(x.mean((2, 3))), dim=-1)


# ----------------------------------------------------------------------------------- cases
def mlp_case(norm):
    return MLP(), mlp_axes_to_perm(3), (4, 1, 4, 4), {"P_0": 12, "P_1": 10, "P_2": 8}


def vgg_case(norm):
    widths = [v // 16 for v in VGG16_CFG if v != "M"]
    sizes = {f"P_Conv_{i}": w for i, w in enumerate(widths)}
    sizes.update(P_Dense_0=12, P_Dense_1=12)
    return VGG16(norm), vgg16_axes_to_perm(norm), (3, 3, 32, 32), sizes


def resnet_case(norm):
    sizes = {"P_bg0": 16, "P_bg1": 32, "P_bg2": 64}
    sizes.update({f"P_blockgroups.{g}.blocks.{b}_inner": 16 * 2**g
                  for g in range(3) for b in range(3)})
    return ResNet20(norm), resnet20_axes_to_perm(norm), (3, 3, 8, 8), sizes


CASES = [("mlp", None)] + [(arch, n) for arch in ("vgg16", "resnet20") for n in NORMS]
MAKE = {"mlp": mlp_case, "vgg16": vgg_case, "resnet20": resnet_case}


def build(arch, norm, seed=0):
    """The model with every parameter drawn at random (non-trivial norm weights too: a norm
    weight left at ones would hide a wrong axis) and its hand-written spec."""
    torch.manual_seed(seed)
    model, a2p, shape, sizes = MAKE[arch](norm)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.double().eval(), a2p, shape, sizes


def ids(case):
    return case[0] if case[1] is None else f"{case[0]}-{case[1]}"


@pytest.mark.parametrize("case", CASES, ids=[ids(c) for c in CASES])
def test_published_spec_builds_validates_and_is_a_symmetry(case):
    model, a2p, shape, sizes = build(*case)
    spec = permutation_spec_from_axes_to_perm(a2p)
    sd = model.state_dict()
    assert set(spec.axes_to_perm) == set(sd)  # every tensor listed, nothing else
    assert validate_spec(spec, sd) == sizes
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    permuted = permute_model(copy.deepcopy(model), random_permutation(spec, sd, 3), spec)
    moved = max(float((permuted.state_dict()[k] - sd[k]).abs().max()) for k in sd)
    with torch.no_grad():
        y, y_perm = model(x), permuted(x)
    assert moved > 0.1
    assert float((y - y_perm).abs().max()) < 1e-10 * max(1.0, float(y.abs().max()))


@pytest.mark.parametrize("case", CASES, ids=[ids(c) for c in CASES])
def test_published_spec_matches_and_recovers_a_planted_permutation(case):
    model, a2p, _, sizes = build(*case)
    spec = permutation_spec_from_axes_to_perm(a2p)
    a = {k: v.numpy() for k, v in model.state_dict().items()}
    # independent initialisations: a valid permutation of every group, no worse than identity
    other = {k: v.numpy() for k, v in build(*case, seed=7)[0].state_dict().items()}
    res = match_weights(spec, a, other)
    assert {g: len(p) for g, p in res.perms.items()} == sizes
    assert all(sorted(p.tolist()) == list(range(len(p))) for p in res.perms.values())
    assert res.objective >= res.history[0] - 1e-6 * abs(res.history[0])
    # planted: b = π(a); the matcher finds π⁻¹, which maps b back onto a exactly
    pi = random_permutation(spec, a, 11)
    b = apply_permutation(spec, pi, a)
    res = match_weights(spec, a, b)
    inv = invert_permutation(pi)
    assert all(np.array_equal(res.perms[g], inv[g]) for g in spec.groups)
    back = apply_permutation(spec, res.perms, b)
    assert all(np.array_equal(back[k], a[k]) for k in a)


@pytest.mark.parametrize("case", CASES, ids=[ids(c) for c in CASES])
def test_spec_from_model_derives_the_published_partition(case):
    model, a2p, shape, _ = build(*case)
    hand = permutation_spec_from_axes_to_perm(a2p)
    derived = spec_from_model(model, torch.zeros(*shape, dtype=torch.float64))
    assert set(derived.axes_to_perm) == set(hand.axes_to_perm)
    # the same groups up to their names: each group as the set of (tensor, axis) it permutes
    assert derived.partition() == hand.partition()
