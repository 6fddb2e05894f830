"""Permutation matching (Git Re-Basin weight matching, generalised to K weighted pairs).

Coordinate descent over the permutation groups of a :class:`~trajtransfer.core.spec.PermutationSpec`:
each visited group gets an exact linear assignment (maximise) on its cost matrix with every other
group held fixed, until a sweep stops improving. The work runs in one native call per solve
(``trajtransfer._core.match``) with the GIL released.

Conventions
-----------
* The permutation is applied to the **source** side (``params_b`` / the second dict of a pair),
  with gather semantics: ``apply_permutation(spec, result.perms, source)`` has new slice
  ``i`` = old slice ``perm[i]`` along every axis of the group. For a planted
  ``b = apply_permutation(spec, pi, a)``, ``match_weights(spec, a, b).perms`` is the inverse of
  ``pi`` (then ``apply_permutation(spec, result.perms, b) == a``).
* Objective: ``sum_k w_k sum_tensors <target_k, pi(source_k)>`` over the non-buffer tensors,
  computed in float64 from the float32 values. Tensors are stored as float32.
* Sweep order: each sweep visits the groups in the order ``random.Random(seed).shuffle`` gives
  ``spec.groups`` (bit-for-bit CPython's generator, re-seeded per solve), so a textbook Python
  matcher with the same seed takes the same path.
* ``tol`` is relative: stop after a sweep whose gain is ``<= tol * max(1, |objective|)``.
* ``history[0]`` is the exact objective at the start; ``history[s]`` the objective after sweep
  ``s``, tracked from the float32 cost matrices (relative error ~1e-6); ``objective`` is
  recomputed exactly at the end.

>>> import numpy as np
>>> from trajtransfer.core.spec import mlp_spec
>>> spec = mlp_spec(1, bias=False)
>>> a = {"layers.0.weight": np.eye(3, 2, dtype=np.float32), "layers.1.weight": np.ones((1, 3))}
>>> b = {"layers.0.weight": a["layers.0.weight"][[2, 0, 1]], "layers.1.weight": np.ones((1, 3))}
>>> match_weights(spec, a, b).perms["c1"].tolist()
[1, 2, 0]
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
import re
import threading
import time
import weakref
from dataclasses import dataclass, field
from collections.abc import Mapping, Sequence  # isinstance on typing's aliases is slower
from typing import Any, Iterator, Optional, Union

import numpy as np

from .._arrays import float32_view, is_torch_tensor, to_numpy
from .._native import _core
from .block_axes import entry_groups
from .descent import DescentStart
from .factored import Factored, keeps_factors, takes_factors
from .spec import PermutationSpec, validate_spec

__all__ = [
    "MatchResult",
    "match_weights",
    "match_gradients",
    "GradientMatcher",
    "set_num_threads",
]


@dataclass
class MatchResult:
    """Outcome of a matching solve.

    Attributes
    ----------
    perms : dict[str, numpy.ndarray]
        Group name -> (n_p,) int64 permutation, gather semantics (applied to the source side).
    objective : float
        ``sum_k w_k sum_tensors <target_k, pi(source_k)>`` at ``perms``, exact float64.
    history : list[float]
        ``history[0]``: the objective at the start; ``history[s]``: after sweep ``s`` (tracked
        from float32 cost matrices, so equal to ``objective`` up to ~1e-6 relative).
    sweeps : int
        Sweeps run.
    converged : bool
        True if the last sweep gained ``<= tol * max(1, |objective|)`` (False: hit max_sweeps).
    timings : dict[str, float]
        Seconds: ``'gemm'`` (cost-matrix building, including the GEMMs that ``add`` ran since
        the previous solve: static terms, and new pairs' shares of cached dynamic terms),
        ``'lap'`` (assignment solves), ``'add'`` (wall time of the ``add`` calls since the
        previous solve), ``'solve'`` (wall time of the
        solve) and ``'total'`` (``add + solve``).
    counters : dict[str, int | float]
        ``'lap_solves'`` (groups actually solved: groups whose coupled groups did not change are
        skipped exactly), ``'lap_unchanged'`` (solves that kept the permutation),
        ``'member_builds'`` / ``'delta_builds'`` ((group, tensor) cost terms
        rebuilt by a full GEMM / corrected on the rows whose gather changed) and
        ``'gemm_flops'``.
    """

    perms: dict
    objective: float
    history: list
    sweeps: int
    converged: bool
    timings: dict
    counters: dict = field(default_factory=dict)


def set_num_threads(num_threads: int) -> int:
    """Set how many threads build the matcher's cost matrices.

    Large GEMMs (>= 2e8 flops) are split statically by output rows over this many threads, each
    calling trajtransfer's OpenBLAS single-threaded; smaller ones run on the calling thread.
    (OpenBLAS's own threading busy-waits between blocks and was measured 4x slower than one
    thread on a busy 2-core machine, and its idle spinning competes with torch's pool.)
    Default: the hardware thread count. Process-wide; numpy's and torch's BLAS are unaffected.

    Parameters
    ----------
    num_threads : int
        Threads to use; ``<= 0`` leaves the setting unchanged (so ``set_num_threads(0)`` queries).

    Returns
    -------
    int
        The thread count in effect.
    """
    return int(_core.match.set_num_threads(int(num_threads)))


def _as_float32(x: Any, name: str) -> np.ndarray:
    arr, _ = to_numpy(x, name)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


class _CompiledSpec:
    """The spec resolved against concrete shapes: group order, matched tensors, sizes."""

    def __init__(self, spec: PermutationSpec, params: Mapping[str, Any], what: str) -> None:
        if not isinstance(spec, PermutationSpec):
            raise TypeError(f"spec must be a PermutationSpec, got {type(spec).__name__}")
        if not isinstance(params, Mapping):
            raise TypeError(f"{what} must be a mapping from tensor name to array, got "
                            f"{type(params).__name__}")
        sizes = validate_spec(spec, params, require_all=True)
        self.spec = spec
        self.groups: list = list(spec.perm_to_axes)
        missing = [g for g in self.groups if g not in sizes]
        if missing:
            raise ValueError(f"group(s) {missing} are carried by no tensor of {what}, so their "
                             "sizes are unknown")
        self.sizes: dict = {g: int(sizes[g]) for g in self.groups}
        empty = [g for g in self.groups if self.sizes[g] < 1]
        if empty:
            raise ValueError(f"group(s) {empty} have size 0 in {what}: a permutation group needs "
                             "at least one unit")
        # Matched tensors: every non-buffer tensor of the spec, in spec order.
        self.names: list = [n for n in spec.axes_to_perm if n not in spec.buffers]
        self.shapes: dict = {n: tuple(int(s) for s in params[n].shape) for n in self.names}
        self._name_set = frozenset(self.names)
        self._shape_list = [self.shapes[n] for n in self.names]
        self.perm_shapes: dict = {g: spec.perm_shape(g, self.sizes) for g in self.groups}
        gidx = {g: i for i, g in enumerate(self.groups)}
        self.axis_groups = []
        for n in self.names:
            axes = spec.axes_to_perm[n]
            used = [g for e in axes for g in entry_groups(e)]
            dup = sorted({g for g in used if used.count(g) > 1})
            if dup:
                raise ValueError(f"tensor {n!r} carries group(s) {dup} on more than one axis "
                                 f"({axes}); a group may permute each tensor along one axis only")
            # Structured entries (block groups) are lowered by the block path, not listed here.
            self.axis_groups.append([gidx[g] if isinstance(g, str) else -1 for g in axes])

    def arrays(self, params: Mapping[str, Any], what: str) -> list:
        """Validate ``params`` against the compiled shapes; return float32 arrays in order."""
        if not isinstance(params, Mapping):
            raise TypeError(f"{what} must be a mapping from tensor name to array, got "
                            f"{type(params).__name__}")
        # Fast path (FGMT adds one pair per step): exactly the matched tensors, each with the
        # first pair's shape, is a dict that validate_spec accepted already, and contiguous
        # float32 CPU tensors / arrays cross without a copy or a conversion. Anything else gets
        # the full check and its messages.
        if params.keys() == self._name_set:
            views = [float32_view(params[n]) for n in self.names]
            if all(v is not None and v.shape == shape for v, shape in zip(views, self._shape_list)):
                return views
        same = (params.keys() == self._name_set
                and all(self._same_shape(params[n], n) for n in self.names))
        if not same:
            validate_spec(self.spec, params, require_all=True)
        out = []
        for n in self.names:
            x = params[n]
            arr = float32_view(x) if same else None
            if arr is None:
                shape = tuple(int(s) for s in x.shape)
                if shape != self.shapes[n]:
                    raise ValueError(f"{what}[{n!r}] has shape {shape}, expected {self.shapes[n]} "
                                     "(the shape of the first pair added)")
                arr = _as_float32(x, f"{what}[{n!r}]")
            out.append(arr)
        return out

    def _same_shape(self, x: Any, name: str) -> bool:
        shape = getattr(x, "shape", None)  # tuple or torch.Size (a tuple); else the full check
        return isinstance(shape, tuple) and shape == self.shapes[name]

    def check_finite(self, arrays: list, what: str) -> None:
        for n, a in zip(self.names, arrays):
            if not all(np.isfinite(x).all() for x in (a if isinstance(a, tuple) else (a,))):
                raise ValueError(f"{what}[{n!r}] contains NaN or infinite values")

    def init_list(self, init: Mapping[str, Any], check_perm: bool = True) -> list:
        """Validated int64 copies of ``init`` in group order (never aliases; bug B6).

        ``check_perm=False`` skips the (sort-based) permutation check for callers whose native
        call re-checks it (``solve``); they call again with the check to word the error.
        """
        if not isinstance(init, Mapping):
            raise TypeError(f"init must be a mapping from group name to permutation, got "
                            f"{type(init).__name__}")
        unknown = [g for g in init if g not in self.sizes]
        if unknown:
            raise ValueError(f"init names group(s) {unknown} that the spec does not define "
                             f"(groups: {self.groups})")
        out = []
        for g in self.groups:
            n, shape = self.sizes[g], self.perm_shapes[g]
            if g not in init or init[g] is None:
                out.append(np.ascontiguousarray(np.broadcast_to(np.arange(n, dtype=np.int64), shape)))
                continue
            p = init[g]
            arr = p.detach().cpu().numpy() if is_torch_tensor(p) else np.asarray(p)
            if arr.dtype.kind not in "iu":
                raise TypeError(f"init[{g!r}] must hold integers, got dtype {arr.dtype}")
            if arr.shape != shape:
                what = "the group's size" if len(shape) == 1 else "block count, block length"
                raise ValueError(f"init[{g!r}] must have shape {shape} ({what}), got "
                                 f"{arr.shape}")
            arr = np.array(arr, dtype=np.int64, copy=True)
            if check_perm and not np.array_equal(np.sort(arr, axis=-1),
                                                 np.broadcast_to(np.arange(n), shape)):
                raise ValueError(f"init[{g!r}] is not a permutation of 0..{n - 1}"
                                 + ("" if len(shape) == 1 else " in every row"))
            out.append(arr)
        return out


_BACKENDS = ("auto", "native", "torch")


def _overflow_message(group: str) -> str:
    return (f"the cost matrix of group {group!r} has non-finite entries: the pairs' products "
            "overflow float32 (rescale the tensors)")


def _integer(value: Any, name: str) -> int:
    """``value`` as an int, refusing floats and other non-integers (1.5 sweeps is a mistake)."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
_STARTS = ("identity", "greedy")


def _physical_memory_bytes() -> float:
    """This machine's RAM, or infinity where the OS does not say."""
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return math.inf


def _placement(x: Any) -> Any:
    """The device a matched tensor lives on: a torch.device, or "cpu" for numpy and the like."""
    return x.device if is_torch_tensor(x) else "cpu"


def _same_place(a: Any, b: Any) -> bool:
    return str(a) == str(b)


def _has_factors(params: Mapping[str, Any]) -> bool:
    return any(isinstance(x, Factored) for x in params.values())


class _NativePath:
    """Pairs and descent in the native core (numpy arrays and CPU tensors), factored pairs
    included: a tensor the rule keeps as factors crosses as a (delta, inputs) tuple."""

    def __init__(self, compiled: _CompiledSpec) -> None:
        self.compiled = compiled
        self.native = _core.match.Matcher(
            [compiled.sizes[g] for g in compiled.groups],
            [list(compiled.shapes[n]) for n in compiled.names],
            compiled.axis_groups,
        )
        self._factorable = [takes_factors(compiled.shapes[n], axes)
                            for n, axes in zip(compiled.names, compiled.axis_groups)]
        self.store_bytes = 0  # float32 pairs and factors added since the last clear

    @property
    def num_pairs(self) -> int:
        return int(self.native.num_pairs)

    def _with_factors(self, target: Mapping[str, Any], source: Mapping[str, Any]) -> tuple:
        """Both sides in tensor order: float32 arrays, and (delta, inputs) tuples where the
        factors are kept."""
        compiled = self.compiled
        for params in (target, source):
            if params.keys() != compiled._name_set:
                validate_spec(compiled.spec, params, require_all=True)
        ts: list = []
        ss: list = []
        for n, factorable in zip(compiled.names, self._factorable):
            x, y = target[n], source[n]
            for what, v in (("target", x), ("source", y)):
                shape = tuple(int(s) for s in v.shape)
                if shape != compiled.shapes[n]:
                    raise ValueError(f"{what}[{n!r}] has shape {shape}, expected "
                                     f"{compiled.shapes[n]} (the shape of the first pair added)")
            keep = keeps_factors(x, y, factorable)
            for what, v, out in (("target", x, ts), ("source", y, ss)):
                label = f"{what}[{n!r}]"
                if keep:
                    out.append((_as_float32(v.delta, f"{label}.delta"),
                                _as_float32(v.inputs, f"{label}.inputs")))
                else:
                    out.append(_as_float32(v.dense() if isinstance(v, Factored) else v, label))
        return ts, ss

    def add(self, target: Mapping[str, Any], source: Mapping[str, Any], weight: float) -> None:
        compiled = self.compiled
        if _has_factors(target) or _has_factors(source):
            ts, ss = self._with_factors(target, source)
        else:
            ts = compiled.arrays(target, "target")
            ss = compiled.arrays(source, "source")
        try:
            self.native.add(ts, ss, weight)
        except ValueError as exc:
            if "NaN" in str(exc):  # name the tensor (the native re-check only knows its index)
                compiled.check_finite(ts, "target")
                compiled.check_finite(ss, "source")
            raise
        self.store_bytes += 4 * sum(sum(x.size for x in (a if isinstance(a, tuple) else (a,)))
                                    for a in ts + ss)

    def reserve(self, num_pairs: int) -> None:
        self.native.reserve(num_pairs)

    def clear_pairs(self) -> None:
        self.native.clear_pairs()
        self.store_bytes = 0

    def solve(self, init: Any, use_previous: bool, warm_start: bool, max_sweeps: int, tol: float,
              seed: int, exact_objective: bool) -> dict:
        # The native solve checks that each init is a permutation before it changes anything;
        # only then is the check redone here, to name the group in the error.
        named = isinstance(init, str)
        init_list = None if init is None or named else self.compiled.init_list(init, check_perm=False)
        try:
            r = self.native.solve(init_list, use_previous, warm_start, max_sweeps, tol, seed,
                                  exact_objective, init == "greedy")
        except ValueError as exc:
            if init_list is not None and "not a permutation" in str(exc):
                self.compiled.init_list(init)
            failed = re.search(r"assignment solver failed on group #(\d+)", str(exc))
            if failed:  # finite pairs whose float32 products overflowed: name the group
                raise ValueError(_overflow_message(self.compiled.groups[int(failed.group(1))])) from None
            raise
        r["gemm"] = float(r["gemm"]) + float(r["static_gemm"])
        r["gemm_flops"] = float(r["gemm_flops"]) + float(r["static_gemm_flops"])
        return r

    def objective(self, perms: Mapping[str, Any]) -> float:
        return float(self.native.objective(self.compiled.init_list(perms)))


class _TorchPath(DescentStart):
    """Pairs on the tensors' device, descent in :mod:`.descent`, LAP on the host or the device."""

    def __init__(self, compiled: _CompiledSpec, device: Any) -> None:
        import torch

        from .descent import coordinate_descent
        from .device_lap import CudaLap, HostLap, cuda_lap_available
        from .torch_pairs import TorchPairs

        self.torch = torch
        self.compiled = compiled
        self.device = torch.device(device)
        sizes = [compiled.sizes[g] for g in compiled.groups]
        self.pairs = TorchPairs(sizes, [compiled.shapes[n] for n in compiled.names],
                                compiled.axis_groups, self.device)
        lap_cls = CudaLap if cuda_lap_available(self.device) else HostLap
        self.lap = lap_cls(sizes, self.device)
        self.perms = self._identity()
        self._descent = coordinate_descent

    def _identity(self) -> list:
        return [self.torch.arange(self.compiled.sizes[g], dtype=self.torch.int64,
                                  device=self.device) for g in self.compiled.groups]

    @property
    def num_pairs(self) -> int:
        return self.pairs.num_pairs

    def _tensors(self, params: Mapping[str, Any], what: str) -> list:
        compiled = self.compiled
        if params.keys() != compiled._name_set:
            validate_spec(compiled.spec, params, require_all=True)
        out = []
        for n in compiled.names:
            x = params[n]
            shape = tuple(int(s) for s in x.shape)
            if shape != compiled.shapes[n]:
                raise ValueError(f"{what}[{n!r}] has shape {shape}, expected {compiled.shapes[n]} "
                                 "(the shape of the first pair added)")
            label = f"{what}[{n!r}]"
            if isinstance(x, Factored):
                t = Factored(self._on_device(x.delta, f"{label}.delta"),
                             self._on_device(x.inputs, f"{label}.inputs"), x.shape)
            else:
                t = self._on_device(x, label)
            out.append(t)
        return out

    def _on_device(self, x: Any, label: str) -> Any:
        """``x`` as a float32 tensor on this path's device."""
        torch = self.torch
        if is_torch_tensor(x):
            if x.is_complex() or x.dtype == torch.bool:
                raise TypeError(f"{label} must be a real numeric tensor, got {x.dtype}")
            return x.detach().to(device=self.device, dtype=torch.float32)
        return torch.from_numpy(_as_float32(x, label)).to(self.device)

    def add(self, target: Mapping[str, Any], source: Mapping[str, Any], weight: float) -> None:
        torch = self.torch
        ts = self._tensors(target, "target")
        ss = self._tensors(source, "source")
        def parts(t: Any) -> tuple:
            return (t.delta, t.inputs) if isinstance(t, Factored) else (t,)

        finite = torch.stack([torch.isfinite(f).all() for t in ts + ss for f in parts(t)])
        if not bool(finite.all()):  # one host read per pair; the slow path names the tensor
            finite = torch.stack([torch.stack([torch.isfinite(f).all() for f in parts(t)]).all()
                                  for t in ts + ss])
            bad = int(finite.logical_not().nonzero()[0])
            side = "target" if bad < len(ts) else "source"
            name = self.compiled.names[bad % len(ts)]
            raise ValueError(f"{side}[{name!r}] contains NaN or infinite values")
        self.pairs.add(ts, ss, weight)

    def reserve(self, num_pairs: int) -> None:
        self.pairs.reserve(num_pairs)

    def clear_pairs(self) -> None:
        self.pairs.clear()

    def solve(self, init: Any, use_previous: bool, warm_start: bool, max_sweeps: int, tol: float,
              seed: int, exact_objective: bool) -> dict:
        from .descent import LapFailed

        perms, opts, at_identity = self._start(init, use_previous, warm_start, max_sweeps, tol,
                                               seed, exact_objective)
        try:
            res = self._descent(self.pairs, self.lap, perms, opts, at_identity=at_identity)
        except LapFailed as exc:
            raise ValueError(_overflow_message(self.compiled.groups[exc.group])) from None
        self.perms = res.perms
        # As the native core reports it: the static terms add() built count as cost building.
        pairs = self.pairs
        add_gemm, add_flops = pairs.add_gemm_seconds, pairs.add_gemm_flops
        pairs.add_gemm_seconds = pairs.add_gemm_flops = 0.0
        counters = dict(res.counters)
        counters["gemm_flops"] = counters.get("gemm_flops", 0.0) + add_flops
        return {"perms": res.perms, "objective": res.objective, "history": res.history,
                "sweeps": res.sweeps, "converged": res.converged,
                "gemm": res.time_gemm + add_gemm, "lap": res.time_lap, **counters}

    def objective(self, perms: Mapping[str, Any]) -> float:
        return float(self.pairs.objective(self._init(perms)))


_LIVE_MATCHERS: "weakref.WeakSet[GradientMatcher]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork() stays held forever in the child: give every
    # matcher a fresh one, and refuse the ones that were mid-call (their state is half-updated).
    for m in list(_LIVE_MATCHERS):
        m._lock = threading.RLock()
        if m._busy:
            m._forked_busy = True
            m._busy = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class GradientMatcher:
    """Incremental matcher: add (target, source) pairs one at a time, solve whenever needed.

    Runs where the pairs live. For numpy arrays and CPU tensors the pairs, the cost matrices and
    the coordinate descent live in the native core: the pairs are laid out for one GEMM per
    (group, tensor), each tensor stored once (once per axis for the rare tensors with more than
    two permuted axes). Cost terms are cached per (group, tensor): terms of tensors whose other
    axes are unpermuted ("static") are accumulated at :meth:`add` time; the others are kept for
    the permutations they were built at, extended by each added pair's share, and corrected on
    only the rows whose permutation changed (a full rebuild when more than half did). A group
    whose coupled groups did not change since its last solve is skipped (exact). So an FGMT loop
    (add a pair, solve warm-started from the previous permutations) costs O(1 pair) of GEMM work
    per step plus the corrections, not O(K pairs). Pairs that keep a tensor as its factors
    (:class:`~trajtransfer.Factored`, see :meth:`add`) are stored and used as factors there too.

    For tensors on another torch device (a GPU), the pairs stay on that device and each visit's
    cost matrix is built there with torch ops (:mod:`trajtransfer.core.torch_pairs`); the
    assignment is solved on the host from a pinned copy of that one (n, n) matrix, or on the
    device with a CUDA build of the extension. The descent (:mod:`trajtransfer.core.descent`)
    follows the native one's rules, and tests hold the two to the same results.

    The exact float64 objective (``history[0]``, ``objective``) is linear in the pairs, so it is
    kept as per-pair terms: at the identity they are computed by :meth:`add` (fused with its
    finiteness check), and at the last solve's permutations they are extended by :meth:`add`
    too (while the new pair is still in cache) and moved to new permutations by re-reading only
    the affected rows where the layout allows. A solve therefore reads the stored pairs at most
    once, usually far less. Loops that replace every pair between solves (GMT) call
    :meth:`clear_pairs` instead of building a new matcher: the store's memory, the permutations
    and the LAP duals are kept.

    Results come back in the kind of the pairs: numpy permutations for numpy pairs, int64 torch
    tensors on the pairs' device for torch pairs. A matcher may be shared between threads (calls
    are serialised).

    Parameters
    ----------
    spec : PermutationSpec
    seed : int
        Seed of the sweep order (``random.Random(seed)``); 0 <= seed < 2**64.
    backend : {"auto", "native", "torch"}
        ``"auto"``: the native core for numpy and CPU tensors, the torch path for other devices.
        ``"torch"``: the torch path even for CPU tensors (the device-generic code, e.g. to test
        it without a GPU). ``"native"``: the native core; tensors on another device are an error.
        Specs with block-structured groups (attention heads, :mod:`trajtransfer.core.block_axes`)
        always take the torch path (:mod:`trajtransfer.core.block_path`): the native core knows
        plain groups only, so ``"native"`` refuses them.
    """

    def __init__(self, spec: PermutationSpec, *, seed: int = 0, backend: str = "auto") -> None:
        if not isinstance(spec, PermutationSpec):
            raise TypeError(f"spec must be a PermutationSpec, got {type(spec).__name__}")
        seed = _integer(seed, "seed")
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        self._spec = spec
        self._seed = seed
        self._backend = backend
        self._path: Any = None          # _NativePath or _TorchPath, chosen by the first add()
        self._device: Any = None        # where the pairs live ("cpu" for numpy)
        self._torch_out = False         # results as torch tensors (torch pairs)
        self._solved = False
        self._add_seconds = 0.0
        # Serialises every call: the lazy set-up in the first add() and the native store are
        # shared state (concurrent first adds used to lose pairs).
        self._lock = threading.RLock()
        self._busy = 0                  # calls in progress (for the fork handler)
        self._forked_busy = False       # this is a child's copy of a matcher caught mid-call
        _LIVE_MATCHERS.add(self)

    @contextlib.contextmanager
    def _serialised(self) -> Iterator[None]:
        with self._lock:
            if self._forked_busy:
                raise RuntimeError(
                    "this matcher was in use by another thread when the process forked, so its "
                    "copy in this child may be half-updated; create a new matcher in the child")
            self._busy += 1
            try:
                yield
            finally:
                self._busy -= 1

    @property
    def num_pairs(self) -> int:
        """Number of pairs added so far."""
        return 0 if self._path is None else self._path.num_pairs

    @property
    def pair_store_bytes(self) -> int:
        """Bytes the stored pairs take: the device path's dense stores (their capacity) and
        kept factors; for the native core, the float32 pairs and kept factors themselves."""
        if self._path is None:
            return 0
        if isinstance(self._path, _TorchPath):
            return self._path.pairs.store_bytes()
        return self._path.store_bytes

    @property
    def groups(self) -> list:
        """Group names in the order results and sweeps use."""
        return list(self._spec.perm_to_axes)

    @property
    def device(self) -> Any:
        """Where the pairs live (a ``torch.device`` for torch pairs, ``"cpu"`` for numpy, None
        before the first :meth:`add`)."""
        return self._device

    @property
    def backend(self) -> Optional[str]:
        """``"native"`` or ``"torch"``: the path the pairs took (None before the first add)."""
        if self._path is None:
            return None
        return "native" if isinstance(self._path, _NativePath) else "torch"

    def _locate(self, target: Mapping[str, Any], source: Mapping[str, Any]) -> tuple:
        """The pair's device (all tensors must agree) and whether any tensor is a torch tensor."""
        where = None
        torch_in = False
        for side, params in (("target", target), ("source", source)):
            for n, x in params.items():
                if n in self._spec.buffers:
                    continue
                if isinstance(x, Factored):
                    torch_in = torch_in or x.is_torch
                    place = x.device
                else:
                    torch_in = torch_in or is_torch_tensor(x)
                    place = _placement(x)
                if where is None:
                    where = (place, f"{side}[{n!r}]")
                elif not _same_place(place, where[0]):
                    raise ValueError(f"{side}[{n!r}] is on {place} but {where[1]} is on "
                                     f"{where[0]}: put every tensor of a pair on one device")
        if where is None:
            return "cpu", torch_in
        if self._device is not None and not _same_place(where[0], self._device):
            raise ValueError(f"{where[1]} is on {where[0]} but this matcher's pairs are on "
                             f"{self._device}: put every pair on one device")
        return where[0], torch_in

    def add(self, target: Mapping[str, Any], source: Mapping[str, Any], weight: float = 1.0) -> None:
        """Append one pair: maximise ``weight * <target, pi(source)>`` along with the others.

        Parameters
        ----------
        target, source : Mapping[str, numpy.ndarray | torch.Tensor | Factored]
            Same keys: every non-buffer tensor of the spec (buffers may be absent and are never
            matched); all on one device (numpy counts as the CPU); cast to float32. Shapes must
            agree with each other, with the spec's group sizes and with the pairs added before.
            A tensor may come as its low-rank factors, :class:`~trajtransfer.Factored`
            ``(delta, inputs, shape)`` for ``delta.T @ inputs`` (a Linear or 1×1 convolution
            weight gradient): when both sides of a tensor are factored, the tensor is
            ``(n_out, n_in)`` up to unpermuted trailing axes of size 1, and
            ``rows · (n_in + n_out) < n_in · n_out``, the factors are kept and every cost term
            and objective is computed from them, in the native core on the CPU and with torch
            ops on the device path; otherwise that tensor is made dense.
        weight : float
            Finite weight of this pair.

        Raises
        ------
        ValueError
            Mismatched keys between target and source, shapes inconsistent with the spec or the
            earlier pairs, non-finite values or weight, tensors on different devices (the
            message names both).
        TypeError
            Non-mapping inputs, non-numeric arrays.
        """
        if not isinstance(target, Mapping) or not isinstance(source, Mapping):
            raise TypeError("target and source must be mappings from tensor name to array")
        if target.keys() != source.keys():  # may still differ only in (unmatched) buffers
            ks_t = {k for k in target if k not in self._spec.buffers}
            ks_s = {k for k in source if k not in self._spec.buffers}
            if ks_t != ks_s:
                raise ValueError(f"target and source have different tensors: only in target "
                                 f"{sorted(ks_t - ks_s)}, only in source {sorted(ks_s - ks_t)}")
        weight = float(weight)
        if not math.isfinite(weight):
            raise ValueError(f"weight must be finite, got {weight}")
        with self._serialised():
            t0 = time.perf_counter()
            device, torch_in = self._locate(target, source)
            path = self._path
            if path is None:
                path = self._new_path(_CompiledSpec(self._spec, target, "target"), device)
            path.add(target, source, weight)
            if self._path is None:
                self._path, self._device, self._torch_out = path, device, torch_in
            self._add_seconds += time.perf_counter() - t0

    def _new_path(self, compiled: _CompiledSpec, device: Any) -> Any:
        on_cpu = _same_place(device, "cpu")
        if compiled.spec.has_blocks:
            # The native core knows plain groups only: block specs (attention heads) take the
            # torch path on every device.
            if self._backend == "native":
                raise ValueError("backend='native' does not take specs with block-structured "
                                 "groups (Blocks/Concat entries): use backend='auto' or 'torch'")
            from .block_path import BlockPath

            return BlockPath(compiled, device)
        if self._backend == "native" and not on_cpu:
            raise ValueError(f"backend='native' solves on the CPU but the pairs are on {device}: "
                             "use backend='auto' (the device path) or move them with .cpu()")
        if self._backend == "torch" or not on_cpu:
            return _TorchPath(compiled, device)
        return _NativePath(compiled)

    def reserve(self, num_pairs: int) -> None:
        """Pre-allocate the pair store for ``num_pairs`` pairs in total.

        Optional: avoids regrowth copies when the number of pairs is known, and on Linux ≥ 5.14
        faults the reserved pages in at once (one call instead of a page fault per 4 KiB as
        later adds write them). Needs one pair added first (the shapes come from it).
        """
        with self._serialised():
            if self._path is None:
                raise ValueError("reserve: add a first pair before reserving (it fixes the shapes)")
            num_pairs = _integer(num_pairs, "num_pairs")
            if not 0 <= num_pairs < 2**63:
                raise ValueError(f"reserve: num_pairs must be >= 0 and < 2**63, got {num_pairs}")
            # Two float32 gradients (target and source) per pair.
            pair_bytes = 8 * sum(math.prod(s) for s in self._path.compiled.shapes.values())
            need = num_pairs * pair_bytes
            too_big = MemoryError(f"reserve: {num_pairs} pairs of this spec need {need / 2**30:.3g} GiB "
                                  f"({pair_bytes} bytes a pair), more than can be allocated")
            # Refused before allocating: with overcommit a huge reservation can succeed and the
            # store's pre-faulting then meets the OOM killer instead of an exception.
            if need > _physical_memory_bytes():
                raise too_big
            try:
                self._path.reserve(num_pairs)
            except (MemoryError, RuntimeError, ValueError):  # std::bad_alloc, length_error, torch
                raise too_big from None

    def clear_pairs(self) -> None:
        """Drop every pair, keeping the matcher's state for a new set of pairs of the same shapes.

        For loops that replace all pairs between solves (GMT recomputes every gradient pair at
        each step). Kept: the store's memory (adding as many pairs again allocates and
        page-faults nothing), each group's permutation from the last solve and its LAP column
        duals. So ``solve(warm_start=True)`` starts from the last solution's permutations, and
        ``solve(init, warm_start=True)`` starts from ``init`` with every assignment problem
        warm-started from the previous duals: the same optimum per assignment (only ties between
        equally good assignments may be broken differently), usually far fewer augmentations on
        the nearly rank-deficient cost matrices of gradients. ``warm_start=False`` ignores the
        kept state, exactly as for a new matcher.

        Does nothing before the first :meth:`add`. The shapes stay those of the first pair.
        """
        with self._serialised():
            if self._path is not None:
                self._path.clear_pairs()

    def solve(
        self,
        init: Union[Mapping[str, Any], str, None] = None,
        *,
        max_sweeps: int = 100,
        tol: float = 1e-9,
        warm_start: bool = True,
        exact_objective: bool = True,
    ) -> MatchResult:
        """Coordinate descent over all pairs added so far.

        Parameters
        ----------
        init : Mapping[str, (n_p,) int array or tensor], "identity", "greedy" or None
            Starting permutations (copied; a missing or None entry is the identity). None: the
            identity, or with ``warm_start`` and an earlier solve, that solve's permutations.
            ``"identity"``: the identity for every group, whatever ``warm_start`` (which then
            only decides whether the LAPs reuse the previous duals); the same as passing
            identity permutations, without building and checking them (FGMT's per-step start).
            ``"greedy"``: one pass over the groups in spec order (input to output for chains),
            each solved exactly on the cost terms whose other groups are already assigned (terms
            touching a later group are left out); the descent starts from there.
        max_sweeps : int
            At most this many sweeps over the groups.
        tol : float
            Relative stopping tolerance (see the module docstring).
        warm_start : bool
            Start from the previous solve's permutations (when ``init`` is None) and warm-start
            every LAP from the previous solve's column duals. False: identity start (unless
            ``init``), cold LAPs.
        exact_objective : bool
            True: ``MatchResult.objective`` is recomputed exactly in float64 at the final
            permutations (a pass over the changed rows of every stored pair). False: it is the
            tracked value ``history[-1]`` (the exact start plus float64 sums of the float32 cost
            entries the LAPs saw; relative error about 1e-7), for loops that only log it (the
            transfer loops; on digits FGMT the exact pass was ~10 % of the matching time).

        Returns
        -------
        MatchResult
            Permutations as numpy arrays for numpy pairs, as int64 tensors on the pairs' device
            for torch pairs.

        Raises
        ------
        ValueError
            No pairs added, invalid ``init``, ``max_sweeps < 0`` or ``tol < 0``.
        """
        named_start = isinstance(init, str)
        if named_start and init not in _STARTS:
            raise ValueError(f"init must be a mapping, one of {_STARTS} or None, got {init!r}")
        with self._serialised():
            if self._path is None or self._path.num_pairs == 0:
                raise ValueError("solve: no pairs added yet (call add() first)")
            max_sweeps = _integer(max_sweeps, "max_sweeps")
            tol = float(tol)
            if max_sweeps < 0:
                raise ValueError(f"max_sweeps must be >= 0, got {max_sweeps}")
            if not tol >= 0:
                raise ValueError(f"tol must be >= 0, got {tol}")
            if init is not None and not named_start and not isinstance(init, Mapping):
                self._path.compiled.init_list(init)  # raises the TypeError
            # No init and no previous permutations to use: the solve starts from the identity.
            use_previous = bool(warm_start) and self._solved and not named_start
            t0 = time.perf_counter()
            r = self._path.solve(init, use_previous, bool(warm_start), max_sweeps, tol, self._seed,
                                 bool(exact_objective))
            solve_s = time.perf_counter() - t0
            add_s, self._add_seconds = self._add_seconds, 0.0
            self._solved = True
            groups = self._path.compiled.groups
            return MatchResult(
                perms={g: self._out(p) for g, p in zip(groups, r["perms"])},
                objective=float(r["objective"]),
                history=[float(h) for h in r["history"]],
                sweeps=int(r["sweeps"]),
                converged=bool(r["converged"]),
                timings={"gemm": float(r["gemm"]), "lap": float(r["lap"]),
                         "add": add_s, "solve": solve_s, "total": add_s + solve_s},
                counters={"lap_solves": int(r["lap_solves"]),
                          "lap_unchanged": int(r["lap_unchanged"]),
                          "member_builds": int(r["member_builds"]),
                          "delta_builds": int(r["delta_builds"]),
                          "gemm_flops": float(r["gemm_flops"])},
            )

    def _out(self, perm: Any) -> Any:
        """A permutation in the kind of the pairs (numpy, or torch on the pairs' device)."""
        if is_torch_tensor(perm):
            return perm if self._torch_out else perm.cpu().numpy()
        if self._torch_out:
            import torch

            return torch.from_numpy(np.asarray(perm))
        return perm

    def objective(self, perms: Mapping[str, Any]) -> float:
        """Exact float64 objective over the stored pairs at ``perms`` (missing groups: identity)."""
        with self._serialised():
            if self._path is None:
                raise ValueError("objective: no pairs added yet")
            return self._path.objective(perms)


def match_gradients(
    spec: PermutationSpec,
    pairs: Sequence[tuple],
    weights: Optional[Sequence[float]] = None,
    *,
    init: Union[Mapping[str, Any], str, None] = None,
    max_sweeps: int = 100,
    tol: float = 1e-9,
    seed: int = 0,
    backend: str = "auto",
) -> MatchResult:
    """Maximise ``sum_k w_k <target_k, pi(source_k)>`` over the spec's permutations.

    Parameters
    ----------
    spec : PermutationSpec
    pairs : Sequence[tuple[Mapping, Mapping]]
        ``(target, source)`` dicts (see :meth:`GradientMatcher.add`); at least one.
    weights : Sequence[float], optional
        One finite weight per pair (default 1).
    init, max_sweeps, tol :
        As :meth:`GradientMatcher.solve` (identity start when ``init`` is None; ``"greedy"``
        for the greedy start).
    seed : int
        Sweep-order seed.
    backend : {"auto", "native", "torch"}
        Where the work runs (see :class:`GradientMatcher`); ``"auto"`` follows the pairs' device.

    Returns
    -------
    MatchResult

    Raises
    ------
    ValueError
        Empty ``pairs``, ``weights`` of the wrong length, or any error of
        :meth:`GradientMatcher.add` / :meth:`GradientMatcher.solve`.
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs must hold at least one (target, source) pair")
    if weights is None:
        weights = [1.0] * len(pairs)
    weights = list(weights)
    if len(weights) != len(pairs):
        raise ValueError(f"weights has {len(weights)} entries for {len(pairs)} pairs")
    m = GradientMatcher(spec, seed=seed, backend=backend)
    for k, (pair, w) in enumerate(zip(pairs, weights)):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"pairs[{k}] must be a (target, source) tuple")
        m.add(pair[0], pair[1], w)
        if k == 0 and len(pairs) > 1:
            m.reserve(len(pairs))
    return m.solve(init, max_sweeps=max_sweeps, tol=tol, warm_start=False)


def match_weights(
    spec: PermutationSpec,
    params_a: Mapping[str, Any],
    params_b: Mapping[str, Any],
    *,
    init: Union[Mapping[str, Any], str, None] = "greedy",
    max_sweeps: int = 100,
    tol: float = 1e-9,
    seed: int = 0,
    backend: str = "auto",
) -> MatchResult:
    """Git Re-Basin weight matching: maximise ``sum_w <a[w], pi(b)[w]>`` (pi applied to b).

    Parameters
    ----------
    spec : PermutationSpec
    params_a, params_b : Mapping[str, numpy.ndarray | torch.Tensor]
        Two parameter dicts with the spec's non-buffer tensors (buffers such as BatchNorm
        running statistics may be present; they are not matched).
    init : Mapping, "greedy" (default), "identity" or None
        The descent's start, as :meth:`GradientMatcher.solve` (None: the identity). The greedy
        pass reaches higher objectives in fewer sweeps than the identity start of Git Re-Basin
        and the official code (the quality benchmark, bench/test_bench_quality.py).
    max_sweeps, tol, seed, backend :
        As :func:`match_gradients`.

    Returns
    -------
    MatchResult
        ``apply_permutation(spec, result.perms, params_b)`` is ``params_b`` aligned to
        ``params_a``.

    Examples
    --------
    Recover a planted hidden-unit shuffle:

    >>> import numpy as np
    >>> from trajtransfer.core.permute import apply_permutation
    >>> from trajtransfer.core.spec import mlp_spec
    >>> spec = mlp_spec(1)
    >>> rng = np.random.default_rng(0)
    >>> a = {"layers.0.weight": rng.normal(size=(8, 5)), "layers.0.bias": rng.normal(size=8),
    ...      "layers.1.weight": rng.normal(size=(3, 8)), "layers.1.bias": rng.normal(size=3)}
    >>> b = apply_permutation(spec, {"c1": rng.permutation(8)}, a)
    >>> res = match_weights(spec, a, b)
    >>> aligned = apply_permutation(spec, res.perms, b)
    >>> all(np.allclose(aligned[k], a[k]) for k in a)
    True
    """
    return match_gradients(spec, [(params_a, params_b)], init=init, max_sweeps=max_sweeps,
                           tol=tol, seed=seed, backend=backend)
