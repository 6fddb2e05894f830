"""CUDA backend of the LAP API: torch CUDA tensors in, torch CUDA tensors out.

The extension is not built against libtorch: a tensor crosses as its ``data_ptr()`` (which already
includes the storage offset) plus shape and dtype, and work is enqueued on torch's current stream
of the tensor's device, so results are ordered like any other torch operation on that stream.
"""

from __future__ import annotations

from typing import Any, Optional

from ._arrays import is_torch_tensor
from ._native import _core

__all__ = ["is_cuda_tensor", "solves_on_device", "linear_sum_assignment", "linear_sum_assignment_batch", "solve_batch"]

_STATUS_MESSAGES = {
    1: "matrix contains invalid numeric entries",
    2: "cost matrix is infeasible",
}


def is_cuda_tensor(x: Any) -> bool:
    """True for a ``torch.Tensor`` on a CUDA device (without importing torch otherwise)."""
    return is_torch_tensor(x) and x.device.type == "cuda"


def solves_on_device(x: Any) -> bool:
    """True when ``x`` is a CUDA tensor and this build can solve on its device.

    Without a CUDA build, a CUDA tensor is solved on the host from a copy, its results returned
    on its device.
    """
    return is_cuda_tensor(x) and bool(getattr(_core, "with_cuda", False))


def _require_cuda_build() -> None:
    if not getattr(_core, "with_cuda", False):
        raise RuntimeError(
            "this build of trajtransfer has no CUDA backend: rebuild it with TRAJTRANSFER_CUDA=ON "
            "(e.g. `TRAJTRANSFER_CUDA=ON pip install . --no-build-isolation` where nvcc is "
            "available), or move the tensor to the CPU with .cpu()"
        )


def _as_float_tensor(x: Any, name: str, ndim: int, shape: str) -> Any:
    """SciPy's dtype policy on the device; float32 stays float32. Returns a contiguous tensor."""
    import torch

    if x.dim() != ndim:
        raise ValueError(
            f"expected a {ndim}-d tensor {name} of shape {shape}, got a {x.dim()}-d tensor of "
            f"shape {tuple(x.shape)}"
        )
    if x.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {x.dtype}")
    x = x.detach()
    if x.dtype in (torch.float32, torch.float64):
        pass
    elif x.dtype in (torch.float16, torch.bfloat16):
        x = x.to(torch.float32)
    else:  # integers and booleans, as in SciPy
        x = x.to(torch.float64)
    return x.resolve_conj().resolve_neg().contiguous()


