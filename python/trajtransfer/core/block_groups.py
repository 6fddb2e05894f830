"""The matcher's arithmetic for specs with block-structured groups (attention heads), in torch.

A spec with :class:`~trajtransfer.core.block_axes.Blocks` / ``Concat`` entries is lowered to
*pieces*: every packed segment of a tensor becomes a piece, and every block axis of length H·d is
reshaped into a block axis (H) and a position axis (d). A piece's axes then carry a plain group,
a block group σ, or an inner group τ (one permutation of d per block; row h permutes the
positions of source block h, see :mod:`trajtransfer.core.block_axes`).

Cost matrices, each with every other group held fixed (coordinate descent,
:mod:`trajtransfer.core.descent`, whose rules this path follows):

* a plain group: as :mod:`trajtransfer.core.torch_pairs`;
* a block group: ``C[i, h] = Σ <T block i, S block h with its positions permuted by τ[h]>``,
  summed over every piece and pair: the inner products of head i of the target with head h of
  the source, with the within-head permutations held fixed;
* an inner group: H independent (d, d) problems, one per source block h, matched against the
  target block i with σ[i] = h: ``C[h, j, j'] = Σ <T[i, j], S[h, j']>``; one batched LAP.

The greedy start (``init="greedy"``) visits a block group before its inner groups, so its cost
then takes for each (i, h) the best within-head alignment (one LAP of size d per head pair and
inner group) instead of the unset ones; its inner groups are then solved with σ fixed. The same
best alignments give :meth:`BlockPairs.joint_move`, the exact optimum over a block group and its
inner groups together, which the block path runs whenever the descent converges.

Every visit rebuilds its cost from all pairs (no cached terms): block specs are small models.
The native core does not know block groups, so these specs always take this torch path
(:mod:`trajtransfer.core.block_path`), also for CPU tensors (``backend="native"`` refuses them).
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .block_axes import Blocks, Concat

__all__ = ["BlockPairs", "BlockLap"]


class _Piece:
    """One segment of a tensor, reshaped so that every block axis is (blocks, positions)."""

    def __init__(self, tensor: int, index: tuple, shape: tuple, axes: list) -> None:
        self.tensor = tensor
        self.index = index      # slices into the tensor
        self.shape = shape      # reshaped: a block axis becomes two axes
        self.axes = axes        # per reshaped axis: None | ("plain", g) | ("outer", g, inner) | ("inner", g)
        self.groups = {ax[1] for ax in axes if ax is not None}


def _lower(shape: tuple, entries: Sequence[Any], gidx: Mapping[str, int], t: int) -> list:
    """The pieces of one tensor (group names resolved to indices)."""
    choices = []
    for length, entry in zip(shape, entries):
        parts = entry.parts if isinstance(entry, Concat) else (entry,)
        seg = length // len(parts)
        choices.append([(slice(k * seg, (k + 1) * seg), p, seg) for k, p in enumerate(parts)])
    pieces = []
    for combo in itertools.product(*choices):
        index, pshape, axes = [], [], []
        for sl, p, seg in combo:
            index.append(sl)
            if isinstance(p, Blocks):
                inner = gidx[p.inner] if p.inner is not None else None
                pshape += [p.count, seg // p.count]
                axes += [("outer", gidx[p.group], inner),
                         ("inner", inner) if inner is not None else None]
            else:
                pshape.append(seg)
                axes.append(("plain", gidx[p]) if p is not None else None)
        pieces.append(_Piece(t, tuple(index), tuple(pshape), axes))
    return pieces


class BlockPairs:
    """Weighted (target, source) pairs of a block spec as stacked float32 pieces on one device.

    The interface :func:`~trajtransfer.core.descent.coordinate_descent` uses: ``sizes``,
    ``neighbours``, :meth:`cost`, :meth:`objective`, :meth:`identity_objective`, ``gemm_flops``.
    An inner group's cost is ``(H, d, d)`` and its permutation ``(H, d)``.
    """

    def __init__(self, groups: Sequence[str], sizes: Mapping[str, int], shapes: Sequence[tuple],
                 entries: Sequence[Sequence[Any]], inner_of: Mapping[str, str], device: Any) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        gidx = {g: i for i, g in enumerate(groups)}
        self.sizes = [int(sizes[g]) for g in groups]
        self.outer_of = {gidx[u]: gidx[o] for u, o in inner_of.items()}
        self.inners = {o: sorted(u for u, oo in self.outer_of.items() if oo == o)
                       for o in set(self.outer_of.values())}
        self.shapes = [tuple(int(s) for s in sh) for sh in shapes]
        self.pieces = [pc for t, (sh, en) in enumerate(zip(self.shapes, entries))
                       for pc in _lower(sh, en, gidx, t)]
        neighbours: list = [set() for _ in groups]
        for pc in self.pieces:
            for g in pc.groups:
                neighbours[g] |= pc.groups - {g}
        self.neighbours = [sorted(nb) for nb in neighbours]
        self.num_pairs = 0
        self._targets: list = [None] * len(self.pieces)
        self._sources: list = [None] * len(self.pieces)
        self._identity = torch.zeros((), dtype=torch.float64, device=self.device)
        self.gemm_flops = 0.0

    # ---------------------------------------------------------------------------- the store
    def reserve(self, num_pairs: int) -> None:
        if self.num_pairs and num_pairs > self._targets[0].shape[0]:
            self._grow(int(num_pairs))

    def _grow(self, rows: int) -> None:
        for p, pc in enumerate(self.pieces):
            for store in (self._targets, self._sources):
                new = self.torch.empty((rows, *pc.shape), dtype=self.torch.float32,
                                       device=self.device)
                if store[p] is not None:
                    new[:self.num_pairs] = store[p][:self.num_pairs]
                store[p] = new

    def add(self, targets: Sequence[Any], sources: Sequence[Any], weight: float) -> None:
        """Append one pair (float32 tensors on this device, in tensor order)."""
        torch = self.torch
        k = self.num_pairs
        if self._targets[0] is None or k == self._targets[0].shape[0]:
            self._grow(max(4, 2 * k))
        term = torch.zeros((), dtype=torch.float64, device=self.device)
        for p, pc in enumerate(self.pieces):
            x = targets[pc.tensor][pc.index].reshape(pc.shape)
            y = sources[pc.tensor][pc.index].reshape(pc.shape)
            self._targets[p][k].copy_(x).mul_(weight)
            self._sources[p][k].copy_(y)
            term += torch.sum(self._targets[p][k].double() * self._sources[p][k].double())
        self._identity += term
        self.num_pairs = k + 1

    def clear(self) -> None:
        self.num_pairs = 0
        self._identity.zero_()

    def store_bytes(self) -> int:
        return sum(2 * t.numel() * 4 for t in self._targets if t is not None)

    # ----------------------------------------------------------------------- the arithmetic
    def _source(self, p: int, perms: Sequence[Any], skip: Optional[int]) -> Any:
        """Piece p's sources with every group but ``skip`` applied (gather semantics).

        Skipping a block group leaves its blocks in source order but still permutes the positions
        within each by τ[h]; skipping an inner group applies σ alone (target-aligned blocks).
        """
        torch = self.torch
        pc = self.pieces[p]
        src = self._sources[p][:self.num_pairs]
        for a, ax in enumerate(pc.axes):
            if ax is None or ax[0] == "inner" or ax[1] == skip and ax[0] == "plain":
                continue
            if ax[0] == "plain":
                src = src.index_select(a + 1, perms[ax[1]])
                continue
            _, o, u = ax
            sigma = None if o == skip else perms[o]
            tau = None if u is None or u == skip else perms[u]
            if sigma is not None:
                src = src.index_select(a + 1, sigma)
            if tau is not None:
                rows = tau if sigma is None else tau[sigma]  # τ of the source block now at i
                view = [1] * src.dim()
                view[a + 1], view[a + 2] = rows.shape
                src = torch.gather(src, a + 2, rows.reshape(view).expand(src.shape))
        return src

    def _axis_of(self, pc: _Piece, g: int) -> int:
        return next(a for a, ax in enumerate(pc.axes) if ax is not None and ax[1] == g)

    def _included(self, pc: _Piece, g: int, assigned: Optional[Sequence[bool]]) -> bool:
        if assigned is None:
            return True
        others = pc.groups - {g} - set(self.inners.get(g, ()))
        return all(assigned[h] for h in others)

    def cost(self, g: int, perms: Sequence[Any], host_perms: Optional[Sequence[Any]] = None,
             assigned: Optional[Sequence[bool]] = None, aligns: Optional[dict] = None) -> tuple:
        """Group ``g``'s cost: (n, n), or (H, d, d) for an inner group; and (full builds, 0).

        With ``assigned`` leaving every inner group of block group ``g`` unset, each head pair
        takes its best within-head alignment (their maximisers go to ``aligns``)."""
        if g in self.outer_of:
            return self._inner_cost(g, perms, assigned), (1, 0)
        torch = self.torch
        n = self.sizes[g]
        out = torch.zeros((n, n), dtype=torch.float32, device=self.device)
        best = assigned is not None and g in self.inners and not any(
            assigned[u] for u in self.inners[g])
        builds = 0
        for p, pc in enumerate(self.pieces):
            if g not in pc.groups or not self._included(pc, g, assigned):
                continue
            a = self._axis_of(pc, g)
            inner = pc.axes[a][2] if pc.axes[a][0] == "outer" else None
            if best and inner is not None:
                continue  # the best-alignment term below
            tgt = self._targets[p][:self.num_pairs]
            src = self._source(p, perms, g)
            dims = [d for d in range(tgt.dim()) if d != a + 1]
            out += torch.tensordot(tgt, src, dims=(dims, dims))
            self.gemm_flops += 2.0 * tgt.numel() * n
            builds += 1
        if best and assigned is not None:
            out += self._best_alignment(g, perms, assigned, aligns)
        return out, (builds, 0)

    def _pair_blocks(self, p: int, a: int, perms: Sequence[Any], skip_outer: int,
                     skip_inner: int) -> tuple:
        """Piece p's targets and sources as (H, d, rest) with blocks and positions in place."""
        tgt = self._targets[p][:self.num_pairs]
        src = self._source_without(p, perms, skip_outer, skip_inner)
        h, d = tgt.shape[a + 1], tgt.shape[a + 2]
        t = tgt.movedim((a + 1, a + 2), (0, 1)).reshape(h, d, -1)
        s = src.movedim((a + 1, a + 2), (0, 1)).reshape(h, d, -1)
        return t, s

    def _source_without(self, p: int, perms: Sequence[Any], o: int, u: int) -> Any:
        """Sources with every group applied except block group ``o`` and inner group ``u``."""
        local = list(perms)
        local[u] = self.torch.arange(self.sizes[u], device=self.device).expand(self.sizes[o], -1)
        return self._source(p, local, o)

    def _best_alignment(self, g: int, perms: Sequence[Any], assigned: Sequence[bool],
                        aligns: Optional[dict] = None) -> Any:
        """``C[i, h] = Σ_inner max_τ Σ <T block i, S block h permuted by τ>`` (greedy start and
        joint moves); ``aligns`` receives each inner group's maximisers, ``(n, n, d)``."""
        from .lap import linear_sum_assignment_batch

        torch = self.torch
        n = self.sizes[g]
        total = torch.zeros((n, n), dtype=torch.float64)
        for u in self.inners[g]:
            d = self.sizes[u]
            m = torch.zeros((n, n, d, d), dtype=torch.float32, device=self.device)
            for p, pc in enumerate(self.pieces):
                if u not in pc.groups or not self._included(pc, g, assigned):
                    continue
                a = self._axis_of(pc, g)
                t, s = self._pair_blocks(p, a, perms, g, u)
                m += torch.einsum("ijx,hkx->ihjk", t, s)
                self.gemm_flops += 2.0 * t.numel() * n * d
            host = m.reshape(n * n, d, d).cpu().numpy()
            cols = linear_sum_assignment_batch(host, maximize=True)
            best = np.take_along_axis(host, cols[:, :, None], -1).sum(axis=(1, 2), dtype=np.float64)
            total += torch.from_numpy(best.reshape(n, n))
            if aligns is not None:
                aligns[u] = cols.reshape(n, n, d)
        return total.to(device=self.device, dtype=torch.float32)

    def joint_move(self, g: int, perms: list, tol: float) -> Optional[float]:
        """Move block group ``g`` and its inner groups jointly to their exact optimum with every
        other group held fixed; returns the gain, or None (perms unchanged) without a gain
        above ``tol``.

        For each target head i and source head h the best within-head alignment is one LAP of
        size d per inner group; the heads then take the LAP over those best values. Both this
        cost and the inner-fixed one leave out the same terms, so their difference is the exact
        change of the objective (up to float32 cost entries).
        """
        from .lap import linear_sum_assignment

        torch = self.torch
        n = self.sizes[g]
        held, _ = self.cost(g, perms)
        before = float(held.double().gather(1, perms[g][:, None]).sum())
        assigned = [u not in self.inners[g] for u in range(len(self.sizes))]
        aligns: dict = {}
        joint, _ = self.cost(g, perms, None, assigned, aligns)
        host = joint.double().cpu().numpy()
        _, sigma = linear_sum_assignment(host, maximize=True)
        after = float(host[np.arange(n), sigma].sum())
        if not after - before > tol:
            return None
        perms[g] = torch.from_numpy(sigma.astype(np.int64)).to(self.device)
        for u, cols in aligns.items():
            tau = np.empty((n, self.sizes[u]), dtype=np.int64)
            tau[sigma] = cols[np.arange(n), sigma]  # row h = σ[i]: source head h's alignment
            perms[u] = torch.from_numpy(tau).to(self.device)
        return after - before

    def _inner_cost(self, u: int, perms: Sequence[Any], assigned: Optional[Sequence[bool]]) -> Any:
        """(H, d, d): row block h is source block h, matched to the target block i with σ[i] = h."""
        torch = self.torch
        o = self.outer_of[u]
        h, d = self.sizes[o], self.sizes[u]
        out = torch.zeros((h, d, d), dtype=torch.float32, device=self.device)
        for p, pc in enumerate(self.pieces):
            if u not in pc.groups or not self._included(pc, u, assigned):
                continue
            a = self._axis_of(pc, o)
            tgt = self._targets[p][:self.num_pairs]
            src = self._source(p, perms, u)  # σ applied: target-aligned blocks
            t = tgt.movedim((a + 1, a + 2), (0, 1)).reshape(h, d, -1)
            s = src.movedim((a + 1, a + 2), (0, 1)).reshape(h, d, -1)
            out += torch.bmm(t, s.transpose(1, 2))
            self.gemm_flops += 2.0 * t.numel() * d
        # Target block i holds source block σ[i]: index the problems by the source block.
        return out[torch.argsort(perms[o])]

    def identity_objective(self) -> Any:
        return self._identity

    def objective(self, perms: Sequence[Any]) -> Any:
        """Exact float64 objective at ``perms`` (a 0-d tensor on the device)."""
        torch = self.torch
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for p in range(len(self.pieces)):
            src = self._source(p, perms, None)
            total += torch.sum(self._targets[p][:self.num_pairs].double() * src.double())
        return total


class BlockLap:
    """The device path's LAP placement for plain groups, batched LAPs for inner groups."""

    def __init__(self, sizes: list, inner: set, device: Any) -> None:
        from .device_lap import CudaLap, HostLap, cuda_lap_available

        self.torch = __import__("torch")
        self.device = device
        self.inner = inner
        on_device = cuda_lap_available(device)
        self.base: Any = (CudaLap if on_device else HostLap)(sizes, device)
        self.synchronous = self.base.synchronous

    def forget(self, g: int) -> None:
        self.base.forget(g)

    def to_host(self, cost: Any) -> np.ndarray:
        if cost.dim() == 3:
            return cost.contiguous().cpu().numpy()
        return self.base.to_host(cost)

    def solve(self, g: int, cost: Any) -> Any:
        if g not in self.inner:
            return self.base.solve(g, cost)
        if self.synchronous:
            from .lap import linear_sum_assignment_batch

            return linear_sum_assignment_batch(cost, maximize=True)
        from .device_lap import cuda_batch_solve

        cols, _, status = cuda_batch_solve(cost, None)
        return cols, status.abs().amax()[None]
