"""PermutationSpec: Git Re-Basin compatibility, validation messages, hand-written builders."""

from __future__ import annotations

import re

import numpy as np
import pytest

from trajtransfer.core.spec import (
    PermutationSpec,
    conv_spec,
    mlp_spec,
    permutation_spec_from_axes_to_perm,
    resnet_spec,
    validate_spec,
)


def shaped(*shape: int) -> np.ndarray:
    """A read-only array of the given shape that costs no memory (validation only reads shapes)."""
    return np.broadcast_to(np.float32(0), shape)


# ------------------------------------------------------------------------- Git Re-Basin dicts
def test_axes_to_perm_accepted_unchanged_and_inverted():
    # Git Re-Basin's own MLP spec (JAX/flax layout, kernel = (in, out)), passed as-is.
    a2p = {
        "Dense_0/kernel": (None, "P_0"),
        "Dense_0/bias": ("P_0",),
        "Dense_1/kernel": ("P_0", "P_1"),
        "Dense_1/bias": ("P_1",),
        "Dense_2/kernel": ("P_1", None),
        "Dense_2/bias": (None,),
    }
    spec = permutation_spec_from_axes_to_perm(a2p)
    assert spec.axes_to_perm == a2p
    assert spec.perm_to_axes == {
        "P_0": [("Dense_0/kernel", 1), ("Dense_0/bias", 0), ("Dense_1/kernel", 0)],
        "P_1": [("Dense_1/kernel", 1), ("Dense_1/bias", 0), ("Dense_2/kernel", 0)],
    }
    assert spec.buffers == frozenset()
    assert spec.groups == ["P_0", "P_1"]


def test_lists_from_json_are_normalised():
    spec = PermutationSpec(
        perm_to_axes={"g": [["w", 0], ["b", 0]]}, axes_to_perm={"w": ["g", None], "b": ["g"]}
    )
    assert spec.axes_to_perm == {"w": ("g", None), "b": ("g",)}
    assert spec.perm_to_axes == {"g": [("w", 0), ("b", 0)]}


def test_inconsistent_maps_rejected():
    with pytest.raises(ValueError, match=r"disagree on group\(s\) \['g'\]"):
        PermutationSpec(perm_to_axes={"g": [("w", 1)]}, axes_to_perm={"w": ("g", None)})
    with pytest.raises(ValueError, match="disagree"):
        PermutationSpec(perm_to_axes={}, axes_to_perm={"w": ("g", None)})


def test_bad_group_entry_and_unknown_buffer_rejected():
    with pytest.raises(ValueError, match=r"axes_to_perm\['w'\]\[1\] must be a group name"):
        permutation_spec_from_axes_to_perm({"w": ("g", 3)})
    with pytest.raises(ValueError, match=r"buffers \['bn.running_mean'\] are not tensors"):
        permutation_spec_from_axes_to_perm({"w": ("g",)}, buffers=["bn.running_mean"])


def test_specs_compare_and_hash_by_content():
    a = permutation_spec_from_axes_to_perm({"w": ("g", None), "b": ("g",)}, buffers=["b"])
    b = permutation_spec_from_axes_to_perm({"w": ["g", None], "b": ["g"]}, buffers=("b",))
    c = permutation_spec_from_axes_to_perm({"w": ("g", None), "b": ("g",)})
    assert a == b and hash(a) == hash(b) and len({a, b, c}) == 2
    assert a != c


def test_partition_ignores_group_names():
    a = permutation_spec_from_axes_to_perm({"w1": ("x", None), "w2": (None, "x")})
    b = permutation_spec_from_axes_to_perm({"w1": ("y", None), "w2": (None, "y")})
    c = permutation_spec_from_axes_to_perm({"w1": ("y", None), "w2": (None, "z")})
    assert a.partition() == b.partition()
    assert a.partition() != c.partition()


# ------------------------------------------------------------------------------ validation
def test_size_mismatch_names_group_tensors_axes_and_sizes():
    spec = mlp_spec(1, bias=False, layer_names=["fc1", "fc2"])
    params = {"fc1.weight": shaped(4096, 784), "fc2.weight": shaped(10, 4095)}
    msg = ("group 'c1' has size 4096 from ('fc1.weight', axis 0) but ('fc2.weight', axis 1) "
           "has size 4095")
    with pytest.raises(ValueError, match=re.escape(msg)):
        validate_spec(spec, params)
    with pytest.raises(ValueError, match=re.escape(msg)):
        spec.group_sizes(params)


def test_wrong_ndim_names_tensor_shape_and_axes():
    spec = mlp_spec(1)
    params = {
        "layers.0.weight": shaped(8, 4), "layers.0.bias": shaped(8, 1),
        "layers.1.weight": shaped(3, 8), "layers.1.bias": shaped(3),
    }
    with pytest.raises(ValueError, match=re.escape(
            "tensor 'layers.0.bias' has shape (8, 1) (2 axes) but the spec gives 1 axes ('c1',)")):
        validate_spec(spec, params)


def test_tensor_missing_from_spec_or_from_params():
    spec = mlp_spec(1)
    full = {
        "layers.0.weight": shaped(8, 4), "layers.0.bias": shaped(8),
        "layers.1.weight": shaped(3, 8), "layers.1.bias": shaped(3),
    }
    with pytest.raises(ValueError, match=r"not in the permutation spec: \['extra.weight'\]"):
        validate_spec(spec, {**full, "extra.weight": shaped(2)})
    partial = {k: v for k, v in full.items() if k != "layers.1.bias"}
    with pytest.raises(ValueError, match=r"missing from the tensor dict: \['layers.1.bias'\]"):
        validate_spec(spec, partial)
    assert validate_spec(spec, partial, require_all=False) == {"c1": 8}
    assert validate_spec(spec, full) == {"c1": 8}


