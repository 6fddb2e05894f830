"""apply_permutation and friends: semantics against permutation matrices, algebraic laws, kinds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trajtransfer.core.permute import (
    apply_inverse_permutation,
    apply_permutation,
    compose_permutations,
    identity_permutation,
    invert_permutation,
    permute_model,
    random_permutation,
)
from trajtransfer.core.spec import permutation_spec_from_axes_to_perm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# A spec exercising every case: two groups on one tensor, one group on two axes of one tensor,
# a 4-d tensor, an unpermuted tensor, a 0-d buffer.
SPEC = permutation_spec_from_axes_to_perm(
    {
        "w1": ("a", None),
        "b1": ("a",),
        "w2": ("b", "a"),
        "rec": ("b", "b"),
        "conv": ("b", "a", None, None),
        "head": (None, "b"),
        "hb": (None,),
        "count": (),
    },
    buffers=["count"],
)


def make_params(rng, na=5, nb=4, dtype=np.float64):
    shapes = {"w1": (na, 3), "b1": (na,), "w2": (nb, na), "rec": (nb, nb),
              "conv": (nb, na, 2, 3), "head": (2, nb), "hb": (2,), "count": ()}
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def perm_matrix(p):
    """P with P[i, p[i]] = 1, so (P x)[i] = x[p[i]]: the oracle for the gather semantics."""
    m = np.zeros((len(p), len(p)))
    m[np.arange(len(p)), p] = 1.0
    return m


def test_matches_permutation_matrices(rng):
    params = make_params(rng)
    perms = random_permutation(SPEC, params, seed=3)
    Pa, Pb = perm_matrix(perms["a"]), perm_matrix(perms["b"])
    out = apply_permutation(SPEC, perms, params)
    np.testing.assert_array_equal(out["w1"], Pa @ params["w1"])
    np.testing.assert_array_equal(out["b1"], Pa @ params["b1"])
    np.testing.assert_array_equal(out["w2"], Pb @ params["w2"] @ Pa.T)
    np.testing.assert_array_equal(out["rec"], Pb @ params["rec"] @ Pb.T)
    np.testing.assert_array_equal(out["head"], params["head"] @ Pb.T)
    np.testing.assert_array_equal(out["hb"], params["hb"])
    expect_conv = np.einsum("ij,jkxy,lk->ilxy", Pb, params["conv"], Pa)
    np.testing.assert_array_equal(out["conv"], expect_conv)
    assert not np.array_equal(out["w2"], params["w2"])  # the permutation is not the identity


def test_inverse_roundtrip_and_identity(rng):
    params = make_params(rng)
    perms = random_permutation(SPEC, params, seed=0)
    fwd = apply_permutation(SPEC, perms, params)
    for back in (apply_inverse_permutation(SPEC, perms, fwd),
                 apply_permutation(SPEC, invert_permutation(perms), fwd),
                 apply_permutation(SPEC, perms, fwd, inverse=True)):
        for k in params:
            np.testing.assert_array_equal(back[k], params[k])
    same = apply_permutation(SPEC, identity_permutation(SPEC, params), params)
    for k in params:
        np.testing.assert_array_equal(same[k], params[k])


def test_composition_law(rng):
    params = make_params(rng)
    p = random_permutation(SPEC, params, seed=1)
    q = random_permutation(SPEC, params, seed=2)
    lhs = apply_permutation(SPEC, compose_permutations(p, q), params)
    rhs = apply_permutation(SPEC, q, apply_permutation(SPEC, p, params))
    for k in params:
        np.testing.assert_array_equal(lhs[k], rhs[k])
    ident = compose_permutations(p, invert_permutation(p))
    for g, n in SPEC.group_sizes(params).items():
        np.testing.assert_array_equal(ident[g], np.arange(n))
    # None is the identity on either side
    assert compose_permutations({"a": None}, {"a": p["a"]})["a"] is p["a"]


def test_numpy_and_torch_agree_with_mixed_index_kinds(rng):
    params = make_params(rng)
    tparams = {k: torch.from_numpy(v.copy()) for k, v in params.items()}
    perms = random_permutation(SPEC, params, seed=4)
    tperms = random_permutation(SPEC, params, seed=4, device="cpu")
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.int64 for v in tperms.values())
    ref = apply_permutation(SPEC, perms, params)
    for pp in (perms, tperms):
        for src in (params, tparams):
            out = apply_permutation(SPEC, pp, src)
            for k in params:
                assert type(out[k]) is type(src[k])
                got = out[k].numpy() if isinstance(out[k], torch.Tensor) else out[k]
                np.testing.assert_array_equal(got, ref[k])
    # torch inverse / compose stay torch
    inv = invert_permutation(tperms)
    assert isinstance(inv["a"], torch.Tensor)
    np.testing.assert_array_equal(inv["a"].numpy(), invert_permutation(perms)["a"])
    comp = compose_permutations(tperms, perms)
    assert isinstance(comp["a"], torch.Tensor)
    np.testing.assert_array_equal(comp["a"].numpy(), compose_permutations(perms, perms)["a"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int64])
def test_torch_output_keeps_dtype_and_device(dtype):
    gen = torch.Generator().manual_seed(0)
    params = {k: (torch.randn(v.shape, generator=gen) * 10).to(dtype)
              for k, v in make_params(np.random.default_rng(0)).items()}
    perms = random_permutation(SPEC, params, seed=5)
    out = apply_permutation(SPEC, perms, params)
    for k, v in out.items():
        assert v.dtype == dtype and v.device == params[k].device and v.shape == params[k].shape
    back = apply_inverse_permutation(SPEC, perms, out)
    for k in params:
        assert torch.equal(back[k], params[k])
    # the meta device: shapes/dtypes/devices propagate without data, like a CUDA tensor would
    meta = {k: v.to("meta") for k, v in params.items()}
    mout = apply_permutation(SPEC, perms, meta, check=True)
    assert all(v.device.type == "meta" and v.dtype == dtype for v in mout.values())


def test_outputs_never_alias_inputs(rng):
    params = make_params(rng)
    saved = {k: v.copy() for k, v in params.items()}
    tparams = {k: torch.from_numpy(v.copy()) for k, v in params.items()}
    for src in (params, tparams):
        for out in (apply_permutation(SPEC, None, src),
                    apply_permutation(SPEC, {"a": None, "b": None}, src)):
            for k in src:
                assert out[k] is not src[k]
                out[k][...] = 7
        for k in saved:
            np.testing.assert_array_equal(np.asarray(src[k]), saved[k])


def test_partial_dicts_and_group_identity(rng):
    params = make_params(rng)
    perms = random_permutation(SPEC, params, seed=6)
    sub = {"w1": params["w1"], "count": params["count"]}
    out = apply_permutation(SPEC, {"a": perms["a"]}, sub)  # only groups of present tensors needed
    np.testing.assert_array_equal(out["w1"], params["w1"][perms["a"]])
    half = apply_permutation(SPEC, {"a": perms["a"], "b": None}, params)
    np.testing.assert_array_equal(half["rec"], params["rec"])
    np.testing.assert_array_equal(half["w2"], params["w2"][:, perms["a"]])


def test_autograd_flows_through(rng):
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    spec = permutation_spec_from_axes_to_perm({"w": ("a", None)})
    p = np.array([4, 2, 0, 1, 3])
    out = apply_permutation(spec, {"a": p}, {"w": w})["w"]
    (out * torch.arange(5.0, dtype=torch.float64)[:, None]).sum().backward()
    np.testing.assert_array_equal(w.grad[:, 0].numpy(), np.argsort(p).astype(float))


def test_errors(rng):
    params = make_params(rng)
    perms = random_permutation(SPEC, params, seed=7)
    with pytest.raises(ValueError, match=r"not in the permutation spec: \['zzz'\]"):
        apply_permutation(SPEC, perms, {**params, "zzz": np.zeros(2)})
    with pytest.raises(ValueError, match="no entry for group 'b'"):
        apply_permutation(SPEC, {"a": perms["a"]}, params)
    with pytest.raises(ValueError, match=r"group\(s\) \['c'\] that the spec does not define"):
        apply_permutation(SPEC, {**perms, "c": np.arange(2)}, params)
    bad = perms["a"].copy()
    bad[0] = bad[1]
    with pytest.raises(ValueError, match=r"perms\['a'\] is not a permutation of 0..4"):
        apply_permutation(SPEC, {**perms, "a": bad}, params)
    with pytest.raises(ValueError, match=r"perms\['a'\] is not a permutation"):
        apply_permutation(SPEC, {**perms, "a": torch.from_numpy(bad)}, params)
    with pytest.raises(ValueError, match=r"perms\['b'\] must have shape \(4,\)"):
        apply_permutation(SPEC, {**perms, "b": np.arange(5)}, params)
    with pytest.raises(TypeError, match=r"perms\['b'\] must hold integers"):
        apply_permutation(SPEC, {**perms, "b": np.arange(4.0)}, params)
    with pytest.raises(TypeError, match="perms must be a mapping"):
        apply_permutation(SPEC, [perms["a"]], params)
    with pytest.raises(ValueError, match="lengths 5 and 4"):
        compose_permutations({"a": perms["a"]}, {"a": perms["b"]})


def test_random_permutation_is_seeded(rng):
    params = make_params(rng)
    a = random_permutation(SPEC, params, seed=11)
    b = random_permutation(SPEC, params, seed=11)
    c = random_permutation(SPEC, params, seed=12)
    assert all(np.array_equal(a[g], b[g]) for g in a)
    assert any(not np.array_equal(a[g], c[g]) for g in a)
    assert {g: len(v) for g, v in a.items()} == {"a": 5, "b": 4}


def test_roundtrip_hypothesis():
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    @hypothesis.given(st.integers(1, 7), st.integers(1, 7), st.integers(0, 2**32 - 1),
                      st.booleans())
    def check(na, nb, seed, as_torch):
        r = np.random.default_rng(seed)
        params = make_params(r, na, nb)
        if as_torch:
            params = {k: torch.from_numpy(v) for k, v in params.items()}
        p = random_permutation(SPEC, params, seed)
        q = random_permutation(SPEC, params, seed + 1)
        once = apply_permutation(SPEC, compose_permutations(p, q), params)
        back = apply_permutation(SPEC, invert_permutation(compose_permutations(p, q)), once)
        for k in params:
            np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(params[k]))
        # orthogonality: norms and inner products are preserved
        tot = sum(float((np.asarray(v) ** 2).sum()) for v in params.values())
        tot2 = sum(float((np.asarray(v) ** 2).sum()) for v in once.values())
        assert np.isclose(tot, tot2)

    check()


def test_permute_model_in_place_keeps_function():
    from trajtransfer.kit.models import MLP, ResNet18

    for model, x in ((MLP(in_features=6, hidden=(7, 5), num_classes=3), torch.randn(4, 6)),
                     (ResNet18(num_classes=3, width=4), torch.randn(2, 3, 8, 8))):
        model = model.double().eval()
        x = x.double()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            y = model(x)
        perms = random_permutation(model.permutation_spec(), before, seed=9)
        assert permute_model(model, perms) is model
        with torch.no_grad():
            torch.testing.assert_close(model(x), y, rtol=1e-10, atol=1e-12)
        expect = apply_permutation(model.permutation_spec(), perms, before)
        for k, v in model.state_dict().items():
            assert torch.equal(v, expect[k])
    with pytest.raises(ValueError, match=r"parameters \['layers.1.bias'\] of the model are not in"):
        m = MLP(in_features=6, hidden=(7,), num_classes=3)
        a2p = dict(m.permutation_spec().axes_to_perm)
        del a2p["layers.1.bias"]
        permute_model(m, None, permutation_spec_from_axes_to_perm(a2p))
    with pytest.raises(ValueError, match="has no permutation_spec"):
        permute_model(torch.nn.Linear(2, 2), None)