def solve_batch(
    costs: Any,
    maximize: bool = False,
    *,
    col_duals: Optional[Any] = None,
    return_duals: bool = False,
    block_threads: int = 0,
    shared_state: int = -1,
    row_reduction_passes: int = 0,
    check: bool = True,
    name: str = "costs",
) -> Any:
    """Solve B equally-shaped LAPs on the GPU, one thread block per problem.

    Parameters
    ----------
    costs : (B, n, m) torch.Tensor on a CUDA device
        float32 is solved in float32, float64 in float64; integers and booleans as float64.
    maximize : bool
    col_duals : (B, m) torch.Tensor, optional
        Warm-start column duals (of the minimisation solved, i.e. of ``-costs`` when maximising),
        square problems only, on the same device; finite.
    return_duals : bool
        Also return the duals ``(row_duals (B, n), col_duals (B, m))``.
    block_threads : int
        Threads per problem (a multiple of 32, at most 1024); 0 picks about m / 4.
    shared_state : int
        Where the per-column state lives: -1 shared memory when it fits, 0 global, 1 shared.
    row_reduction_passes : int
        Passes of Jonker-Volgenant's augmenting row reduction before the augmentations (0: off).
    check : bool
        Raise on a failed problem, which synchronises with the device once. With ``check=False``
        nothing waits for the device: the per-problem status ``(B,)`` int32 tensor (0 ok,
        1 invalid entries, 2 infeasible; failed rows hold -1) is returned last instead, for
        callers such as an on-device matcher that sync once per sweep.
    name : str
        Argument name used in error messages.

    Returns
    -------
    (B, min(n, m)) int64 tensor on the input's device, or ``(assignment, row_duals, col_duals)``,
        each followed by ``status`` when ``check`` is False. For n <= m, ``out[b, i]`` is the
        column of row i; for n > m, ``out[b, j]`` the row of column j.

    Raises
    ------
    RuntimeError
        When the extension was built without CUDA.
    ValueError
        For a wrong shape, arguments on different devices, invalid entries (NaN, ``-inf``, or
        ``+inf`` when maximising) or an infeasible problem (the message names the problem).
    TypeError
        For complex inputs.
    """
    import torch

    _require_cuda_build()
    if not is_cuda_tensor(costs):
        raise ValueError(f"{name} must be a torch tensor on a CUDA device")
    x = _as_float_tensor(costs, name, 3, "(B, n, m)")
    b, n, m = (int(s) for s in x.shape)
    device = x.device
    warm = None
    if col_duals is not None:
        if not is_torch_tensor(col_duals) or col_duals.device != device:
            raise ValueError(f"col_duals must be a torch tensor on {name}'s device {device}")
        if n != m:
            raise ValueError("col_duals (warm start) applies to square problems only")
        warm = col_duals.detach().to(x.dtype).contiguous()
        if tuple(warm.shape) != (b, m):
            raise ValueError(
                f"col_duals must have shape (B, m) = ({b}, {m}), got {tuple(warm.shape)}")
        if check and not bool(torch.isfinite(warm).all()):  # (else: status 1, no sync)
            raise ValueError("col_duals must be finite")
    k = min(n, m)
    out = torch.empty((b, k), dtype=torch.int64, device=device)
    u = torch.empty((b, n), dtype=x.dtype, device=device) if return_duals else None
    v = torch.empty((b, m), dtype=x.dtype, device=device) if return_duals else None
    status = torch.zeros(b, dtype=torch.int32, device=device)
    if b > 0 and k > 0:
        # The launch must happen with the tensor's device current, on that device's current stream.
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device).cuda_stream
            _core.cuda.lap_batch(  # type: ignore[attr-defined]  # CUDA builds only; stubs: CPU build
                x.data_ptr(), "float32" if x.dtype == torch.float32 else "float64", b, n, m,
                bool(maximize), out.data_ptr(), status.data_ptr(), int(stream),
                0 if warm is None else warm.data_ptr(),
                0 if u is None else u.data_ptr(),
                0 if v is None else v.data_ptr(),
                int(block_threads),
                int(shared_state),
                int(row_reduction_passes),
            )
    if check and b > 0 and k > 0:
        bad = torch.nonzero(status).flatten()
        if bad.numel() > 0:  # (nonzero synchronises once: SciPy's contract is to raise here)
            first = int(bad[0])
            msg = _STATUS_MESSAGES.get(int(status[first]), "unknown solver status")
            raise ValueError(msg if b == 1 else f"problem {first} of the batch: {msg}")
    result: tuple = (out, u, v) if return_duals else (out,)
    if not check:
        result += (status,)
    return result if len(result) > 1 else out


def linear_sum_assignment(cost_matrix: Any, maximize: bool = False) -> tuple[Any, Any]:
    """:func:`trajtransfer.linear_sum_assignment` for a CUDA tensor; results on its device.

    Parameters
    ----------
    cost_matrix : (n, m) torch.Tensor on a CUDA device
    maximize : bool

    Returns
    -------
    row_ind, col_ind : (min(n, m),) int64 tensors on the input's device, rows sorted.

    Raises
    ------
    ValueError, TypeError, RuntimeError
        As :func:`solve_batch` (single-problem messages, identical to SciPy's).
    """
    import torch

    _require_cuda_build()
    if cost_matrix.dim() != 2:
        raise ValueError(
            f"expected a 2-d tensor cost_matrix of shape (n, m), got a {cost_matrix.dim()}-d "
            f"tensor of shape {tuple(cost_matrix.shape)}"
        )
    n, m = (int(s) for s in cost_matrix.shape)
    device = cost_matrix.device
    if n == 0 or m == 0:
        empty = torch.empty(0, dtype=torch.int64, device=device)
        return empty, empty.clone()
    idx = solve_batch(cost_matrix.unsqueeze(0), maximize, name="cost_matrix")[0]
    if n <= m:
        return torch.arange(n, dtype=torch.int64, device=device), idx
    order = torch.argsort(idx, stable=True)
    return idx[order], order


def linear_sum_assignment_batch(costs: Any, maximize: bool = False) -> Any:
    """:func:`trajtransfer.linear_sum_assignment_batch` for a CUDA tensor.

    Parameters
    ----------
    costs : (B, n, m) torch.Tensor on a CUDA device
    maximize : bool

    Returns
    -------
    (B, min(n, m)) int64 tensor on the input's device (same convention as the CPU version).

    Raises
    ------
    ValueError, TypeError, RuntimeError
        As :func:`solve_batch`.
    """
    import torch

    _require_cuda_build()
    if costs.dim() != 3:
        raise ValueError(
            f"expected a 3-d tensor costs of shape (B, n, m), got a {costs.dim()}-d tensor of "
            f"shape {tuple(costs.shape)}"
        )
    b, n, m = (int(s) for s in costs.shape)
    if b == 0 or n == 0 or m == 0:
        return torch.empty((b, min(n, m)), dtype=torch.int64, device=costs.device)
    return solve_batch(costs, maximize)
