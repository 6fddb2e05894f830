"""Conversions between user inputs (numpy arrays, torch tensors) and what ``_core`` accepts."""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

import numpy as np


def is_torch_tensor(x: Any) -> bool:
    """True for a ``torch.Tensor`` without importing torch when it is not loaded."""
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "detach") and hasattr(x, "device")


def to_numpy(x: Any, name: str) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """Return ``x`` as a numpy array and a function that turns results back into x's kind.

    CPU tensors cross zero-copy; a tensor on another device is copied to the host. The returned
    wrapper turns int64 results back into tensors on the input's device.
    """
    if is_torch_tensor(x):
        import torch

        if x.is_complex():
            raise TypeError(f"{name} must be real, got dtype {x.dtype}")
        device = x.device
        if device.type == "meta":
            raise ValueError(f"{name} is a meta tensor (no data) on {device}")
        x = x.detach().cpu()
        arr = x.resolve_conj().resolve_neg().numpy() if x.dtype != torch.bfloat16 else (
            x.float().numpy()
        )

        def back(a: np.ndarray) -> Any:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        return arr, back
    return np.asarray(x), lambda a: a


def float32_view(x: Any) -> Optional[np.ndarray]:
    """``x`` as a C-contiguous float32 numpy array **without a copy**, or None.

    The fast path of :meth:`~trajtransfer.core.match.GradientMatcher.add` (gradients arrive as
    contiguous float32 CPU tensors): None means "needs a conversion or a check", and the caller
    falls back to :func:`to_numpy`, whose errors name the argument.
    """
    if type(x) is np.ndarray:
        return x if x.dtype == np.float32 and x.flags.c_contiguous else None
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(x, torch.Tensor):
        return None
    try:
        # Zero-copy for a CPU tensor; refuses (RuntimeError / TypeError) one that requires
        # grad, lives on another device, has its conjugate or negative bit set, or has a dtype
        # numpy lacks. Those, and the strided or non-float32 ones, take the checked path.
        arr = x.numpy()
    except (RuntimeError, TypeError):
        return None
    return arr if arr.dtype == np.float32 and arr.flags.c_contiguous else None


def cost_to_numpy(x: Any, name: str) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """:func:`to_numpy` for cost matrices, converting as SciPy's ``linear_sum_assignment`` does.

    SciPy asks numpy for a float64 array of anything that is not already an ndarray, so nested
    lists of numeric strings are parsed and ``None`` becomes NaN (then rejected as an invalid
    entry); ndarrays (and tensors, through their ndarray) go through :func:`as_float_cost`.
    """
    if isinstance(x, np.ndarray) or is_torch_tensor(x):
        return to_numpy(x, name)
    return np.asarray(x, dtype=np.float64), lambda a: a


def as_float_cost(arr: np.ndarray) -> np.ndarray:
    """SciPy's dtype policy for an ndarray, except that float32 stays float32.

    SciPy casts to float64 under numpy's "safe" rule: integers, booleans and float16 are
    accepted (float16 becomes float32 here, exactly), everything else (complex, long double,
    strings, bytes, datetimes, objects, structured) raises SciPy's (numpy's) TypeError.
    """
    dt = arr.dtype
    if dt == np.float32 or dt == np.float64:
        return np.asarray(arr, order="C")  # (ascontiguousarray makes 0-d 1-d)
    if dt == np.float16:
        return np.asarray(arr, dtype=np.float32, order="C")
    if not np.can_cast(dt, np.float64, casting="safe"):
        raise TypeError(f"Cannot cast array data from {dt!r} to dtype('float64') according to "
                        "the rule 'safe'")
    return np.asarray(arr, dtype=np.float64, order="C")
