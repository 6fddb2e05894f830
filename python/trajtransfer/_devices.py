"""Torch device helpers shared by the method tier and the experiment kit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional


def default_device() -> Any:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def module_device(model: Any) -> Any:
    """The device of a module's first parameter (or buffer); CPU for an empty module."""
    import torch

    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def state_device(obj: Any) -> Optional[Any]:
    """The device of a module or of the first tensor of a state dict (None if it holds none)."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return module_device(obj)
    if isinstance(obj, Mapping):
        for v in obj.values():
            if isinstance(v, torch.Tensor):
                return v.device
    return None


def to_device(x: Any, device: Any) -> Any:
    """Move one tensor to ``device``; a host-to-GPU copy goes through pinned memory, async."""
    if x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def batch_to(batch: Any, device: Any) -> Any:
    """A minibatch ``(x, y)`` (or a bare ``x``) on ``device``."""
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(t, device) for t in batch)
    return to_device(batch, device)


def synchronize(device: Any) -> None:
    """Wait for the device's queued work (a no-op on the CPU): phase timers stay honest."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.synchronize(device)
