"""Specs with their tensor shapes for the matcher tests: an MLP of given widths and a small conv chain."""

from __future__ import annotations

from trajtransfer.core.spec import chain_spec, mlp_spec


def mlp_spec_and_shapes(widths, bias=True):
    """Spec and shapes of an MLP with layer widths [in, h1, ..., out]."""
    spec = mlp_spec(len(widths) - 2, bias=bias)
    shapes = {}
    for i in range(len(widths) - 1):
        shapes[f"layers.{i}.weight"] = (widths[i + 1], widths[i])
        if bias:
            shapes[f"layers.{i}.bias"] = (widths[i + 1],)
    return spec, shapes


def conv_chain_spec_and_shapes():
    """A conv chain (three 3x3 convs with both axes permuted) plus a Linear-like 1x1 head."""
    spec = chain_spec([("c1", "g1", 2), ("c2", "g2", 2), ("c3", "g3", 2), ("head", None, 2)])
    shapes = {"c1.weight": (6, 3, 3, 3), "c1.bias": (6,), "c2.weight": (8, 6, 3, 3),
              "c2.bias": (8,), "c3.weight": (5, 8, 3, 3), "c3.bias": (5,),
              "head.weight": (4, 5, 1, 1), "head.bias": (4,)}
    return spec, shapes
