"""The textbook SciPy-baseline matcher: what every Git Re-Basin peer runs today.

Coordinate descent written from the published algorithm (Ainsworth et al., 2023, weight matching;
algorithm-spec §1.4/§2.5), generalised to K weighted (target, source) pairs: per group, a dense
cost matrix built with one torch matmul per (pair, tensor) after an ``index_select`` of the
source along its other permuted axes, then ``scipy.optimize.linear_sum_assignment(maximize=True)``.
The GEMMs run on the tensors' device (a GPU when the pairs live there), each cost matrix is
copied to the host for SciPy. Identity start; each sweep visits
``random.Random(seed).shuffle(list(groups))``; stop when no
group's assignment objective improves (``new > old + 1e-12``) or after ``max_sweeps``.

Same conventions as :mod:`trajtransfer.core.match`: the permutation is applied to the source side with
gather semantics, and the returned objective is ``sum_k w_k sum_tensors <target_k, pi(source_k)>``
in float64.
"""

from __future__ import annotations

import random
import time
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def _t(x: Any) -> torch.Tensor:
    return x.detach().float() if isinstance(x, torch.Tensor) else torch.from_numpy(
        np.ascontiguousarray(x, dtype=np.float32))


def _permute_except(spec: Any, perms: Mapping[str, torch.Tensor], name: str, x: torch.Tensor,
                    except_axis: Optional[int]) -> torch.Tensor:
    for ax, g in enumerate(spec.axes_to_perm[name]):
        if g is None or ax == except_axis:
            continue
        x = torch.index_select(x, ax, perms[g])
    return x


def objective(spec: Any, pairs: Sequence[tuple], weights: Optional[Sequence[float]],
              perms: Mapping[str, Any]) -> float:
    """float64 ``sum_k w_k sum_{non-buffer tensors} <target_k, pi(source_k)>`` (pi gathers)."""
    weights = [1.0] * len(pairs) if weights is None else list(weights)
    p = {g: torch.as_tensor(np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v),
                            dtype=torch.int64) for g, v in perms.items()}
    total = 0.0
    for (tgt, src), w in zip(pairs, weights):
        acc = 0.0
        for name in spec.axes_to_perm:
            if name in spec.buffers:
                continue
            t = _t(tgt[name]).cpu().double()
            s = _permute_except(spec, p, name, _t(src[name]).cpu().double(), None)
            acc += float((t * s).sum())
        total += w * acc
    return total


def baseline_match(spec: Any, pairs: Sequence[tuple], weights: Optional[Sequence[float]] = None,
                   *, max_sweeps: int = 100, seed: int = 0, with_objective: bool = True) -> dict:
    """Textbook coordinate descent. Returns perms (numpy int64), objective (float64, None
    unless ``with_objective``), sweeps, timings (seconds: gemm, lap, total) and gemm_flops."""
    t0 = time.perf_counter()
    weights = [1.0] * len(pairs) if weights is None else list(weights)
    pairs_t = [({k: _t(v) for k, v in a.items() if k not in spec.buffers},
                {k: _t(v) for k, v in b.items() if k not in spec.buffers}) for a, b in pairs]
    groups = list(spec.perm_to_axes)
    sizes = {}
    for g in groups:
        name, ax = next((n, a) for n, a in spec.perm_to_axes[g] if n not in spec.buffers)
        sizes[g] = pairs_t[0][0][name].shape[ax]
    device = pairs_t[0][0][next(iter(pairs_t[0][0]))].device
    perms = {g: torch.arange(sizes[g], device=device) for g in groups}
    rng = random.Random(seed)
    t_gemm = t_lap = 0.0
    flops = 0.0
    sweeps = 0
    for _ in range(max_sweeps):
        sweeps += 1
        progress = False
        order = list(groups)
        rng.shuffle(order)
        for g in order:
            n = sizes[g]
            tg = time.perf_counter()
            cost = torch.zeros((n, n), device=device)
            for (tgt, src), w in zip(pairs_t, weights):
                for name, ax in spec.perm_to_axes[g]:
                    if name in spec.buffers:
                        continue
                    a = torch.movedim(tgt[name], ax, 0).reshape(n, -1)
                    b = _permute_except(spec, perms, name, src[name], ax)
                    b = torch.movedim(b, ax, 0).reshape(n, -1)
                    cost += w * (a @ b.T)
                    flops += 2.0 * n * n * a.shape[1]
            c = cost.cpu().numpy()
            tl = time.perf_counter()
            t_gemm += tl - tg
            _, col = linear_sum_assignment(c, maximize=True)
            t_lap += time.perf_counter() - tl
            rows = np.arange(n)
            old = float(c[rows, perms[g].cpu().numpy()].astype(np.float64).sum())
            new = float(c[rows, col].astype(np.float64).sum())
            progress = progress or new > old + 1e-12
            perms[g] = torch.from_numpy(col.astype(np.int64)).to(device)
        if not progress:
            break
    total = time.perf_counter() - t0
    out = {g: p.cpu().numpy() for g, p in perms.items()}
    return {
        "perms": out,
        "objective": objective(spec, pairs, weights, out) if with_objective else None,
        "sweeps": sweeps,
        "timings": {"gemm": t_gemm, "lap": t_lap, "total": total},
        "gemm_flops": flops,
    }


def baseline_match_weights(spec: Any, params_a: Mapping[str, Any], params_b: Mapping[str, Any],
                           *, max_sweeps: int = 100, seed: int = 0,
                           with_objective: bool = True) -> dict:
    """Weight matching: maximise ``sum <a, pi(b)>``, pi applied to b."""
    return baseline_match(spec, [(params_a, params_b)], max_sweeps=max_sweeps, seed=seed,
                          with_objective=with_objective)
