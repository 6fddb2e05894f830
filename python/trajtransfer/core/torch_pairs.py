"""The matcher's arithmetic on torch tensors, on whatever device they live (the device path).

Holds the (target, source) pairs of a :class:`~trajtransfer.core.match.GradientMatcher` on their
device, stacked per tensor, and builds one group's cost matrix from them with torch ops
(gathers, the factors' small products, and one GEMM per update of an (n, n) matrix). The
coordinate descent itself is in :mod:`trajtransfer.core.descent`; the native CPU path does the
same arithmetic in C++, factored pairs included.

Cost of group g at permutations π (gather semantics, π applied to the source):
``C_g[i, j] = Σ_k Σ_(tensor w, axis a of g) <w_k T_k[w] slice i along a, π_{-a}(S_k[w]) slice j>``.
Terms of tensors whose other axes are unpermuted ("static") do not depend on π: they are summed
into one (n, n) matrix per group as pairs are added. The other ("dynamic") terms are cached when
the caller knows the permutations on the host (the LAP runs there): a cached term is extended by
the pairs added since it was built, and corrected on the slices whose permutation changed (a
full rebuild when more than half did), as the native core does.
"""

from __future__ import annotations

import bisect
import math
import time
from typing import Any, Optional, Sequence

import numpy as np

