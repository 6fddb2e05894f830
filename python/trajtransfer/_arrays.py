"""Conversions between user inputs (numpy arrays, torch tensors) and what ``_core`` accepts."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def is_torch_tensor(x: Any) -> bool:
    """True for a ``torch.Tensor`` without importing torch when it is not loaded."""
    mod = type(x).__module__
    return mod.startswith("torch") and hasattr(x, "detach") and hasattr(x, "device")


def to_numpy(x: Any, name: str) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """Return ``x`` as a numpy array and a function that turns results back into x's kind.

    CPU tensors cross zero-copy; the returned wrapper converts int64 results back to tensors.
    """
    if is_torch_tensor(x):
        if x.device.type != "cpu":
            raise ValueError(
                f"{name} is on device {x.device}; this build of trajtransfer solves on the CPU only "
                "(build with TRAJTRANSFER_CUDA=ON for the CUDA backend) - move it with .cpu()"
            )
        import torch

        if x.is_complex():
            raise TypeError(f"{name} must be real, got dtype {x.dtype}")
        arr = x.detach().resolve_conj().resolve_neg().numpy() if x.dtype != torch.bfloat16 else (
            x.detach().float().numpy()
        )

        def back(a: np.ndarray) -> Any:
            return torch.from_numpy(np.ascontiguousarray(a))

        return arr, back
    return np.asarray(x), lambda a: a


def as_float_cost(arr: np.ndarray, name: str) -> np.ndarray:
    """SciPy's dtype policy, except that float32 stays float32 (it is solved in float32).

    Integers and booleans become float64 (as in SciPy); float16 becomes float32.
    """
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype == np.float32 or arr.dtype == np.float64:
            return np.ascontiguousarray(arr)
        if arr.dtype.itemsize < 4:
            return np.ascontiguousarray(arr, dtype=np.float32)
        return np.ascontiguousarray(arr, dtype=np.float64)
    if kind in "biu":
        return np.ascontiguousarray(arr, dtype=np.float64)
    if kind == "c":
        raise TypeError(f"{name} must be real-valued, got complex dtype {arr.dtype}")
    try:
        return np.ascontiguousarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}") from exc
