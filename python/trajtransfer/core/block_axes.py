"""Structured axis entries of a permutation spec: block-structured groups and packed segments.

A Git Re-Basin ``axes_to_perm`` entry is a group name or None. Attention needs two more kinds:

* :class:`Blocks` ``(group, count, inner)``: a group of size H = ``count`` acting on an axis of
  length H·d in blocks of d (the heads of a projection), and optionally an *inner* group: one
  permutation of the d positions per block (the dimensions within each head), which moves with
  its block;
* :class:`Concat` ``(parts)``: an axis made of equal consecutive segments, each with its own entry
  (a plain group, None or :class:`Blocks`); torch packs q, k and v into ``in_proj_weight``
  ``(3E, E)`` and ``in_proj_bias`` ``(3E,)``.

Index semantics extend the plain ones (new slice i = old slice ``perm[i]``). A block group's
permutation σ is an ``(H,)`` int64 array; its inner group's permutations τ are one ``(H, d)``
int64 array whose row h permutes the positions of *old* (source) block h. Along the axis, with
position (i, j) = i·d + j,

    new slice (i, j) = old slice (σ[i], τ[σ[i], j]),

i.e. first each block h is permuted within by τ[h], then the blocks by σ. A segment of a
:class:`Concat` is permuted on its own (its positions never leave it).

JSON forms: ``{"blocks": group, "count": H, "inner": name or null}`` and
``{"concat": [part, ...]}``; :func:`normalise_entry` accepts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from .._arrays import is_torch_tensor

__all__ = ["Blocks", "Concat", "normalise_entry", "entry_groups", "entry_to_json", "part_sizes",
           "axis_index", "is_structured"]


@dataclass(frozen=True)
class Blocks:
    """Group ``group`` permutes ``count`` equal blocks of an axis; ``inner`` (optional) permutes
    the positions within each block, independently per block.

    Raises
    ------
    TypeError, ValueError
        For a non-str group or inner, a count below 1, or ``inner == group``.
    """

    group: str
    count: int
    inner: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.group, str):
            raise TypeError(f"Blocks.group must be a group name (str), got {self.group!r}")
        if self.inner is not None and not isinstance(self.inner, str):
            raise TypeError(f"Blocks.inner must be a group name (str) or None, got {self.inner!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, (int, np.integer)) \
                or int(self.count) < 1:
            raise ValueError(f"Blocks.count must be an integer >= 1, got {self.count!r}")
        object.__setattr__(self, "count", int(self.count))
        if self.inner == self.group:
            raise ValueError(f"Blocks.inner must differ from Blocks.group, both are {self.group!r}")


@dataclass(frozen=True)
class Concat:
    """An axis split into ``len(parts)`` equal consecutive segments, each with its own entry
    (a group name, None or :class:`Blocks`; no nested :class:`Concat`)."""

    parts: tuple

    def __post_init__(self) -> None:
        parts = tuple(normalise_entry(p, "Concat part") for p in self.parts)
        if not parts:
            raise ValueError("Concat needs at least one part")
        if any(isinstance(p, Concat) for p in parts):
            raise ValueError("Concat parts may not be Concat themselves")
        object.__setattr__(self, "parts", parts)


def is_structured(entry: Any) -> bool:
    """True for a :class:`Blocks` or :class:`Concat` entry (not a plain group or None)."""
    return isinstance(entry, (Blocks, Concat))


def normalise_entry(entry: Any, where: str) -> Any:
    """An axis entry as None, a str, :class:`Blocks` or :class:`Concat` (JSON dicts converted).

    Raises
    ------
    ValueError
        Naming ``where``, for anything else.
    """
    if entry is None or isinstance(entry, (str, Blocks, Concat)):
        return entry
    if isinstance(entry, Mapping):
        keys = set(entry)
        if "blocks" in keys and keys <= {"blocks", "count", "inner"}:
            return Blocks(entry["blocks"], entry.get("count", 0), entry.get("inner"))
        if keys == {"concat"}:
            return Concat(tuple(entry["concat"]))
    raise ValueError(f"{where} must be a group name (str), None, Blocks or Concat "
                     f"(or their JSON dicts), got {entry!r}")


def entry_to_json(entry: Any) -> Any:
    """The JSON form of an entry (plain entries unchanged)."""
    if isinstance(entry, Blocks):
        return {"blocks": entry.group, "count": entry.count, "inner": entry.inner}
    if isinstance(entry, Concat):
        return {"concat": [entry_to_json(p) for p in entry.parts]}
    return entry


def _parts(entry: Any) -> tuple:
    return entry.parts if isinstance(entry, Concat) else (entry,)


def entry_groups(entry: Any) -> list:
    """Every group an entry names (block groups and inner groups included), in order, once."""
    out: list = []
    for p in _parts(entry):
        names = [p] if isinstance(p, str) else [p.group, p.inner] if isinstance(p, Blocks) else []
        out.extend(g for g in names if g is not None and g not in out)
    return out


def part_sizes(entry: Any, length: int, where: str) -> list:
    """``[(group, size)]`` that an entry implies on an axis of ``length``.

    A block group has size ``count`` and its inner group the block length d.

    Raises
    ------
    ValueError
        Naming ``where``, if the segments or blocks do not divide the axis.
    """
    parts = _parts(entry)
    if length % len(parts):
        raise ValueError(f"{where} has length {length}, not divisible into {len(parts)} equal "
                         "Concat segments")
    seg = length // len(parts)
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append((p, seg))
        elif isinstance(p, Blocks):
            if seg % p.count:
                raise ValueError(f"{where}: a segment of length {seg} is not divisible into "
                                 f"{p.count} blocks of group {p.group!r}")
            out.append((p.group, p.count))
            if p.inner is not None:
                out.append((p.inner, seg // p.count))
    return out


def _block_index(sigma: Any, tau: Any, d: int, count: int, like: Any) -> Any:
    """Flat gather index of one block-permuted segment: position (i, j) <- (σ[i], τ[σ[i], j])."""
    if is_torch_tensor(like):
        import torch

        base = torch.arange(count, dtype=torch.int64, device=like.device) if sigma is None else sigma
        within = torch.arange(d, dtype=torch.int64, device=like.device).expand(count, d) \
            if tau is None else tau[base]
    else:
        base = np.arange(count, dtype=np.int64) if sigma is None else sigma
        within = np.broadcast_to(np.arange(d, dtype=np.int64), (count, d)) if tau is None \
            else tau[base]
    return (base[:, None] * d + within).reshape(-1)


def axis_index(entry: Any, length: int, perms: Mapping[str, Any], like: Any) -> Any:
    """The flat gather index a structured entry applies along an axis of ``length``, or None when
    every group it names is the identity (absent from ``perms``).

    ``perms`` holds checked int64 indices of ``like``'s kind (numpy, or torch on its device).
    """
    parts = _parts(entry)
    if not any(g in perms for g in entry_groups(entry)):
        return None
    seg = length // len(parts)
    pieces = []
    for k, p in enumerate(parts):
        off = k * seg
        if isinstance(p, str) and p in perms:
            idx = perms[p]
        elif isinstance(p, Blocks) and (p.group in perms or p.inner in perms):
            idx = _block_index(perms.get(p.group), perms.get(p.inner) if p.inner else None,
                               seg // p.count, p.count, like)
        elif is_torch_tensor(like):
            import torch

            idx = torch.arange(seg, dtype=torch.int64, device=like.device)
        else:
            idx = np.arange(seg, dtype=np.int64)
        pieces.append(idx + off)
    if is_torch_tensor(like):
        import torch

        return torch.cat(pieces)
    return np.concatenate(pieces)