def test_buffers_may_be_absent_but_are_checked_when_present():
    spec = resnet_spec((1,), width=4)
    params = {
        "conv1.weight": shaped(4, 3, 3, 3), "bn1.weight": shaped(4), "bn1.bias": shaped(4),
        "layer1.0.conv1.weight": shaped(4, 4, 3, 3), "layer1.0.bn1.weight": shaped(4),
        "layer1.0.bn1.bias": shaped(4), "layer1.0.conv2.weight": shaped(4, 4, 3, 3),
        "layer1.0.bn2.weight": shaped(4), "layer1.0.bn2.bias": shaped(4),
        "linear.weight": shaped(10, 4), "linear.bias": shaped(10),
    }
    assert validate_spec(spec, params) == {"c4": 4, "c4-1": 4}
    with pytest.raises(ValueError, match=re.escape("('bn1.running_mean', axis 0) has size 5")):
        validate_spec(spec, {**params, "bn1.running_mean": shaped(5)})


def test_group_sizes_hypothesis():
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    @hypothesis.given(st.lists(st.integers(1, 50), min_size=1, max_size=5), st.integers(1, 9),
                      st.integers(1, 9))
    def check(hidden, n_in, n_out):
        spec = mlp_spec(len(hidden))
        sizes = [n_in, *hidden, n_out]
        params = {}
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            params[f"layers.{i}.weight"] = shaped(b, a)
            params[f"layers.{i}.bias"] = shaped(b)
        assert validate_spec(spec, params) == {f"c{i + 1}": h for i, h in enumerate(hidden)}

    check()


# -------------------------------------------------------------------------------- builders
def test_mlp_spec_layout():
    spec = mlp_spec(3)
    assert spec.groups == ["c1", "c2", "c3"]
    assert spec.axes_to_perm["layers.0.weight"] == ("c1", None)
    assert spec.axes_to_perm["layers.1.weight"] == ("c2", "c1")
    assert spec.axes_to_perm["layers.3.weight"] == (None, "c3")
    assert spec.axes_to_perm["layers.3.bias"] == (None,)
    seq = mlp_spec(1, bias=False, layer_names=["1", "3"], group_names=["h"])
    assert seq.axes_to_perm == {"1.weight": ("h", None), "3.weight": (None, "h")}
    with pytest.raises(ValueError, match="layer_names must have 2 entries"):
        mlp_spec(1, layer_names=["a"])


def test_conv_spec_matches_algorithm_spec_table():
    spec = conv_spec()
    assert spec.groups == ["c64-1", "c64-2", "c128-1", "c128-2", "c256-1", "c256-2",
                           "c512-1", "c512-2", "c256-3", "c256-4"]
    assert spec.axes_to_perm["conv1.weight"] == ("c64-1", None, None, None)
    assert spec.axes_to_perm["conv3.weight"] == ("c128-1", "c64-2", None, None)
    assert spec.axes_to_perm["fc1.weight"] == ("c256-3", "c512-2", None, None)
    assert spec.axes_to_perm["head.weight"] == (None, "c256-4", None, None)
    assert spec.axes_to_perm["head.bias"] == (None,)
    for name, axes in spec.axes_to_perm.items():
        if name.endswith(".bias"):
            assert axes == (spec.axes_to_perm[name[:-5] + ".weight"][0],)


def test_resnet_spec_groups_and_buffers():
    spec = resnet_spec()
    assert sorted(spec.groups) == sorted(
        [f"c{w}" for w in (64, 128, 256, 512)]
        + [f"c{w}-{i}" for w in (64, 128, 256, 512) for i in (1, 2)]
    )
    c64 = set(spec.perm_to_axes["c64"])
    for pair in [("conv1.weight", 0), ("bn1.weight", 0), ("bn1.running_var", 0),
                 ("layer1.0.conv1.weight", 1), ("layer1.0.conv2.weight", 0),
                 ("layer1.1.bn2.bias", 0), ("layer2.0.conv1.weight", 1),
                 ("layer2.0.shortcut.0.weight", 1)]:
        assert pair in c64
    assert set(spec.perm_to_axes["c128-1"]) == {
        ("layer2.0.conv1.weight", 0), ("layer2.0.bn1.weight", 0), ("layer2.0.bn1.bias", 0),
        ("layer2.0.bn1.running_mean", 0), ("layer2.0.bn1.running_var", 0),
        ("layer2.0.conv2.weight", 1),
    }
    assert spec.axes_to_perm["linear.weight"] == (None, "c512")
    assert spec.axes_to_perm["linear.bias"] == (None,)
    assert spec.axes_to_perm["layer3.1.bn1.num_batches_tracked"] == ()
    assert "layer3.1.bn1.num_batches_tracked" in spec.buffers
    assert all(n.split(".")[-1] in ("running_mean", "running_var", "num_batches_tracked")
               for n in spec.buffers)
    assert "layer1.0.shortcut.0.weight" not in spec.axes_to_perm  # identity shortcut
    paper = resnet_spec(running_stats=False)
    assert paper.buffers == frozenset()
    assert paper.partition() != spec.partition() and len(paper.groups) == 12
