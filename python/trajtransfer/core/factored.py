"""A gradient given by its low-rank factors, for the matcher.

A Linear layer's weight gradient over a minibatch is ``G = Δᵀ A``: ``Δ`` (B × n_out) the
back-propagated output gradients, ``A`` (B × n_in) the layer's inputs (a 1×1 convolution's too,
with B = batch × spatial positions). The matcher's cost terms and objective need only products
of the factors, so a pair can carry ``Factored(delta, inputs)`` instead of ``G``: a cost term
``Σₖ G_t,k Π G_s,kᵀ`` becomes ``Σₖ Δ_t,kᵀ (A_t,k Π A_s,kᵀ) Δ_s,k``, far cheaper when
``B · (n_in + n_out) < n_in · n_out``.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from .._arrays import is_torch_tensor

__all__ = ["Factored", "factored_pays", "takes_factors", "keeps_factors"]


def factored_pays(rows: int, n_out: int, n_in: int) -> bool:
    """Whether the factors are the cheaper form: fewer floats than the dense gradient.

    ``rows · (n_in + n_out) < n_in · n_out`` also orders the cost-term GEMMs the same way
    (``rows² · (n_in + n_out) + n² · rows`` against ``n² · n_in`` per pair).
    """
    return rows * (n_in + n_out) < n_in * n_out


def takes_factors(shape: Sequence[int], axis_groups: Sequence[int]) -> bool:
    """Whether a tensor of this shape, with these axis groups (-1: unpermuted), can be stored as
    factors: ``(n_out, n_in)`` up to unpermuted trailing axes of size 1."""
    return len(shape) >= 2 and all(s == 1 and g < 0 for s, g in zip(shape[2:], axis_groups[2:]))


def keeps_factors(x: Any, y: Any, factorable: bool) -> bool:
    """The matcher's rule, the same on every path: a pair's tensor is stored as its factors when
    both sides come :class:`Factored`, the tensor takes factors (:func:`takes_factors`) and they
    are the cheaper form for the larger side (:func:`factored_pays`)."""
    if not (factorable and isinstance(x, Factored) and isinstance(y, Factored)):
        return False
    return factored_pays(max(x.rows, y.rows), x.shape[0], math.prod(x.shape[1:]))


class Factored:
    """The gradient ``delta.T @ inputs``, reshaped to ``shape``, kept as its two factors.

    Parameters
    ----------
    delta : (B, n_out) array or tensor
        Gradients of the loss with respect to the layer's outputs, one row per input row (for a
        mean loss over a minibatch they carry the 1/B).
    inputs : (B, n_in) array or tensor
        The layer's inputs, one row per output row (for a 1×1 convolution: one row per sample
        and spatial position).
    shape : sequence of int, optional
        The parameter's shape; default ``(n_out, n_in)``. Its first axis must be ``n_out`` and
        the product of the others ``n_in`` (e.g. ``(n_out, n_in, 1, 1)`` for a 1×1 convolution).

    The matcher keeps the factors when that is cheaper (:func:`factored_pays`) and the tensor is
    ``(n_out, n_in)`` up to trailing axes of size 1; otherwise it uses :meth:`dense`.

    Raises
    ------
    TypeError
        A factor is not a real numeric array or tensor, or the two are of different kinds.
    ValueError
        Factors that are not 2-D, differ in their number of rows or devices, or do not fit
        ``shape``.
    """

    __slots__ = ("delta", "inputs", "shape")

    def __init__(self, delta: Any, inputs: Any, shape: Optional[Sequence[int]] = None) -> None:
        for name, x in (("delta", delta), ("inputs", inputs)):
            dims = getattr(x, "shape", None)
            if dims is None or not hasattr(x, "dtype"):
                raise TypeError(f"Factored: {name} must be a numpy array or a torch tensor, got "
                                f"{type(x).__name__}")
            if len(dims) != 2:
                raise ValueError(f"Factored: {name} must be 2-D (rows, units), got shape "
                                 f"{tuple(dims)}")
            kind = str(x.dtype)
            if "complex" in kind or "bool" in kind or not ("float" in kind or "int" in kind):
                raise TypeError(f"Factored: {name} must be real numeric, got dtype {x.dtype}")
        if is_torch_tensor(delta) != is_torch_tensor(inputs):
            raise TypeError("Factored: delta and inputs must both be numpy arrays or both be "
                            "torch tensors")
        if is_torch_tensor(delta) and delta.device != inputs.device:
            raise ValueError(f"Factored: delta is on {delta.device} but inputs is on "
                             f"{inputs.device}")
        rows, n_out = (int(s) for s in delta.shape)
        rows_in, n_in = (int(s) for s in inputs.shape)
        if rows != rows_in:
            raise ValueError(f"Factored: delta has {rows} rows but inputs has {rows_in}: row i "
                             "of each must belong to the same sample (and position)")
        dims = (n_out, n_in) if shape is None else tuple(int(s) for s in shape)
        if len(dims) < 2 or dims[0] != n_out or math.prod(dims[1:]) != n_in:
            raise ValueError(f"Factored: shape {dims} does not fit delta ({rows}, {n_out}) and "
                             f"inputs ({rows}, {n_in}): expected shape[0] == {n_out} and the "
                             f"product of the other axes == {n_in}")
        self.delta = delta
        self.inputs = inputs
        self.shape = dims

    @property
    def rows(self) -> int:
        return int(self.delta.shape[0])

    @property
    def device(self) -> Any:
        """The factors' torch device, or ``"cpu"`` for numpy factors."""
        return self.delta.device if is_torch_tensor(self.delta) else "cpu"

    @property
    def is_torch(self) -> bool:
        return is_torch_tensor(self.delta)

    def is_matrix(self) -> bool:
        """``(n_out, n_in)`` up to trailing axes of size 1: the layouts the factors serve."""
        return all(s == 1 for s in self.shape[2:])

    def dense(self) -> Any:
        """The gradient itself, ``delta.T @ inputs`` reshaped to ``shape``."""
        return (self.delta.T @ self.inputs).reshape(self.shape)

    def norm(self) -> Any:
        """Frobenius norm, from the factors: ``sqrt(Σ (Δ Δᵀ) ⊙ (A Aᵀ))``, summed in float64."""
        if self.is_torch:
            d, a = self.delta.double(), self.inputs.double()
            return ((d @ d.T) * (a @ a.T)).sum().clamp(min=0).sqrt()
        import numpy as np

        d, a = np.asarray(self.delta, np.float64), np.asarray(self.inputs, np.float64)
        return float(np.sqrt(max(((d @ d.T) * (a @ a.T)).sum(), 0.0)))

    def __repr__(self) -> str:
        return (f"Factored(rows={self.rows}, shape={self.shape}, "
                f"device={self.device})")
