"""Attention specs: block-structured groups, packed segments, and the Transformer's symmetries.

Oracles: explicit index loops for the semantics, the function invariance f(x; π·θ) = f(x; θ) of
torch's own layers for the specs, and the group laws (inverse, composition) on the tensors.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from torch import nn

from trajtransfer.core.block_axes import Blocks, Concat
from trajtransfer.core.permute import (
    apply_inverse_permutation,
    apply_permutation,
    compose_permutations,
    identity_permutation,
    invert_permutation,
    permute_model,
    random_permutation,
)
from trajtransfer.core.spec import (
    PermutationSpec,
    attention_axes,
    permutation_spec_from_axes_to_perm,
    transformer_spec,
    validate_spec,
    vit_spec,
)
from trajtransfer.kit.models import ViT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_vit(norm_first: bool, seed: int = 0) -> ViT:
    torch.manual_seed(seed)
    return ViT(image_size=8, patch_size=4, width=24, heads=3, depth=2, mlp_ratio=2,
               norm_first=norm_first)


# ------------------------------------------------------------------------------- semantics


def test_block_and_concat_index_semantics_against_loops(rng):
    h, d = 3, 4
    spec = permutation_spec_from_axes_to_perm({
        "x": (Concat((Blocks("h", h, "u"), "p", None)),),
    })
    x = rng.normal(size=3 * h * d)
    sigma = rng.permutation(h)
    tau = np.stack([rng.permutation(d) for _ in range(h)])
    p = rng.permutation(h * d)
    out = apply_permutation(spec, {"h": sigma, "u": tau, "p": p}, {"x": x})["x"]
    want = np.empty_like(x)
    for i, j in itertools.product(range(h), range(d)):  # new (i, j) = old (σ[i], τ[σ[i], j])
        want[i * d + j] = x[sigma[i] * d + tau[sigma[i], j]]
    want[h * d:2 * h * d] = x[h * d:2 * h * d][p]
    want[2 * h * d:] = x[2 * h * d:]
    np.testing.assert_array_equal(out, want)


def test_sizes_and_perm_shapes():
    spec = vit_spec(2, heads=3)
    params = small_vit(True).state_dict()
    sizes = validate_spec(spec, params)
    assert sizes["blocks.0.heads"] == 3 and sizes["blocks.0.qk"] == 8 and sizes["res"] == 24
    assert sizes["blocks.0.mlp"] == 48
    assert spec.perm_shape("blocks.0.v", sizes) == (3, 8)
    assert spec.perm_shape("blocks.0.heads", sizes) == (3,)
    ident = identity_permutation(spec, params)
    assert ident["blocks.0.qk"].shape == (3, 8)


def test_json_round_trip_keeps_structured_entries():
    spec = vit_spec(2, heads=4)
    text = spec.to_json()
    back = PermutationSpec.from_json(text)
    assert back == spec and back.partition() == spec.partition()
    assert back.inner_of == spec.inner_of and back.block_counts == spec.block_counts
    # JSON dicts are accepted directly in axes_to_perm as well.
    raw = json.loads(text)["axes_to_perm"]
    assert permutation_spec_from_axes_to_perm(raw) == spec


def test_plain_specs_unchanged_by_the_format():
    spec = permutation_spec_from_axes_to_perm({"w": ("a", None), "b": ("a",)})
    assert not spec.has_blocks and spec.inner_of == {} and spec.block_counts == {}
    assert spec.axes_to_perm["w"] == ("a", None)


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("axes, match", [
    ({"w": (Blocks("h", 2, "u"),), "v": ("h",)}, "group 'h' is used as a block group .* and as a plain group"),
    ({"w": (Blocks("h", 2, "u"),), "v": (Blocks("u", 2),)}, "group 'u' is used as an inner group"),
    ({"w": (Blocks("h", 2),), "v": (Blocks("h", 3),)}, "block group 'h' has count 2"),
    ({"w": (Blocks("h", 2, "u"),), "v": (Blocks("g", 2, "u"),)}, "inner group 'u' lives in"),
    ({"w": ({"concat": [{"concat": ["a"]}]},)}, "Concat parts may not be Concat"),
    ({"w": (3,)}, r"axes_to_perm\['w'\]\[0\] must be a group name"),
])
def test_malformed_specs_are_refused(axes, match):
    with pytest.raises(ValueError, match=match):
        permutation_spec_from_axes_to_perm(axes)


@pytest.mark.parametrize("make, match", [
    (lambda: Blocks("h", 0), "count must be an integer >= 1"),
    (lambda: Blocks("h", 2, "h"), "must differ"),
    (lambda: Blocks(1, 2), "group must be a group name"),
    (lambda: Concat(()), "at least one part"),
])
def test_malformed_entries_are_refused(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_shapes_that_do_not_divide_are_refused():
    spec = permutation_spec_from_axes_to_perm({"w": (Concat((Blocks("h", 2, "u"), "p")),)})
    with pytest.raises(ValueError, match="not divisible into 2 equal Concat segments"):
        validate_spec(spec, {"w": np.zeros(7)})
    with pytest.raises(ValueError, match="not divisible into 2 blocks of group 'h'"):
        validate_spec(spec, {"w": np.zeros(6)})
    spec2 = permutation_spec_from_axes_to_perm({"w": (Blocks("h", 2, "u"),),
                                                "v": (None, Blocks("h", 2, "u"))})
    with pytest.raises(ValueError, match="group 'u' has size 3"):
        validate_spec(spec2, {"w": np.zeros(6), "v": np.zeros((2, 8))})


def test_inner_permutations_are_checked(rng):
    spec = permutation_spec_from_axes_to_perm({"w": (Blocks("h", 2, "u"),)})
    x = {"w": rng.normal(size=6)}
    with pytest.raises(ValueError, match=r"perms\['u'\] must have shape \(2, 3\)"):
        apply_permutation(spec, {"h": np.arange(2), "u": np.arange(3)}, x)
    with pytest.raises(ValueError, match=r"not a permutation of 0..2 in every row"):
        apply_permutation(spec, {"h": np.arange(2), "u": np.array([[0, 1, 2], [0, 0, 2]])}, x)
    with pytest.raises(ValueError, match="pass spec="):
        invert_permutation({"u": np.array([[0, 1, 2], [2, 1, 0]])})
    with pytest.raises(ValueError, match="pass spec="):
        compose_permutations({"u": np.array([[0, 1, 2], [2, 1, 0]])}, {})


# ----------------------------------------------------------------------------- group laws


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_inverse_and_composition_laws(kind):
    model = small_vit(True)
    spec = model.permutation_spec()
    params = {k: v.detach() for k, v in model.state_dict().items()}
    if kind == "numpy":
        params = {k: v.numpy() for k, v in params.items()}
    dev = "cpu" if kind == "torch" else None
    p = random_permutation(spec, params, seed=1, device=dev)
    q = random_permutation(spec, params, seed=2, device=dev)
    once = apply_permutation(spec, p, params)
    twice = apply_permutation(spec, q, once)
    composed = apply_permutation(spec, compose_permutations(p, q, spec), params)
    back = apply_permutation(spec, invert_permutation(p, spec), once)
    undone = apply_inverse_permutation(spec, p, once)
    for k in params:
        np.testing.assert_array_equal(np.asarray(twice[k]), np.asarray(composed[k]))
        np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(params[k]))
        np.testing.assert_array_equal(np.asarray(undone[k]), np.asarray(params[k]))
    assert any(not np.array_equal(np.asarray(once[k]), np.asarray(params[k])) for k in params)


# ------------------------------------------------------------------------------ invariance


def _groups_to_try(spec: PermutationSpec) -> list:
    return [[g] for g in spec.groups] + [list(spec.groups)]


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_vit_invariant_under_every_group(norm_first, mode):
    model = small_vit(norm_first)
    spec = model.permutation_spec()
    state = model.state_dict()
    x = torch.randn(5, 64)
    getattr(model, mode)()  # train mode: dropout is 0, so the outputs are deterministic
    with torch.no_grad():
        ref = model(x)
    for k, groups in enumerate(_groups_to_try(spec)):
        full = random_permutation(spec, state, seed=10 + k)
        perms = {g: (full[g] if g in groups else None) for g in spec.groups}
        other = small_vit(norm_first, seed=5)
        getattr(other, mode)()
        other.load_state_dict(apply_permutation(spec, perms, state))
        changed = any(not torch.equal(a, b) for a, b in zip(other.state_dict().values(),
                                                            state.values()))
        assert changed, groups
        with torch.no_grad():
            torch.testing.assert_close(other(x), ref, atol=2e-5, rtol=1e-5, msg=str(groups))


def test_a_wrong_spec_breaks_invariance():
    """The invariance test can fail: a q/k permutation that V does not share changes f."""
    model = small_vit(True).eval()
    spec = model.permutation_spec()
    state = model.state_dict()
    name = "blocks.0.self_attn.in_proj_weight"
    w = state[name].clone()
    e = w.shape[1]
    w[:e] = w[:e][torch.randperm(e)]  # permute q rows alone across heads
    model2 = small_vit(True, seed=3).eval()
    model2.load_state_dict({**state, name: w})
    x = torch.randn(4, 64)
    with torch.no_grad():
        assert (model(x) - model2(x)).abs().max() > 1e-3
    assert spec.has_blocks


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_stack_spec_invariance(norm_first):
    torch.manual_seed(0)
    layers = nn.ModuleDict({"blocks": nn.ModuleList(
        nn.TransformerEncoderLayer(16, 4, 32, 0.0, activation="relu", batch_first=True,
                                   norm_first=norm_first) for _ in range(2))})
    spec = transformer_spec(2, heads=4)
    state = layers.state_dict()
    perms = random_permutation(spec, state, seed=3)
    x = torch.randn(3, 5, 16)

    def run(mod, inp):
        for layer in mod["blocks"]:
            inp = layer(inp)
        return inp

    other = nn.ModuleDict({"blocks": nn.ModuleList(
        nn.TransformerEncoderLayer(16, 4, 32, 0.0, activation="relu", batch_first=True,
                                   norm_first=norm_first) for _ in range(2))})
    other.load_state_dict(apply_permutation(spec, perms, state))
    res = torch.as_tensor(perms["res"])
    with torch.no_grad():  # the stream's permutation shows on the output, and on the input
        torch.testing.assert_close(run(other, x[..., res]), run(layers, x)[..., res],
                                   atol=2e-5, rtol=1e-5)


def test_multihead_attention_axes_invariance():
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(12, 3, batch_first=True).eval()
    axes = attention_axes("a", 3, "m", "o", "heads", "qk", "v")
    spec = permutation_spec_from_axes_to_perm(axes)
    state = {f"a.{k}": v for k, v in attn.state_dict().items()}
    perms = random_permutation(spec, state, seed=4)
    moved = apply_permutation(spec, perms, state)
    other = nn.MultiheadAttention(12, 3, batch_first=True).eval()
    other.load_state_dict({k[2:]: v for k, v in moved.items()})
    x = torch.randn(2, 6, 12)
    m, o = torch.as_tensor(perms["m"]), torch.as_tensor(perms["o"])
    with torch.no_grad():
        y = attn(x, x, x, need_weights=False)[0]
        xm = x[..., m]
        y2 = other(xm, xm, xm, need_weights=False)[0]
    torch.testing.assert_close(y2, y[..., o], atol=2e-5, rtol=1e-5)


def test_permute_model_on_vit():
    model = small_vit(False).eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        ref = model(x)
    spec = model.permutation_spec()
    permute_model(model, random_permutation(spec, model.state_dict(), seed=9))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, atol=2e-5, rtol=1e-5)


# ------------------------------------------------------------------------- spec_from_model


def _derived_invariance(model: nn.Module, spec: PermutationSpec, x: torch.Tensor) -> None:
    model.eval()
    state = model.state_dict()
    with torch.no_grad():
        ref = model(x)
        permute_model(model, random_permutation(spec, state, seed=11), spec)
        torch.testing.assert_close(model(x), ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False])
def test_spec_from_model_on_the_vit_equals_the_hand_written_spec(norm_first):
    from trajtransfer.core.spec_fx import spec_from_model

    model = small_vit(norm_first)
    derived = spec_from_model(model, torch.randn(2, 64))
    assert derived.partition() == model.permutation_spec().partition()
    assert derived.inner_of == model.permutation_spec().inner_of  # the block groups' own names
    _derived_invariance(model, derived, torch.randn(3, 64))


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_spec_from_model_on_torch_encoder_layers(norm_first, batch_first):
    from trajtransfer.core.spec import encoder_layer_axes
    from trajtransfer.core.spec_fx import spec_from_model

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, 0.0, batch_first=batch_first,
                                       norm_first=norm_first)
    model = nn.Sequential(nn.Linear(5, 16), layer, nn.Linear(16, 3))
    x = torch.randn(2, 6, 5)
    derived = spec_from_model(model, x)
    hand = permutation_spec_from_axes_to_perm({
        "0.weight": ("res", None), "0.bias": ("res",), **encoder_layer_axes("1", 4, "res"),
        "2.weight": (None, "res"), "2.bias": (None,)})
    assert derived.partition() == hand.partition()
    _derived_invariance(model, derived, x)


def test_spec_from_model_on_a_transformer_encoder_and_a_bare_attention():
    from trajtransfer.core.spec_fx import spec_from_model

    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=True), 2,
                                norm=nn.LayerNorm(8), enable_nested_tensor=False)
    model = nn.Sequential(nn.Linear(3, 8), enc, nn.Linear(8, 2))
    derived = spec_from_model(model, torch.randn(2, 4, 3))
    hand = transformer_spec(2, heads=2, prefix="1.layers").axes_to_perm
    hand = permutation_spec_from_axes_to_perm({
        "0.weight": ("res", None), "0.bias": ("res",), **hand,
        "1.norm.weight": ("res",), "1.norm.bias": ("res",),
        "2.weight": (None, "res"), "2.bias": (None,)})
    assert derived.partition() == hand.partition()
    _derived_invariance(model, derived, torch.randn(2, 4, 3))

    class Bare(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 12)
            self.attn = nn.MultiheadAttention(12, 3, batch_first=True)
            self.out = nn.Linear(12, 2)

        def forward(self, x):
            h = self.proj(x)
            return self.out(self.attn(h, h, h, need_weights=False)[0])

    bare = Bare()
    derived = spec_from_model(bare, torch.randn(2, 5, 4))
    hand = permutation_spec_from_axes_to_perm({
        "proj.weight": ("p", None), "proj.bias": ("p",),
        **attention_axes("attn", 3, "p", "o", "attn.heads", "attn.qk", "attn.v"),
        "out.weight": (None, "o"), "out.bias": (None,)})
    assert derived.partition() == hand.partition()
    _derived_invariance(bare, derived, torch.randn(2, 5, 4))


class _GroupedQuery(nn.Module):
    """Grouped-query attention written out: two query heads share one key/value head."""

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.kv = nn.Linear(8, 8)
        self.o = nn.Linear(8, 8)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, 4, 2).transpose(1, 2)
        k, v = self.kv(x).view(b, n, 2, 4).transpose(1, 2).chunk(2, dim=-1)
        k = k.repeat_interleave(2, dim=1)
        v = v.repeat_interleave(2, dim=1)
        att = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.o(att.transpose(1, 2).reshape(b, n, 8))


class _Rotary(nn.Module):
    """Rotary position embedding on top of torch's attention: rotates pairs of channels."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        h = self.proj(x)
        x1, x2 = h[..., ::2], h[..., 1::2]
        h = torch.cat([-x2, x1], dim=-1)
        return self.attn(h, h, h)[0].sum(-1)


