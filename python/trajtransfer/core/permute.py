"""Applying, inverting and composing permutations of a network's tensors.

A permutation set ``perms`` maps each group name of a :class:`~trajtransfer.core.spec.PermutationSpec`
to an int64 index array of length n_p (numpy or torch, on any device) or to None (identity).
Index semantics (algorithm-spec §2.1): applying ``perms`` gathers along every axis carrying group
p: new slice i = old slice ``perms[p][i]`` (``index_select(axis, perms[p])``). In matrix terms
``W -> P_out W P_in^T`` with ``P[i, perms[i]] = 1``.

Specs with structured entries (:mod:`trajtransfer.core.block_axes`) also hold block groups, an
``(H,)`` array like any group, and inner groups, one ``(H, d)`` array whose row h permutes the
positions of old block h: along a block axis, new slice (i, j) = old slice (σ[i], τ[σ[i], j]).
Inverting or composing inner groups needs their block group, so those two functions take
``spec=`` for such sets.

>>> import numpy as np
>>> from trajtransfer.core.spec import mlp_spec
>>> spec = mlp_spec(1, bias=False)
>>> params = {"layers.0.weight": np.arange(6.0).reshape(3, 2), "layers.1.weight": np.ones((1, 3))}
>>> out = apply_permutation(spec, {"c1": np.array([2, 0, 1])}, params)
>>> out["layers.0.weight"][:, 0].tolist()
[4.0, 0.0, 2.0]
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np

from .._arrays import is_torch_tensor
from .block_axes import axis_index, is_structured
from .spec import PermutationSpec, validate_spec

__all__ = [
    "apply_permutation",
    "apply_inverse_permutation",
    "invert_permutation",
    "compose_permutations",
    "random_permutation",
    "identity_permutation",
    "permute_model",
]


def _check_perm(group: str, perm: Any, shape: tuple) -> Any:
    """Return ``perm`` as an int64 numpy array or torch tensor of ``shape``, checked to be a
    permutation of ``shape[-1]`` (each row, for an inner group's ``(H, d)`` array)."""
    n = shape[-1]
    want = f"({n},) (the group's size)" if len(shape) == 1 else \
        f"{shape} (block count, block length: one permutation per block)"
    if is_torch_tensor(perm):
        import torch

        if perm.dtype.is_floating_point or perm.dtype.is_complex or perm.dtype == torch.bool:
            raise TypeError(f"perms[{group!r}] must hold integers, got dtype {perm.dtype}")
        if tuple(perm.shape) != shape:
            raise ValueError(f"perms[{group!r}] must have shape {want}, got {tuple(perm.shape)}")
        perm = perm.detach().to(torch.int64)
        # One device sync per group: cheap next to the gathers it guards.
        ok = bool(torch.equal(torch.sort(perm, dim=-1).values,
                              torch.arange(n, device=perm.device).expand(shape)))
    else:
        arr = np.asarray(perm)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"perms[{group!r}] must hold integers, got dtype {arr.dtype}")
        if arr.shape != shape:
            raise ValueError(f"perms[{group!r}] must have shape {want}, got {arr.shape}")
        perm = arr.astype(np.int64, copy=False)
        ok = bool(np.array_equal(np.sort(perm, axis=-1), np.broadcast_to(np.arange(n), shape)))
    if not ok:
        rows = "" if len(shape) == 1 else " in every row"
        raise ValueError(f"perms[{group!r}] is not a permutation of 0..{n - 1}{rows}")
    return perm


def _invert_one(perm: Any) -> Any:
    if perm is None:
        return None
    if is_torch_tensor(perm):
        import torch

        return torch.argsort(perm.to(torch.int64))
    return np.argsort(np.asarray(perm)).astype(np.int64)


class _IndexCache:
    """Per-group indices converted once per (kind, device): the same index serves many tensors;
    structured entries' flat indices are cached per (entry, length, kind, device)."""

    def __init__(self, perms: Mapping[str, Any], forward: Mapping[str, Any],
                 inverse: bool) -> None:
        self._perms = perms
        self._forward = forward
        self._inverse = inverse
        self._cache: dict = {}

    def _convert(self, perm: Any, key: tuple, like: Any) -> Any:
        if key not in self._cache:
            if is_torch_tensor(like):
                import torch

                t = perm if is_torch_tensor(perm) else torch.from_numpy(np.ascontiguousarray(perm))
                self._cache[key] = t.to(device=like.device, dtype=torch.int64)
            else:
                self._cache[key] = perm.detach().cpu().numpy() if is_torch_tensor(perm) else perm
        return self._cache[key]

    @staticmethod
    def _kind(like: Any) -> tuple:
        return ("torch", str(like.device)) if is_torch_tensor(like) else ("numpy",)

    def get(self, group: str, like: Any) -> Any:
        return self._convert(self._perms[group], (group, *self._kind(like)), like)

    def structured(self, entry: Any, length: int, like: Any) -> Any:
        """Flat gather index of a structured entry (None: identity), inverted if asked."""
        key = (entry, length, *self._kind(like))
        if key not in self._cache:
            local = {g: self._convert(p, ("fwd", g, *self._kind(like)), like)
                     for g, p in self._forward.items()}
            idx = axis_index(entry, length, local, like)
            if idx is not None and self._inverse:
                idx = _invert_one(idx)
            self._cache[key] = idx
        return self._cache[key]


