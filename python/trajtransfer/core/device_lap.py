"""Where the device path's assignment problems are solved: on the host, or on a CUDA device.

* :class:`HostLap` copies the (n, n) cost matrix to a pinned host buffer (asynchronously, then
  waits for that copy only) and solves it with the native CPU solver, warm-started from the
  group's previous duals: the same solver call, with the same warm start, as the native matcher.
* :class:`CudaLap` (a CUDA build and a CUDA tensor) solves it on the device with the batched
  kernel; nothing waits for the device, so a sweep needs one host synchronisation.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from .._native import _core

__all__ = ["HostLap", "CudaLap", "cuda_lap_available"]


_PLACEMENTS = ("auto", "host", "device")


def cuda_lap_available(device: Any) -> bool:
    """True when group LAPs on ``device`` run with the CUDA kernel.

    That is a CUDA device and a CUDA build of the extension, unless the environment variable
    ``TRAJTRANSFER_DEVICE_LAP=host`` asks for the host solver (``auto``, the default, and
    ``device`` take the kernel when there is one).
    """
    placement = os.environ.get("TRAJTRANSFER_DEVICE_LAP", "auto").strip().lower() or "auto"
    if placement not in _PLACEMENTS:
        raise ValueError(f"TRAJTRANSFER_DEVICE_LAP must be one of {_PLACEMENTS}, got {placement!r}")
    on_cuda = getattr(device, "type", None) == "cuda" and bool(getattr(_core, "with_cuda", False))
    if placement == "device" and getattr(device, "type", None) == "cuda" and not on_cuda:
        raise ValueError("TRAJTRANSFER_DEVICE_LAP=device needs a CUDA build of trajtransfer "
                         "(TRAJTRANSFER_CUDA=ON); this one solves on the host")
    return on_cuda and placement != "host"


class HostLap:
    """Solve on the host; keeps each group's duals and assignment for the next warm start."""

    synchronous = True

    def __init__(self, sizes: list, device: Any) -> None:
        import torch

        self.torch = torch
        self.device = device
        # One pinned staging buffer per group size: the per-visit transfer is the cost matrix alone.
        self._staging = {n: torch.empty((n, n), dtype=torch.float32, pin_memory=True)
                         for n in set(sizes)} if device.type == "cuda" else {}
        self.duals: list = [None] * len(sizes)
        self.cols: list = [None] * len(sizes)

    def forget(self, g: int) -> None:
        self.duals[g] = self.cols[g] = None

    def to_host(self, cost: Any) -> np.ndarray:
        """The cost matrix as a C-contiguous float32 numpy array (no copy on the CPU)."""
        if self.device.type == "cpu":
            return cost.contiguous().numpy()
        if self.device.type != "cuda":  # other accelerators: a plain (synchronous) copy
            return cost.cpu().numpy()
        buf = self._staging[int(cost.shape[0])]
        buf.copy_(cost, non_blocking=True)
        self.torch.cuda.current_stream(self.device).synchronize()  # waits for this copy's stream
        return buf.numpy()

    def solve(self, g: int, cost: np.ndarray) -> np.ndarray:
        """Maximising assignment of ``cost`` (column of each row), warm from group g's duals."""
        # exact=False: the native matcher's own solve (its float32 costs are sums already rounded).
        _, cols, _, v = _core.lap.solve(cost, True, col_duals=self.duals[g],
                                        init_col_ind=self.cols[g], exact=False)
        self.duals[g], self.cols[g] = v, cols
        return cols


def cuda_batch_solve(costs: Any, col_duals: Optional[Any]) -> tuple:
    """Maximising assignments of (B, n, n) device costs with the CUDA kernel, without a sync.

    Returns (columns (B, n), column duals (B, n), status (B,)), all on the device. The tests
    replace it by the kernel's host emulation to run :class:`CudaLap` without a GPU.
    """
    from .. import _cuda

    cols, _, v, status = _cuda.solve_batch(costs, True, col_duals=col_duals, return_duals=True,
                                           check=False)
    return cols, v, status


class CudaLap:
    """Solve on the CUDA device with the batched kernel; results stay on the device."""

    synchronous = False

    def __init__(self, sizes: list, device: Any) -> None:
        self.duals: list = [None] * len(sizes)

    def forget(self, g: int) -> None:
        self.duals[g] = None

    def solve(self, g: int, cost: Any) -> tuple:
        """(columns, status) tensors on the device; warm from group g's duals."""
        warm: Optional[Any] = None if self.duals[g] is None else self.duals[g][None]
        cols, v, status = cuda_batch_solve(cost[None], warm)
        self.duals[g] = v[0]
        return cols[0], status