@pytest.mark.parametrize("make, x, match", [
    (lambda: _Cross(nn.MultiheadAttention(8, 2, kdim=4, vdim=4, batch_first=True)),
     torch.randn(2, 3, 4), "MultiheadAttention 'attn' has kdim/vdim different from embed_dim"),
    (lambda: _Wrap(nn.MultiheadAttention(8, 2, batch_first=True, add_zero_attn=True)),
     torch.randn(2, 3, 8), "MultiheadAttention 'attn' uses add_zero_attn"),
    (lambda: _Wrap(nn.MultiheadAttention(8, 2, batch_first=True, add_bias_kv=True)),
     torch.randn(2, 3, 8), "MultiheadAttention 'attn' uses add_bias_kv"),
    (lambda: nn.Sequential(nn.Linear(4, 8), nn.TransformerEncoderLayer(
        8, 2, 16, activation=lambda t: t * t.sigmoid(), batch_first=True)),
     torch.randn(2, 3, 4), "TransformerEncoderLayer '1' has activation"),
    (_GroupedQuery, torch.randn(2, 3, 8), r"node 'chunk'.*not supported"),
    (_Rotary, torch.randn(2, 3, 8), r"node 'getitem'.*not supported"),
])
def test_spec_from_model_refuses_attention_it_does_not_understand(make, x, match):
    from trajtransfer.core.spec_fx import spec_from_model

    with pytest.raises(ValueError, match=match):
        spec_from_model(make(), x)


class _Wrap(nn.Module):
    """``attn(h, h, h)[0]`` after an optional projection."""

    def __init__(self, attn, proj=None):
        super().__init__()
        self.proj = proj if proj is not None else nn.Identity()
        self.attn = attn

    def forward(self, x):
        h = self.proj(x)
        return self.attn(h, h, h)[0]


class _Cross(nn.Module):
    """Attention from a projection of x onto x itself (keys and values of another width)."""

    def __init__(self, attn):
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.attn = attn

    def forward(self, x):
        return self.attn(self.proj(x), x, x)[0]


def test_cli_builds_a_vit_for_square_images():
    from trajtransfer.kit.cli import _build_model

    vit = _build_model("vit", (1, 28, 28), 10, (), "relu", width=0.5)
    assert isinstance(vit, ViT) and vit.head.in_features == 32 and vit.patch_embed.kernel_size == (7, 7)
    assert _build_model("vit", (3, 32, 32), 10, (), "relu").patch_embed.kernel_size == (4, 4)
    with pytest.raises(ValueError, match="square images whose side 7 or 4 divides"):
        _build_model("vit", (1, 30, 30), 10, (), "relu")