def apply_permutation(
    spec: PermutationSpec,
    perms: Optional[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    inverse: bool = False,
    check: bool = True,
) -> dict:
    """Permute a dict of tensors (parameters, buffers, gradients, displacements) by ``perms``.

    Parameters
    ----------
    spec : PermutationSpec
    perms : Mapping[str, (n_p,) int array | torch.LongTensor | None] or None
        One entry per group carried by a tensor of ``params`` (None = identity for that group;
        an inner group's entry is ``(H, d)``, see the module docstring);
        ``perms=None`` is the identity for every group. Groups the spec does not know are an
        error. numpy and torch indices both work with either kind of tensor.
    params : Mapping[str, numpy.ndarray | torch.Tensor]
        Any subset of the spec's tensors (parameters and/or buffers). Torch tensors may live on any
        device and have any dtype.
    inverse : bool
        Apply the inverse permutation instead (``perms`` is inverted first).
    check : bool
        Check that every index array is a permutation of its group's size (one small sort per
        group; on CUDA one sync per group).

    Returns
    -------
    dict[str, numpy.ndarray | torch.Tensor]
        New tensors, same keys and order, each of the input's kind, dtype and device. Tensors with
        no permuted axis (or identity groups only) are copied, never aliased. Autograd history is
        kept for torch tensors (``index_select``).

    Raises
    ------
    ValueError
        If ``params`` holds a tensor the spec lacks, shapes disagree with the spec (see
        :func:`~trajtransfer.core.spec.validate_spec`), ``perms`` names an unknown group or lacks a
        group that a tensor carries, or an entry is not a permutation of the group's size.
    TypeError
        If an index array is not integer.

    Examples
    --------
    A hidden-unit shuffle of a one-hidden-layer MLP changes the tensors but not the function:

    >>> import numpy as np
    >>> from trajtransfer.core.spec import mlp_spec
    >>> spec = mlp_spec(1, bias=False)
    >>> rng = np.random.default_rng(0)
    >>> p = {"layers.0.weight": rng.normal(size=(4, 3)), "layers.1.weight": rng.normal(size=(2, 4))}
    >>> q = apply_permutation(spec, {"c1": np.array([3, 1, 0, 2])}, p)
    >>> q["layers.0.weight"][0].tolist() == p["layers.0.weight"][3].tolist()
    True
    >>> x = rng.normal(size=3)
    >>> f = lambda t: t["layers.1.weight"] @ np.maximum(t["layers.0.weight"] @ x, 0)
    >>> bool(np.allclose(f(p), f(q)))
    True
    """
    sizes = validate_spec(spec, params, require_all=False)
    all_identity = perms is None
    if not (all_identity or isinstance(perms, Mapping)):
        raise TypeError("perms must be a mapping from group name to index array, "
                        f"got {type(perms).__name__}")
    perms = {} if perms is None else dict(perms)
    unknown = [g for g in perms if g not in spec.perm_to_axes]
    if unknown:
        raise ValueError(f"perms has group(s) {unknown} that the spec does not define "
                         f"(spec groups: {spec.groups})")
    resolved: dict = {}
    forward: dict = {}
    for group in sizes:
        if group not in perms and not all_identity:
            raise ValueError(f"perms has no entry for group {group!r} (use None for the identity)")
        p = perms.get(group)
        if p is None:
            continue
        p = _check_perm(group, p, spec.perm_shape(group, sizes)) if check else p
        forward[group] = p
        if group not in spec.inner_of and group not in spec.block_counts:
            resolved[group] = _invert_one(p) if inverse else p
    index = _IndexCache(resolved, forward, inverse)
    out: dict = {}
    for name, x in params.items():
        y = x
        for ax, group in enumerate(spec.axes_to_perm[name]):
            if is_structured(group):
                idx = index.structured(group, int(x.shape[ax]), x)
                if idx is None:
                    continue
            elif group is None or group not in resolved:
                continue
            else:
                idx = index.get(group, x)
            if is_torch_tensor(y):
                y = y.index_select(ax, idx)
            else:
                y = np.take(np.asarray(y), idx, axis=ax)
        if y is x:
            y = x.clone() if is_torch_tensor(x) else np.array(x, copy=True)
        out[name] = y
    if hasattr(params, "_metadata"):  # torch state_dict: keep the version metadata load needs
        from collections import OrderedDict

        od: Any = OrderedDict(out)
        od._metadata = params._metadata
        return od
    return out


def apply_inverse_permutation(
    spec: PermutationSpec,
    perms: Optional[Mapping[str, Any]],
    params: Mapping[str, Any],
    **kwargs: Any,
) -> dict:
    """Undo :func:`apply_permutation`: ``apply_permutation(..., inverse=True)``."""
    return apply_permutation(spec, perms, params, inverse=True, **kwargs)


def _inner_inputs(perms: Mapping[str, Any], spec: Optional[PermutationSpec], what: str) -> None:
    """Refuse ``(H, d)`` inner-group entries without the spec that names their block groups."""
    if spec is not None:
        if not isinstance(spec, PermutationSpec):
            raise TypeError(f"spec must be a PermutationSpec, got {type(spec).__name__}")
        return
    two_d = [g for g, p in perms.items() if p is not None and getattr(p, "ndim", 1) != 1]
    if two_d:
        raise ValueError(f"{what}: group(s) {two_d} have 2-D (inner-group) permutations; pass "
                         "spec= so that their block groups are known")


def _rows_gather(a: Any, idx: Any) -> Any:
    """``out[h, j] = a[h, idx[h, j]]`` for numpy or torch (``idx`` moved to ``a``'s kind)."""
    if is_torch_tensor(a):
        import torch

        it = idx if is_torch_tensor(idx) else torch.from_numpy(np.ascontiguousarray(idx))
        return torch.gather(a.to(torch.int64), 1, it.to(device=a.device, dtype=torch.int64))
    ix = idx.detach().cpu().numpy() if is_torch_tensor(idx) else np.asarray(idx)
    return np.take_along_axis(np.asarray(a, dtype=np.int64), ix.astype(np.int64), axis=1)


def _rows(a: Any, idx: Any) -> Any:
    """``a[idx]`` along the first axis, ``idx`` moved to ``a``'s kind."""
    if is_torch_tensor(a):
        import torch

        it = idx if is_torch_tensor(idx) else torch.from_numpy(np.ascontiguousarray(idx))
        return a[it.to(device=a.device, dtype=torch.int64)]
    ix = idx.detach().cpu().numpy() if is_torch_tensor(idx) else np.asarray(idx)
    return np.asarray(a)[ix]


def invert_permutation(perms: Any, spec: Optional[PermutationSpec] = None) -> Any:
    """Inverse of a permutation set (``{group: perm}``) or of one index array.

    ``inv[perm[i]] = i``; None (identity) stays None. numpy stays numpy, torch stays torch on
    its device. An inner group's ``(H, d)`` entry inverts to ``inv[h] = argsort(τ[σ[h]])`` (σ its
    block group's permutation), which needs ``spec``.

    Raises
    ------
    ValueError
        For 2-D entries without ``spec``.
    """
    if not isinstance(perms, Mapping):
        return _invert_one(perms)
    _inner_inputs(perms, spec, "invert_permutation")
    out = {g: _invert_one(p) for g, p in perms.items()}
    for g, p in perms.items():
        if p is None or spec is None or g not in spec.inner_of:
            continue
        sigma = perms.get(spec.inner_of[g])
        moved = p if sigma is None else _rows(p, sigma)
        out[g] = _argsort_rows(moved)
    return out


def _argsort_rows(a: Any) -> Any:
    if is_torch_tensor(a):
        import torch

        return torch.argsort(a.to(torch.int64), dim=-1)
    return np.argsort(np.asarray(a), axis=-1).astype(np.int64)


def _gather(a: Any, b: Any) -> Any:
    if is_torch_tensor(a):
        import torch

        bt = b if is_torch_tensor(b) else torch.from_numpy(np.ascontiguousarray(b))
        return a.to(torch.int64)[bt.to(device=a.device, dtype=torch.int64)]
    bn = b.detach().cpu().numpy() if is_torch_tensor(b) else np.asarray(b)
    return np.asarray(a, dtype=np.int64)[bn]


def compose_permutations(first: Mapping[str, Any], second: Mapping[str, Any],
                         spec: Optional[PermutationSpec] = None) -> dict:
    """The permutation set equal to applying ``first`` and then ``second``.

    ``apply(compose_permutations(p, q), θ) == apply(q, apply(p, θ))``, i.e. ``r[g] = p[g][q[g]]``.
    A group missing from one side or None there is the identity on that side. The result has the
    kind (numpy/torch) of ``first``'s entry where both are given. An inner group composes as
    ``r[h] = p[h][q[σ_p⁻¹[h]]]`` (σ_p: ``first``'s block group), which needs ``spec``.

    Raises
    ------
    ValueError
        If two entries of one group have different lengths, or for 2-D entries without ``spec``.
    """
    _inner_inputs(first, spec, "compose_permutations")
    _inner_inputs(second, spec, "compose_permutations")
    out: dict = {}
    for g in list(first) + [g for g in second if g not in first]:
        p, q = first.get(g), second.get(g)
        if p is None or q is None:
            out[g] = q if p is None else p
            continue
        if len(p) != len(q):
            raise ValueError(
                f"group {g!r}: cannot compose permutations of lengths {len(p)} and {len(q)}"
            )
        if spec is not None and g in spec.inner_of:
            sigma = first.get(spec.inner_of[g])
            q_moved = q if sigma is None else _rows(q, _invert_one(sigma))
            out[g] = _rows_gather(p, q_moved)
            continue
        out[g] = _gather(p, q)
    return out


def _to_device(perms: dict, device: Any) -> dict:
    if device is None:
        return perms
    import torch

    return {g: torch.from_numpy(p).to(device) for g, p in perms.items()}


def random_permutation(
    spec: PermutationSpec, params: Mapping[str, Any], seed: Any = None, *, device: Any = None
) -> dict:
    """Uniformly random permutation of every group carried by a tensor of ``params``.

    Parameters
    ----------
    spec : PermutationSpec
    params : Mapping[str, array]
        Gives the group sizes (see :meth:`PermutationSpec.group_sizes`).
    seed : int | numpy.random.Generator | None
        Seeds ``numpy.random.default_rng``; groups are drawn in the spec's group order, so a seed
        gives the same permutations on every platform.
    device : torch.device | str | None
        If given, return torch int64 tensors on that device instead of numpy arrays.

    Returns
    -------
    dict[str, (n_p,) int64 array]
        ``(H, d)`` for an inner group.
    """
    sizes = spec.group_sizes(params)
    rng = np.random.default_rng(seed)
    perms = {}
    for g in spec.groups:
        if g in sizes:
            shape = spec.perm_shape(g, sizes)
            perms[g] = np.stack([rng.permutation(shape[-1]) for _ in range(math.prod(shape[:-1]))]
                                ).astype(np.int64).reshape(shape)
    return _to_device(perms, device)


def identity_permutation(
    spec: PermutationSpec, params: Mapping[str, Any], *, device: Any = None
) -> dict:
    """``{group: arange(n_p)}`` for every group carried by a tensor of ``params`` (an inner
    group: ``arange(d)`` in each of its H rows)."""
    sizes = spec.group_sizes(params)
    perms = {g: np.ascontiguousarray(np.broadcast_to(np.arange(sizes[g], dtype=np.int64),
                                                     spec.perm_shape(g, sizes)))
             for g in spec.groups if g in sizes}
    return _to_device(perms, device)


def permute_model(
    model: Any, perms: Optional[Mapping[str, Any]], spec: Optional[PermutationSpec] = None
) -> Any:
    """Permute a ``torch.nn.Module`` in place (parameters and buffers); returns the model.

    Parameters
    ----------
    model : torch.nn.Module
    perms : Mapping[str, index array | None] or None
        As for :func:`apply_permutation`.
    spec : PermutationSpec, optional
        Default ``model.permutation_spec()`` (the reference models have one). State-dict entries
        the spec does not list are left as they are; only buffers may be unlisted (e.g. running
        statistics under the paper's parameters-only spec).

    Raises
    ------
    ValueError
        If no spec is given and the model has no ``permutation_spec()``, a parameter of the
        model is not in the spec, a spec tensor is missing from the model, or as
        :func:`apply_permutation`.
    """
    import torch

    if spec is None:
        if not hasattr(model, "permutation_spec"):
            raise ValueError(f"{type(model).__name__} has no permutation_spec(); pass spec=")
        spec = model.permutation_spec()
    state = model.state_dict()
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    unlisted = [k for k in state if k in params and k not in spec.axes_to_perm]
    if unlisted:
        raise ValueError(f"parameters {unlisted[:8]} of the model are not in the spec")
    listed = {k: v for k, v in state.items() if k in spec.axes_to_perm}
    validate_spec(spec, listed, require_all=True)
    with torch.no_grad():
        model.load_state_dict({**state, **apply_permutation(spec, perms, listed)})
    return model
