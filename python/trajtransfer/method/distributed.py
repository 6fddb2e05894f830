"""Data-parallel gradient pairs on ``torch.distributed``: shard, reduce, broadcast.

Every rank calls :func:`~trajtransfer.method.transfer.transfer` with the same arguments (the whole
data set, the same seed) and ``distributed=``. The ranks draw the same global minibatches (their
loaders are seeded alike), each takes its contiguous shard of every minibatch and computes its
part of the gradient pair, and the parts are combined so that every rank holds the full-batch
pair:

* each rank's loss is weighted by its shard's share of the minibatch, ``n_r / B``, so the
  all-reduced (summed) dense gradients are the full-batch mean even when the shards differ by one
  sample;
* factored weight gradients ``Δᵀ A`` (:class:`~trajtransfer.core.factored.Factored`) are not
  summed but all-gathered: the rows of ``Δ`` and ``A`` are concatenated in rank order. The same
  weighting leaves ``1/B`` in every row of ``Δ``, as in one process, so the gathered factors are
  the full-batch ones (with ``grad_batches > 1`` their rows come in another order, which does not
  change ``Δᵀ A``). Factors that the full batch makes larger than the dense gradient (which the
  matcher would densify) are made dense first and all-reduced with the rest.

The matcher then runs on every rank, on the same pairs: the methods need no distributed code and
no rank idles while another solves. π is broadcast from the group's rank 0 after each solve so
that the ranks agree exactly even if a collective's rounding were to differ between ranks and
break a tie another way. Evaluation (when ``eval_data`` is given) runs on every rank in full.

The backend is the process group's: gloo on CPUs, NCCL with one GPU per rank (call
``torch.cuda.set_device`` first; collectives then run on that GPU). BatchNorm layers see their
shard's batch statistics, as under ``DistributedDataParallel`` without SyncBatchNorm, so models
with BatchNorm get gradients that differ from one process's.

:meth:`Distributed.assign` and :meth:`Distributed.gather` spread independent jobs (e.g. the
targets of an ensemble) over the ranks instead: rank r takes jobs r, r + W, …
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Iterator, Mapping, Optional, Sequence

from .._devices import synchronize
from ..core.factored import Factored, factored_pays

__all__ = ["Distributed", "shard_bounds"]


def shard_bounds(size: int, world_size: int, rank: int) -> tuple:
    """``(start, stop)`` of rank ``rank``'s rows of a minibatch of ``size`` rows.

    Contiguous shards in rank order; the first ``size % world_size`` ranks take one row more
    (the split of ``numpy.array_split``).
    """
    base, extra = divmod(int(size), int(world_size))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


#: Rows of a tensor that its fingerprint sums (evenly spaced): a data set is checked in
#: milliseconds, not in a pass over all of it (1.3 s for Fashion-MNIST on a busy core).
_FINGERPRINT_ROWS = 1024


def _fingerprint(value: Any) -> Any:
    """A comparable summary of a setting: a tensor by its shape and the float64 sum of at most
    ``_FINGERPRINT_ROWS`` evenly spaced rows; mappings and sequences item by item."""
    import torch

    if isinstance(value, torch.Tensor):
        rows = value.detach()
        if rows.dim() > 0 and rows.shape[0] > _FINGERPRINT_ROWS:
            rows = rows[::-(-rows.shape[0] // _FINGERPRINT_ROWS)]
        return (tuple(value.shape), float(rows.sum(dtype=torch.float64)))
    if isinstance(value, Mapping):
        return tuple((k, _fingerprint(v)) for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return tuple(_fingerprint(v) for v in value)
    return value


class Distributed:
    """The process group a transfer's gradient pairs are spread over.

    Parameters
    ----------
    group : torch.distributed.ProcessGroup, optional
        Default: the default (world) group. It must already be initialised
        (``torch.distributed.init_process_group``; ``torchrun`` provides the environment).

    Raises
    ------
    ValueError
        torch.distributed is unavailable or not initialised, or this process is not a member of
        ``group``.
    """

    def __init__(self, group: Any = None) -> None:
        import torch
        import torch.distributed as dist

        if not dist.is_available():
            raise ValueError("distributed: this torch build has no torch.distributed")
        if not dist.is_initialized():
            raise ValueError("distributed: torch.distributed is not initialised; call "
                             "torch.distributed.init_process_group(backend) in every process first "
                             "(under torchrun the default init_method='env://' finds the others)")
        self.group = group
        self.rank = dist.get_rank(group)
        if self.rank < 0:
            raise ValueError("distributed: this process is not a member of the given process group")
        self.world_size = dist.get_world_size(group)
        self.backend = str(dist.get_backend(group))
        self.root = dist.get_global_rank(group, 0) if group is not None else 0
        # NCCL moves only CUDA tensors; gloo is given host tensors (it reads CUDA ones via a copy).
        self.comm_device = (torch.device("cuda", torch.cuda.current_device())
                            if self.backend == "nccl" else torch.device("cpu"))
        #: Seconds in collectives: ``reduce`` (inside the gradient phase) and ``broadcast``.
        self.seconds = {"reduce": 0.0, "broadcast": 0.0}

    @classmethod
    def resolve(cls, distributed: Any) -> Optional["Distributed"]:
        """The ``distributed=`` argument of :func:`transfer`: None/False (one process), True (the
        default group), a ``ProcessGroup``, or a :class:`Distributed`."""
        import torch.distributed as dist

        if distributed is None or distributed is False:
            return None
        if isinstance(distributed, Distributed):  # fresh counters: timings are per transfer
            return cls(distributed.group)
        if distributed is True:
            return cls()
        if dist.is_available() and isinstance(distributed, dist.ProcessGroup):
            return cls(distributed)
        raise TypeError("distributed must be None, True, a torch.distributed.ProcessGroup or a "
                        f"Distributed, got {type(distributed).__name__}")

    # ------------------------------------------------------------------ consistency checks
    def check_batch_size(self, batch_size: int) -> None:
        """Every rank needs at least one sample of each minibatch."""
        if int(batch_size) < self.world_size:
            raise ValueError(f"batch_size={batch_size} is smaller than the {self.world_size} ranks "
                             "of the process group: each rank needs at least one sample of every "
                             "minibatch")

    def check_same(self, **values: Any) -> None:
        """Raise ValueError on every rank if any rank was given different ``values``.

        A rank with other settings (or other data) would compute other pairs, or a different
        number of collectives and hang; tensors are compared by their shapes and float64 sums
        (of at most 1024 evenly spaced rows).
        """
        import torch.distributed as dist

        mine = {k: _fingerprint(v) for k, v in values.items()}
        everyone: list = [None] * self.world_size
        dist.all_gather_object(everyone, mine, group=self.group)
        differ = sorted(k for k in mine if any(other.get(k) != mine[k] for other in everyone))
        if differ:
            raise ValueError(f"distributed: the ranks were given different {', '.join(differ)}: "
                             "every rank must call transfer() with the same arguments and the "
                             "whole data set (each takes its own shard of every minibatch)")

    # ------------------------------------------------------------------ data parallelism
    def shard(self, batch: Sequence) -> tuple:
        """``(this rank's rows of (x, y), their share n_r / B of the minibatch)``."""
        size = int(batch[0].shape[0])
        self.check_batch_size(size)
        start, stop = shard_bounds(size, self.world_size, self.rank)
        return tuple(t[start:stop] for t in batch), (stop - start) / size

    def reduce(self, *grads: Mapping[str, Any]) -> tuple:
        """Combine each rank's weighted gradients (one dict per model) into the full-batch ones.

        Dense tensors are all-reduced (summed) in one flat buffer per call. A :class:`Factored`
        weight is all-gathered (its rows concatenated in rank order) when the full batch's
        factors are the form the matcher keeps (:func:`~trajtransfer.core.factored.factored_pays`
        with all ranks' rows); otherwise it is made dense here and summed with the others,
        the smaller message and what the matcher would build from it anyway. Every rank must
        pass dicts with the same keys in the same order.
        """
        with self._timed("reduce"):
            out = [dict(g) for g in grads]
            factored = [(i, n) for i, g in enumerate(grads) for n, v in g.items()
                        if isinstance(v, Factored)]
            counts = self._row_counts([grads[i][n] for i, n in factored])
            kept = []
            for j, (i, n) in enumerate(factored):
                f = grads[i][n]
                if f.is_matrix() and factored_pays(sum(c[j] for c in counts), f.shape[0],
                                                   math.prod(f.shape[1:])):
                    kept.append(j)
                else:
                    out[i][n] = f.dense()
            dense = [(i, n) for i, g in enumerate(out) for n, v in g.items()
                     if not isinstance(v, Factored)]
            for (i, n), t in zip(dense, self.sum_over_ranks([out[i][n] for i, n in dense])):
                out[i][n] = t
            gathered = self._all_gather_rows([grads[i][n] for i, n in (factored[j] for j in kept)],
                                             [[c[j] for j in kept] for c in counts])
            for j, f in zip(kept, gathered):
                i, n = factored[j]
                out[i][n] = f
        return tuple(out)

    def _row_counts(self, factors: list) -> list:
        """Every rank's row counts of ``factors``: ``counts[rank][j]``."""
        import torch
        import torch.distributed as dist

        if not factors:
            return [[] for _ in range(self.world_size)]
        rows = torch.tensor([f.rows for f in factors], dtype=torch.int64, device=self.comm_device)
        everyone = [torch.empty_like(rows) for _ in range(self.world_size)]
        dist.all_gather(everyone, rows, group=self.group)
        return [[int(r) for r in c.tolist()] for c in everyone]

    def sum_over_ranks(self, tensors: list) -> list:
        """Each tensor summed over the ranks (one all-reduce of a flat buffer), on its device."""
        import torch.distributed as dist

        if not tensors:
            return []
        flat = _pack(tensors, self.comm_device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        return _unpack(flat, [(t.shape, t.dtype, t.device) for t in tensors])

    def _all_gather_rows(self, factors: list, counts: list) -> list:
        """The factors with every rank's rows (``counts[rank][j]``), concatenated in rank order."""
        import torch
        import torch.distributed as dist

        if not factors:
            return []
        widths = [int(f.delta.shape[1]) + int(f.inputs.shape[1]) for f in factors]
        lengths = [sum(r * w for r, w in zip(c, widths)) for c in counts]
        local = _pack([t for f in factors for t in (f.delta, f.inputs)], self.comm_device)
        # all_gather needs equal sizes: pad every rank's buffer to the longest.
        padded = torch.zeros(max(lengths), dtype=local.dtype, device=self.comm_device)
        padded[:local.numel()] = local
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(gathered, padded, group=self.group)
        per_rank = []
        for buf, c, n in zip(gathered, counts, lengths):
            layout = [((r, int(t.shape[1])), t.dtype, t.device)
                      for r, f in zip(c, factors) for t in (f.delta, f.inputs)]
            per_rank.append(_unpack(buf[:n], layout))
        out = []
        for j, f in enumerate(factors):
            delta = torch.cat([parts[2 * j] for parts in per_rank])
            inputs = torch.cat([parts[2 * j + 1] for parts in per_rank])
            out.append(Factored(delta, inputs, f.shape))
        return out

    def broadcast(self, perms: Optional[Mapping[str, Any]]) -> Optional[dict]:
        """π from the group's rank 0 on every rank (None, the identity, stays None)."""
        import numpy as np
        import torch
        import torch.distributed as dist

        if perms is None:
            return None
        with self._timed("broadcast"):
            names = list(perms)
            tensors = [torch.as_tensor(np.asarray(p) if not isinstance(p, torch.Tensor) else p,
                                       dtype=torch.int64) for p in perms.values()]
            flat = _pack(tensors, self.comm_device)
            dist.broadcast(flat, src=self.root, group=self.group)
            got = _unpack(flat, [(t.shape, t.dtype, t.device) for t in tensors])
        return {n: (g if isinstance(p, torch.Tensor) else g.numpy())
                for n, g, p in zip(names, got, perms.values())}

    def split_timings(self, times: dict) -> None:
        """Move the collectives' seconds out of ``gradients`` into ``communication``."""
        times["gradients"] = times.get("gradients", 0.0) - self.seconds["reduce"]
        times["communication"] = self.seconds["reduce"] + self.seconds["broadcast"]

    @contextlib.contextmanager
    def _timed(self, what: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.comm_device)
            self.seconds[what] += time.perf_counter() - t0

    # ------------------------------------------------------------------ job parallelism
    def assign(self, num_jobs: int) -> range:
        """This rank's share of ``num_jobs`` independent jobs: ``rank, rank + W, …``."""
        if int(num_jobs) < 0:
            raise ValueError(f"num_jobs must be >= 0, got {num_jobs}")
        return range(self.rank, int(num_jobs), self.world_size)

    def gather(self, results: Mapping[int, Any], num_jobs: int) -> list:
        """Every rank's ``{job index: result}`` merged into one list of ``num_jobs``, on every rank.

        Results are pickled (move tensors to the CPU first; NCCL sends the pickles through the
        current CUDA device).
        """
        import torch.distributed as dist

        everyone: list = [None] * self.world_size
        dist.all_gather_object(everyone, dict(results), group=self.group)
        merged: dict = {}
        for part in everyone:
            for k, v in part.items():
                if k in merged:
                    raise ValueError(f"gather: job {k} was returned by more than one rank")
                merged[k] = v
        missing = sorted(set(range(int(num_jobs))) - set(merged))
        if missing or len(merged) != int(num_jobs):
            raise ValueError(f"gather: expected results for jobs 0..{int(num_jobs) - 1}, missing "
                             f"{missing[:5]}, extra {sorted(set(merged) - set(range(int(num_jobs))))[:5]}")
        return [merged[i] for i in range(int(num_jobs))]


def _pack(tensors: Sequence, device: Any) -> Any:
    """One flat buffer on ``device`` in the tensors' common dtype (a lossless promotion)."""
    import torch

    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.cat([t.reshape(-1).to(device=device, dtype=dtype) for t in tensors])


def _unpack(flat: Any, layout: Sequence) -> list:
    """Split a flat buffer back into tensors of ``(shape, dtype, device)``."""
    import math

    out, pos = [], 0
    for shape, dtype, device in layout:
        n = math.prod(shape)
        out.append(flat[pos:pos + n].reshape(shape).to(device=device, dtype=dtype))
        pos += n
    return out
