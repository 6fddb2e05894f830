"""The matcher's arithmetic on torch tensors, on whatever device they live (the device path).

Holds the (target, source) pairs of a :class:`~trajtransfer.core.match.GradientMatcher` on their
device, stacked per tensor, and builds one group's cost matrix from them with torch ops (gathers
plus one GEMM per (group, tensor)). The coordinate descent itself is in
:mod:`trajtransfer.core.descent`; the native CPU path does the same arithmetic in C++.

Cost of group g at permutations π (gather semantics, π applied to the source):
``C_g[i, j] = Σ_k Σ_(tensor w, axis a of g) <w_k T_k[w] slice i along a, π_{-a}(S_k[w]) slice j>``.
Terms of tensors whose other axes are unpermuted ("static") do not depend on π: they are summed
into one (n, n) matrix per group as pairs are added. The other ("dynamic") terms are cached when
the caller knows the permutations on the host (the LAP runs there): a cached term is extended by
the pairs added since it was built, and corrected on the slices whose permutation changed (a
full rebuild when more than half did), as the native core does.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["TorchPairs"]


class _Member:
    """One (tensor, permuted axis) of a group, and its cached cost term (dynamic members)."""

    __slots__ = ("tensor", "axis", "others", "is_static", "contrib", "upto", "built_at")

    def __init__(self, tensor: int, axis: int, others: list) -> None:
        self.tensor = tensor
        self.axis = axis
        self.others = others          # [(axis, group)] of the tensor's other permuted axes
        self.is_static = not others
        self.contrib: Any = None      # the term over pairs [0, upto) at the permutations built_at
        self.upto = 0
        self.built_at: list = []      # host copies of the other groups' permutations


class TorchPairs:
    """Weighted (target, source) pairs as stacked float32 tensors on one device.

    Parameters
    ----------
    sizes : sequence of int
        Group sizes, in group order.
    shapes : sequence of tuple
        Tensor shapes, in the spec's tensor order.
    axis_groups : sequence of sequence of int
        Per tensor, the group index of each axis (-1: unpermuted).
    device : torch.device
    """

    def __init__(self, sizes: Sequence[int], shapes: Sequence[tuple], axis_groups: Sequence[Sequence[int]],
                 device: Any) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.sizes = [int(n) for n in sizes]
        self.shapes = [tuple(int(s) for s in shape) for shape in shapes]
        self.members: list = [[] for _ in self.sizes]
        neighbours: list = [set() for _ in self.sizes]
        for t, axes in enumerate(axis_groups):
            permuted = [(a, g) for a, g in enumerate(axes) if g >= 0]
            for a, g in permuted:
                self.members[g].append(_Member(t, a, [(b, h) for b, h in permuted if b != a]))
                neighbours[g].update(h for _, h in permuted if h != g)
        self.neighbours = [sorted(nb) for nb in neighbours]
        self.axis_groups = [list(axes) for axes in axis_groups]
        self.num_pairs = 0
        self._capacity = 0
        self._targets: list = []   # per tensor: (capacity, *shape), pre-multiplied by the weight
        self._sources: list = []
        self._static = [torch.zeros((n, n), dtype=torch.float32, device=self.device) for n in self.sizes]
        # Exact objective at the identity, summed per pair as it is added (float64, on device).
        self._identity_objective = torch.zeros((), dtype=torch.float64, device=self.device)
        self.gemm_flops = 0.0

    # ---------------------------------------------------------------------------- the store
    def reserve(self, num_pairs: int) -> None:
        """Room for ``num_pairs`` pairs in total without regrowth copies."""
        if num_pairs <= self._capacity:
            return
        torch = self.torch
        grown_t, grown_s = [], []
        for t, shape in enumerate(self.shapes):
            new_t = torch.empty((num_pairs, *shape), dtype=torch.float32, device=self.device)
            new_s = torch.empty_like(new_t)
            if self.num_pairs:
                new_t[: self.num_pairs] = self._targets[t][: self.num_pairs]
                new_s[: self.num_pairs] = self._sources[t][: self.num_pairs]
            grown_t.append(new_t)
            grown_s.append(new_s)
        self._targets, self._sources, self._capacity = grown_t, grown_s, int(num_pairs)

    def add(self, targets: Sequence[Any], sources: Sequence[Any], weight: float) -> None:
        """Append one pair (float32 tensors on this device, in tensor order)."""
        torch = self.torch
        if self.num_pairs == self._capacity:
            self.reserve(max(4, 2 * self._capacity))
        k = self.num_pairs
        term = torch.zeros((), dtype=torch.float64, device=self.device)
        for t, (x, y) in enumerate(zip(targets, sources)):
            self._targets[t][k].copy_(x).mul_(weight)
            self._sources[t][k].copy_(y)
            term += torch.sum(self._targets[t][k].double() * self._sources[t][k].double())
        self._identity_objective += term
        self.num_pairs = k + 1
        for g, members in enumerate(self.members):
            for mb in members:
                if mb.is_static:
                    self._accumulate(self._static[g], mb, k, k + 1, None)

    def clear(self) -> None:
        """Drop every pair, keeping the memory."""
        self.num_pairs = 0
        for s in self._static:
            s.zero_()
        self._identity_objective.zero_()
        for members in self.members:
            for mb in members:
                mb.contrib, mb.upto, mb.built_at = None, 0, []

    # ----------------------------------------------------------------------- the arithmetic
    def _accumulate(self, out: Any, mb: _Member, k0: int, k1: int, perms: Any) -> None:
        """``out += unfold_a(T[k0:k1]) @ unfold_a(π_{-a}(S[k0:k1]))ᵀ`` for member ``mb``."""
        torch = self.torch
        tgt = self._targets[mb.tensor][k0:k1]
        src = self._sources[mb.tensor][k0:k1]
        for b, h in mb.others:  # the other groups' permutations (gather along their axes)
            src = src.index_select(b + 1, perms[h])
        dims = [d for d in range(tgt.dim()) if d != mb.axis + 1]
        out += torch.tensordot(tgt, src, dims=(dims, dims))
        self.gemm_flops += 2.0 * tgt.numel() * self.sizes[self.axis_groups[mb.tensor][mb.axis]]

    def cost(self, g: int, perms: Sequence[Any], host_perms: Optional[Sequence[Any]] = None,
             assigned: Optional[Sequence[bool]] = None) -> tuple:
        """Group ``g``'s (n, n) float32 cost matrix at ``perms``.

        ``host_perms``: the same permutations as numpy arrays, which lets the dynamic terms be
        cached and corrected; without them every dynamic term is rebuilt (no host reads).
        ``assigned``: per group, whether its permutation is set yet; the dynamic terms that
        involve an unset group are left out (the greedy start). Returns the matrix and
        (full rebuilds, corrections) of dynamic terms.
        """
        dynamic = [mb for mb in self.members[g] if not mb.is_static
                   and (assigned is None or all(assigned[h] for _, h in mb.others))]
        if not dynamic:
            return self._static[g], (0, 0)
        out = self._static[g].clone()
        full = delta = 0
        for mb in dynamic:
            if host_perms is None:
                self._accumulate(out, mb, 0, self.num_pairs, perms)
                full += 1
                continue
            rebuilt = self._refresh(mb, perms, host_perms)
            full += rebuilt
            delta += not rebuilt
            out += mb.contrib
        return out, (full, delta)

    def _refresh(self, mb: _Member, perms: Sequence[Any], host_perms: Sequence[Any]) -> bool:
        """Bring ``mb``'s cached term to ``perms`` and every pair; True if it was rebuilt."""
        torch = self.torch
        changed = None
        if mb.contrib is not None and len(mb.others) == 1:
            (b, h), = mb.others
            moved = np.flatnonzero(mb.built_at[0] != host_perms[h])
            if 2 * moved.size <= host_perms[h].size:
                changed = (b, h, moved)
        elif mb.contrib is not None and all(np.array_equal(old, host_perms[h])
                                            for old, (_, h) in zip(mb.built_at, mb.others)):
            changed = (None, None, np.empty(0, dtype=np.int64))
        if changed is None:  # first build, many slices moved, or a tensor with 3+ permuted axes
            mb.contrib = torch.zeros_like(self._static[self.axis_groups[mb.tensor][mb.axis]])
            self._accumulate(mb.contrib, mb, 0, self.num_pairs, perms)
            mb.upto = self.num_pairs
            mb.built_at = [host_perms[h].copy() for _, h in mb.others]
            return True
        b, h, moved = changed
        if moved.size and mb.upto:
            # Only the slices whose source moved: Σ T[.., c, ..] ⊗ (S[.., new c, ..] − S[.., old c, ..]).
            pos = torch.from_numpy(moved).to(self.device)
            new = torch.from_numpy(host_perms[h][moved]).to(self.device)
            old = torch.from_numpy(mb.built_at[0][moved]).to(self.device)
            tgt = self._targets[mb.tensor][: mb.upto].index_select(b + 1, pos)
            src = self._sources[mb.tensor][: mb.upto]
            diff = src.index_select(b + 1, new) - src.index_select(b + 1, old)
            dims = [d for d in range(tgt.dim()) if d != mb.axis + 1]
            mb.contrib += torch.tensordot(tgt, diff, dims=(dims, dims))
            self.gemm_flops += 2.0 * tgt.numel() * self.sizes[self.axis_groups[mb.tensor][mb.axis]]
            mb.built_at[0][moved] = host_perms[h][moved]
        if mb.upto < self.num_pairs:  # pairs added since: their share at the current perms
            self._accumulate(mb.contrib, mb, mb.upto, self.num_pairs, perms)
            mb.upto = self.num_pairs
        return False

    def identity_objective(self) -> Any:
        """Exact float64 objective at the identity (a 0-d tensor on the device)."""
        return self._identity_objective

    def objective(self, perms: Sequence[Any]) -> Any:
        """Exact float64 objective at ``perms`` (a 0-d tensor on the device)."""
        torch = self.torch
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        k = self.num_pairs
        for t, axes in enumerate(self.axis_groups):
            src = self._sources[t][:k]
            for a, g in enumerate(axes):
                if g >= 0:
                    src = src.index_select(a + 1, perms[g])
            total += torch.sum(self._targets[t][:k].double() * src.double())
        return total