from .factored import Factored, keeps_factors, takes_factors

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

    A pair may carry a tensor as its dense gradient or as its factors
    (:class:`~trajtransfer.core.factored.Factored`, ``G = Δᵀ A``): a tensor's dense pairs are
    stacked in one store, its factored pairs kept as their (weighted Δ_t, A_t, Δ_s, A_s), and
    every cost term, correction and objective sums over both kinds.

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
        # Factors serve (n_out, n_in) tensors, up to unpermuted trailing axes of size 1.
        self._factorable = [takes_factors(shape, axes)
                            for shape, axes in zip(self.shapes, self.axis_groups)]
        self.num_pairs = 0
        self._capacity = 0
        T = len(self.shapes)
        self._targets: list = [None] * T   # per tensor: (capacity, *shape), weight folded in
        self._sources: list = [None] * T
        self._dense_before: list = [[0] for _ in range(T)]  # dense rows before pair k
        self._factor_pairs: list = [[] for _ in range(T)]   # pair indices stored as factors
        self._factors: list = [[] for _ in range(T)]        # their (w Δ_t, A_t, Δ_s, A_s)
        # While every factored pair of a tensor has the same number of rows, its factors live
        # in four (capacity, rows, units) stacks (the entries above are views): batched GEMMs
        # then replace a loop over the pairs and a copy of their factors per cost build.
        self._stacks: list = [None] * T
        self._static = [torch.zeros((n, n), dtype=torch.float32, device=self.device) for n in self.sizes]
        self._cost_buffers: list = [None] * len(self.sizes)
        # Exact objective at the identity, summed per pair as it is added (float64, on device).
        self._identity_objective = torch.zeros((), dtype=torch.float64, device=self.device)
        self.gemm_flops = 0.0
        self.add_gemm_seconds = 0.0   # static terms built by add() since the caller last reset
        self.add_gemm_flops = 0.0     # these two

    # ---------------------------------------------------------------------------- the store
    def reserve(self, num_pairs: int) -> None:
        """Room for ``num_pairs`` pairs in total without regrowth copies (a tensor whose pairs
        so far all came as factors gets its dense store when it first needs one)."""
        if num_pairs <= self._capacity:
            return
        self._capacity = int(num_pairs)
        for t in range(len(self.shapes)):
            if self._targets[t] is not None and self._targets[t].shape[0] < self._capacity:
                self._grow(t, self._capacity)
            if self._stacks[t] is not None and self._stacks[t][0].shape[1] < self._capacity:
                self._grow_stacks(t, self._capacity)

    def _grow(self, t: int, rows: int) -> None:
        torch = self.torch
        new_t = torch.empty((rows, *self.shapes[t]), dtype=torch.float32, device=self.device)
        new_s = torch.empty_like(new_t)
        used = self._dense_before[t][-1]
        if used:
            new_t[:used] = self._targets[t][:used]
            new_s[:used] = self._sources[t][:used]
        self._targets[t], self._sources[t] = new_t, new_s

    def _dense_row(self, t: int) -> int:
        """The next free row of tensor t's dense store (grown if full)."""
        used = self._dense_before[t][-1]
        store = self._targets[t]
        if store is None or used == store.shape[0]:
            self._grow(t, max(4, self._capacity, 2 * used))
        return used

    def add(self, targets: Sequence[Any], sources: Sequence[Any], weight: float) -> None:
        """Append one pair (float32 tensors or :class:`Factored` of them on this device, in
        tensor order). Factors are kept where :func:`~.factored.keeps_factors` says, else made dense."""
        torch = self.torch
        k = self.num_pairs
        term = torch.zeros((), dtype=torch.float64, device=self.device)
        for t, (x, y) in enumerate(zip(targets, sources)):
            before = self._dense_before[t]
            if keeps_factors(x, y, self._factorable[t]):
                f = self._store_factors(t, (x.delta * weight, x.inputs, y.delta, y.inputs))
                self._factor_pairs[t].append(k)
                self._factors[t].append(f)
                term += self._factor_dot(t, f, None)
                before.append(before[-1])
                continue
            x = x.dense() if isinstance(x, Factored) else x
            y = y.dense() if isinstance(y, Factored) else y
            r = self._dense_row(t)
            self._targets[t][r].copy_(x).mul_(weight)
            self._sources[t][r].copy_(y)
            term += torch.sum(self._targets[t][r].double() * self._sources[t][r].double())
            before.append(r + 1)
        self._identity_objective += term
        self.num_pairs = k + 1
        t0, flops0 = time.perf_counter(), self.gemm_flops
        for g, members in enumerate(self.members):
            self._accumulate(self._static[g], [mb for mb in members if mb.is_static], k, k + 1,
                             None)
        self.add_gemm_seconds += time.perf_counter() - t0
        self.add_gemm_flops += self.gemm_flops - flops0

    def clear(self) -> None:
        """Drop every pair, keeping the dense stores' memory."""
        self.num_pairs = 0
        for t in range(len(self.shapes)):
            self._dense_before[t] = [0]
            self._factor_pairs[t] = []
            self._factors[t] = []
        for s in self._static:
            s.zero_()
        self._identity_objective.zero_()
        for members in self.members:
            for mb in members:
                mb.contrib, mb.upto, mb.built_at = None, 0, []

    def _store_factors(self, t: int, f: tuple) -> tuple:
        """Keep one pair's factors: in tensor t's stacks while the rows agree, else as given.
        Returns them as (rows, units) tensors (views of the stacks when stacked)."""
        i = len(self._factors[t])
        stacks = self._stacks[t]
        fits = stacks is not None and all(x.shape == (s.shape[2], s.shape[0])
                                          for x, s in zip(f, stacks))
        if i == 0:
            if f[0].shape[0] != f[2].shape[0]:
                self._stacks[t] = None
                return f
            if not fits:
                stacks = self._stacks[t] = [x.new_empty((x.shape[1], max(4, self._capacity),
                                                         x.shape[0])) for x in f]
        elif not fits:
            self._stacks[t] = None  # rows differ: the per-pair loop from now on
            return f
        if i == self._stacks[t][0].shape[1]:
            self._grow_stacks(t, 2 * i)
        for s, x in zip(self._stacks[t], f):
            s[:, i].copy_(x.T)
        return tuple(s[:, i].T for s in self._stacks[t])

    def _grow_stacks(self, t: int, pairs: int) -> None:
        used = len(self._factors[t])
        grown = [s.new_empty((s.shape[0], pairs, s.shape[2])) for s in self._stacks[t]]
        for g, s in zip(grown, self._stacks[t]):
            g[:, :used] = s[:, :used]
        self._stacks[t] = grown
        # The stored entries view the old stacks: point them at the grown ones.
        self._factors[t] = [tuple(s[:, j].T for s in grown) for j in range(used)]

    def store_bytes(self) -> int:
        """Bytes held by the pairs: dense stores (their capacity) plus the kept factors."""
        total = 0
        for t in range(len(self.shapes)):
            if self._targets[t] is not None:
                total += 2 * self._targets[t].numel() * 4
            if self._stacks[t] is not None:
                total += sum(x.numel() * 4 for x in self._stacks[t])
            else:
                total += sum(sum(x.numel() for x in f) * 4 for f in self._factors[t])
        return total

    def _dense_rows(self, t: int, k0: int, k1: int) -> tuple:
        before = self._dense_before[t]
        return before[k0], before[k1]

    def _factors_in(self, t: int, k0: int, k1: int) -> Any:
        """Tensor t's factored pairs among pairs [k0, k1), unit-major: four (units, pairs, rows)
        tensors when it has stacks (views), else one such tuple per pair."""
        ks = self._factor_pairs[t]
        i0, i1 = bisect.bisect_left(ks, k0), bisect.bisect_left(ks, k1)
        if i1 <= i0:
            return []
        if self._stacks[t] is not None:
            return [tuple(s[:, i0:i1] for s in self._stacks[t])]
        return [tuple(x.T[:, None] for x in f) for f in self._factors[t][i0:i1]]

    # ----------------------------------------------------------------------- the arithmetic
    def _accumulate(self, out: Any, members: Sequence[_Member], k0: int, k1: int,
                    perms: Any) -> None:
        """``out += Σ_mb unfold_a(T[k0:k1]) @ unfold_a(π_{-a}(S[k0:k1]))ᵀ`` over ``members``
        (all along one group's axis)."""
        ops: list = []
        for mb in members:
            ops += self._operands(mb, k0, k1, perms)
        self._gemm(out, ops)

    def _gemm(self, out: Any, ops: list) -> None:
        """``out += Σ L @ R`` over (L (n, r), R (r, n)) operands, as one GEMM: the operands are
        joined along r, so the (n, n) output is read and written once, with no (n, n) temporary
        per term (on a 4096-unit group those passes cost more than the products)."""
        if not ops:
            return
        torch = self.torch
        if len(ops) == 1:
            left, right = ops[0]
        else:
            left = torch.cat([x for x, _ in ops], dim=1)
            right = torch.cat([y for _, y in ops], dim=0)
        out.addmm_(left, right)
        self.gemm_flops += 2.0 * out.shape[0] * out.shape[1] * left.shape[1]

    def _operands(self, mb: _Member, k0: int, k1: int, perms: Any) -> list:
        """GEMM operands of ``mb``'s term over pairs [k0, k1): the dense pairs unfolded along
        the member's axis, and per factor stack Σ Δ_tᵀ (A_t π(A_s)ᵀ) Δ_s along the output
        axis, Σ A_tᵀ (Δ_t π(Δ_s)ᵀ) A_s along the input axis. The factors are unit-major
        (units, pairs, rows): the permutation gathers whole rows (a gather along the last axis
        took as long as the two small products), and the sum over the pairs is one GEMM of
        inner dimension pairs × rows on a view of the stack."""
        torch = self.torch
        r0, r1 = self._dense_rows(mb.tensor, k0, k1)
        n = self.sizes[self.axis_groups[mb.tensor][mb.axis]]
        ops = []
        if r1 > r0:
            src = self._sources[mb.tensor][r0:r1]
            for b, h in mb.others:  # the other groups' permutations (gather along their axes)
                src = src.index_select(b + 1, perms[h])
            ops.append(self._unfolded(self._targets[mb.tensor][r0:r1], src, mb.axis, n))
        for dt, at, ds, as_ in self._factors_in(mb.tensor, k0, k1):
            other = self.axis_groups[mb.tensor][1 - mb.axis]  # factored: (n_out, n_in, 1, ..)
            # own: the factor along the member's axis; inner: the one the product contracts.
            own_t, inner_t, own_s, inner_s = (dt, at, ds, as_) if mb.axis == 0 else (at, dt, as_, ds)
            if other >= 0:
                inner_s = inner_s.index_select(0, perms[other])
            gram = torch.bmm(inner_t.permute(1, 2, 0), inner_s.permute(1, 0, 2))
            right = torch.bmm(gram, own_s.permute(1, 2, 0))
            _, k, rt = own_t.shape
            ops.append((own_t.reshape(n, k * rt), right.reshape(k * rt, n)))
            self.gemm_flops += 2.0 * k * rt * own_s.shape[2] * (inner_t.shape[0] + n)
        return ops

    @staticmethod
    def _unfolded(tgt: Any, src: Any, axis: int, n: int) -> tuple:
        """(n, r) and (r, n) unfoldings of dense pairs (pairs, *shape) along ``axis``: their
        product contracts every other axis and the pairs."""
        return tgt.movedim(axis + 1, 0).reshape(n, -1), src.movedim(axis + 1, 0).reshape(n, -1).T

    def _factor_dot(self, t: int, f: tuple, perms: Any) -> Any:
        """Exact float64 ``<T, π(S)>`` of one factored pair: Σ (Δ_t π(Δ_s)ᵀ) ⊙ (A_t π(A_s)ᵀ)."""
        dt, at, ds, as_ = (x.double() for x in f)
        g_out, g_in = self.axis_groups[t][:2]
        if perms is not None and g_out >= 0:
            ds = ds.index_select(1, perms[g_out])
        if perms is not None and g_in >= 0:
            as_ = as_.index_select(1, perms[g_in])
        return ((dt @ ds.T) * (at @ as_.T)).sum()

    def cost(self, g: int, perms: Sequence[Any], host_perms: Optional[Sequence[Any]] = None,
             assigned: Optional[Sequence[bool]] = None) -> tuple:
        """Group ``g``'s (n, n) float32 cost matrix at ``perms``.

        ``host_perms``: the same permutations as numpy arrays, which lets the dynamic terms be
        cached and corrected; without them every dynamic term is rebuilt (no host reads).
        ``assigned``: per group, whether its permutation is set yet; the dynamic terms that
        involve an unset group are left out (the greedy start). Returns the matrix and
        (full rebuilds, corrections) of dynamic terms.
        """
        torch = self.torch
        dynamic = [mb for mb in self.members[g] if not mb.is_static
                   and (assigned is None or all(assigned[h] for _, h in mb.others))]
        if not dynamic:
            return self._static[g], (0, 0)
        # One buffer per group, reused by every visit: a fresh (n, n) tensor per visit costs
        # its page faults on the CPU. Callers use the matrix before the group's next cost().
        if self._cost_buffers[g] is None:
            self._cost_buffers[g] = torch.empty_like(self._static[g])
        out = self._cost_buffers[g]
        if host_perms is None:
            out.copy_(self._static[g])
            self._accumulate(out, dynamic, 0, self.num_pairs, perms)
            return out, (len(dynamic), 0)
        full = 0
        for mb in dynamic:
            full += self._refresh(mb, perms, host_perms)
        # static + the cached terms in one pass over the matrix (a copy then adds took two).
        torch.add(self._static[g], dynamic[0].contrib, out=out)
        for mb in dynamic[1:]:
            out += mb.contrib
        return out, (full, len(dynamic) - full)

    def _refresh(self, mb: _Member, perms: Sequence[Any], host_perms: Sequence[Any]) -> bool:
        """Bring ``mb``'s cached term to ``perms`` and every pair; True if it was rebuilt."""
        torch = self.torch
        changed = None
        if mb.contrib is not None and len(mb.others) == 1:
            (b, h), = mb.others
            moved = np.flatnonzero(mb.built_at[0] != host_perms[h])
            if 2 * moved.size <= host_perms[h].size and moved.size <= self._correction_limit(mb):
                changed = (b, h, moved)
        elif mb.contrib is not None and all(np.array_equal(old, host_perms[h])
                                            for old, (_, h) in zip(mb.built_at, mb.others)):
            changed = (None, None, np.empty(0, dtype=np.int64))
        if changed is None:  # first build, many slices moved, or a tensor with 3+ permuted axes
            if mb.contrib is None:
                mb.contrib = torch.zeros_like(self._static[self.axis_groups[mb.tensor][mb.axis]])
            else:  # the same buffer again: a fresh one costs its page faults
                mb.contrib.zero_()
            self._accumulate(mb.contrib, [mb], 0, self.num_pairs, perms)
            mb.upto = self.num_pairs
            mb.built_at = [host_perms[h].copy() for _, h in mb.others]
            return True
        b, h, moved = changed
        if moved.size and mb.upto:
            self._correct(mb, b, moved, host_perms[h][moved], mb.built_at[0][moved])
            mb.built_at[0][moved] = host_perms[h][moved]
        if mb.upto < self.num_pairs:  # pairs added since: their share at the current perms
            self._accumulate(mb.contrib, [mb], mb.upto, self.num_pairs, perms)
            mb.upto = self.num_pairs
        return False

    def _correction_limit(self, mb: _Member) -> float:
        """Most moved slices for which a correction beats a rebuild, on top of the half rule:
        a factored pair's rebuild costs about rows × n², its correction moved × n²."""
        if self._dense_before[mb.tensor][mb.upto] or not self._factor_pairs[mb.tensor]:
            return math.inf
        return max(f[0].shape[0] for f in self._factors[mb.tensor])

    def _correct(self, mb: _Member, b: int, moved: Any, new: Any, old: Any) -> None:
        """``contrib += Σ T[.., c, ..] ⊗ (S[.., new c, ..] − S[.., old c, ..])`` over the slices
        c whose source moved (along axis b), for pairs [0, upto)."""
        torch = self.torch
        pos = torch.from_numpy(moved).to(self.device)
        new = torch.from_numpy(new).to(self.device)
        old = torch.from_numpy(old).to(self.device)
        n = self.sizes[self.axis_groups[mb.tensor][mb.axis]]
        r0, r1 = self._dense_rows(mb.tensor, 0, mb.upto)
        ops = []
        if r1 > r0:
            tgt = self._targets[mb.tensor][r0:r1].index_select(b + 1, pos)
            src = self._sources[mb.tensor][r0:r1]
            diff = src.index_select(b + 1, new) - src.index_select(b + 1, old)
            ops.append(self._unfolded(tgt, diff, mb.axis, n))
        # The moved slices of the factored pairs, made dense: rows (b = 0) or columns (b = 1).
        for dt, at, ds, as_ in self._factors_in(mb.tensor, 0, mb.upto):
            moved_t, own_t, moved_s, own_s = (dt, at, ds, as_) if b == 0 else (at, dt, as_, ds)
            left = torch.bmm(moved_t.index_select(0, pos).permute(1, 0, 2), own_t.permute(1, 2, 0))
            diff = moved_s.index_select(0, new) - moved_s.index_select(0, old)
            right = torch.bmm(diff.permute(1, 0, 2), own_s.permute(1, 2, 0))
            ops.append((left.reshape(-1, n).T, right.reshape(-1, n)))
            self.gemm_flops += 2.0 * dt.shape[1] * moved.size * n * (dt.shape[2] + ds.shape[2])
        self._gemm(mb.contrib, ops)

    def identity_objective(self) -> Any:
        """Exact float64 objective at the identity (a 0-d tensor on the device)."""
        return self._identity_objective

    def objective(self, perms: Sequence[Any]) -> Any:
        """Exact float64 objective at ``perms`` (a 0-d tensor on the device)."""
        torch = self.torch
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        k = self.num_pairs
        for t, axes in enumerate(self.axis_groups):
            r0, r1 = self._dense_rows(t, 0, k)
            if r1 > r0:
                src = self._sources[t][r0:r1]
                for a, g in enumerate(axes):
                    if g >= 0:
                        src = src.index_select(a + 1, perms[g])
                total += torch.sum(self._targets[t][r0:r1].double() * src.double())
            for f in self._factors[t]:
                total += self._factor_dot(t, f, perms)
        return total
