"""Weight gradients as low-rank factors, captured while the gradients are computed.

For an ``nn.Linear`` (and a 1×1, stride-1, unpadded, ungrouped ``nn.Conv2d``) the weight
gradient of a loss is ``Δᵀ A``: ``A`` the layer's inputs, ``Δ`` the loss's gradient with respect
to its outputs, one row per sample (and spatial position). A forward hook keeps ``A`` and hooks
the output tensor for ``Δ``; the same backward pass that fills ``.grad`` delivers them, so no
second pass is needed. Biases and every other layer (BatchNorm, larger kernels) stay dense.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from ..core.factored import Factored

__all__ = ["FactorCapture", "factorable_layers"]


def _is_pointwise_conv(module: Any) -> bool:
    import torch

    return (isinstance(module, torch.nn.Conv2d) and tuple(module.kernel_size) == (1, 1)
            and tuple(module.stride) == (1, 1) and module.groups == 1
            and module.padding in ((0, 0), "valid") and module.padding_mode == "zeros")


def factorable_layers(model: Any) -> dict:
    """``{weight name: module}`` of the layers whose weight gradient is captured as factors.

    Linear layers and pointwise convolutions whose weight is a plain trainable parameter of
    that module alone (a weight shared with another module, or computed by a parametrization,
    gets gradient from elsewhere too, so it stays dense).
    """
    import torch

    owners: dict = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p_name, p in module._parameters.items():
            if p is not None:
                owners.setdefault(id(p), []).append((mod_name, p_name))
    out = {}
    for mod_name, module in model.named_modules():
        if not (isinstance(module, torch.nn.Linear) or _is_pointwise_conv(module)):
            continue
        w = module._parameters.get("weight")
        if w is None or not w.requires_grad or len(owners.get(id(w), ())) != 1:
            continue
        out[f"{mod_name}.weight" if mod_name else "weight"] = module
    return out


class FactorCapture:
    """Collects ``(Δ, A)`` of :func:`factorable_layers` during backward passes.

    Use::

        cap = FactorCapture(model)
        with cap.recording():
            for x, y in batches:
                loss(model(x), y).backward()
        factors = cap.factors(scale=1 / len(batches))   # {weight name: Factored}

    A layer that ran no forward or received no gradient in the recording has no entry.
    """

    def __init__(self, model: Any) -> None:
        self.layers = factorable_layers(model)
        self._inputs: dict = {}
        self._deltas: dict = {}

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        self._inputs = {name: [] for name in self.layers}
        self._deltas = {name: [] for name in self.layers}
        handles = [module.register_forward_hook(self._hook(name))
                   for name, module in self.layers.items()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _hook(self, name: str) -> Any:
        inputs, deltas = self._inputs[name], self._deltas[name]
        conv = _is_pointwise_conv(self.layers[name])

        def forward(module: Any, args: tuple, output: Any) -> None:
            if not output.requires_grad:
                return
            i = len(inputs)
            inputs.append(_rows(args[0], conv))
            deltas.append(None)

            def backward(grad: Any) -> None:
                deltas[i] = _rows(grad, conv)  # by call index: repeated calls come back reversed

            output.register_hook(backward)

        return forward

    def factors(self, scale: float = 1.0) -> dict:
        """``{weight name: Factored}`` summed over every recorded call (rows stacked)."""
        import torch

        out = {}
        for name, module in self.layers.items():
            pairs = [(d, a) for d, a in zip(self._deltas[name], self._inputs[name])
                     if d is not None]
            if not pairs:
                continue
            delta = torch.cat([d for d, _ in pairs]) if len(pairs) > 1 else pairs[0][0]
            inputs = torch.cat([a for _, a in pairs]) if len(pairs) > 1 else pairs[0][1]
            if scale != 1.0:
                delta = delta * scale
            out[name] = Factored(delta, inputs, tuple(module.weight.shape))
        self._inputs, self._deltas = {}, {}
        return out


def _rows(x: Any, conv: bool) -> Any:
    """(..., units) -> rows of a Linear's input or output; a conv's ([N,] C, H, W) -> (N·H·W, C)."""
    x = x.detach()
    if conv:
        x = x.movedim(-3, -1)
    return x.reshape(-1, x.shape[-1])
