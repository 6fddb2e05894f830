"""Permutation specs: which tensor axes each hidden-unit permutation group acts on.

Compatible with Git Re-Basin (Ainsworth et al., 2023): ``axes_to_perm`` maps each tensor name to a
tuple with one entry per axis, a group name or ``None``; ``perm_to_axes`` is the inverse map.

Index semantics (algorithm-spec.md §2.1): ``perm[p]`` is an int64 array of length n_p; applying it
to a tensor gathers along every axis that carries p: new slice i = old slice ``perm[p][i]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

__all__ = ["PermutationSpec", "permutation_spec_from_axes_to_perm"]


@dataclass(frozen=True)
class PermutationSpec:
    """Permutation groups and the (tensor, axis) pairs they act on.

    Attributes
    ----------
    perm_to_axes : dict[str, list[tuple[str, int]]]
        Group name -> the (tensor name, axis) pairs it permutes.
    axes_to_perm : dict[str, tuple[str | None, ...]]
        Tensor name -> one group name (or None) per axis.
    buffers : frozenset[str]
        Tensor names that are buffers (e.g. BatchNorm running statistics): permuted by
        ``apply_permutation`` but never part of a matching objective, and allowed to be absent
        from the dicts passed to the matchers.
    """

    perm_to_axes: dict
    axes_to_perm: dict
    buffers: frozenset = field(default_factory=frozenset)


def permutation_spec_from_axes_to_perm(
    axes_to_perm: Mapping[str, Sequence[Optional[str]]], buffers: Sequence[str] = ()
) -> PermutationSpec:
    """Build a :class:`PermutationSpec` from a Git Re-Basin ``axes_to_perm`` dict, unchanged."""
    perm_to_axes: dict = {}
    a2p: dict = {}
    for name, axes in axes_to_perm.items():
        axes = tuple(axes)
        a2p[name] = axes
        for ax, group in enumerate(axes):
            if group is not None:
                perm_to_axes.setdefault(group, []).append((name, ax))
    return PermutationSpec(perm_to_axes=perm_to_axes, axes_to_perm=a2p, buffers=frozenset(buffers))
