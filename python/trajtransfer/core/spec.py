"""Permutation specs: which tensor axes each hidden-unit permutation group acts on.

Compatible with Git Re-Basin (Ainsworth et al., 2023): ``axes_to_perm`` maps each tensor name to a
tuple with one entry per axis, a group name or ``None``; ``perm_to_axes`` is the inverse map.

Index semantics (algorithm-spec.md §2.1): ``perm[p]`` is an int64 array of length n_p; applying it
to a tensor gathers along every axis that carries p: new slice i = old slice ``perm[p][i]``.

Beyond Git Re-Basin, an axis entry may be structured (:mod:`trajtransfer.core.block_axes`): a
:class:`~trajtransfer.core.block_axes.Blocks` entry is a block-structured group (H heads acting on
an axis of H·d in blocks of d) with an optional inner group (one permutation of the d positions per
block, stored as an ``(H, d)`` array), and a :class:`~trajtransfer.core.block_axes.Concat` entry
packs equal segments on one axis (torch's q, k, v in ``in_proj_weight``). Plain entries work
unchanged. :func:`transformer_spec` and :func:`vit_spec` build the Transformer's symmetries.

Builders here use PyTorch layouts (``Linear.weight`` is ``(out, in)``, ``Conv2d.weight`` is
``(out, in, kh, kw)``) and the state-dict names of the reference models in
:mod:`trajtransfer.kit.models`.

>>> spec = mlp_spec(1)
>>> spec.axes_to_perm["layers.0.weight"], spec.axes_to_perm["layers.1.weight"]
(('c1', None), (None, 'c1'))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from .block_axes import (
    Blocks,
    Concat,
    entry_groups,
    entry_to_json,
    is_structured,
    normalise_entry,
    part_sizes,
)

__all__ = [
    "PermutationSpec",
    "permutation_spec_from_axes_to_perm",
    "validate_spec",
    "chain_spec",
    "mlp_spec",
    "conv_spec",
    "resnet_spec",
    "transformer_spec",
    "vit_spec",
    "attention_axes",
    "encoder_layer_axes",
    "Blocks",
    "Concat",
    "CONV8_LAYERS",
]


@dataclass(frozen=True)
class PermutationSpec:
    """Permutation groups and the (tensor, axis) pairs they act on.

    Attributes
    ----------
    perm_to_axes : dict[str, list[tuple[str, int]]]
        Group name -> the (tensor name, axis) pairs it permutes.
    axes_to_perm : dict[str, tuple[str | None, ...]]
        Tensor name -> one entry per axis: a group name, None, or a structured entry
        (:class:`Blocks`, :class:`Concat`; see :mod:`trajtransfer.core.block_axes`). Tensors
        with no permuted axis (the head bias, ``num_batches_tracked``) are listed with all-None
        (or empty) tuples.
    buffers : frozenset[str]
        Tensor names that are buffers (e.g. BatchNorm running statistics): permuted by
        ``apply_permutation`` but never part of a matching objective, and allowed to be absent
        from the dicts passed to the matchers.

    Raises
    ------
    ValueError
        If ``perm_to_axes`` and ``axes_to_perm`` disagree, a buffer is not in ``axes_to_perm``,
        an entry is malformed, or a group is used in two roles (plain, block, inner), a block
        group with two counts or an inner group inside two block groups.
    """

    perm_to_axes: dict
    axes_to_perm: dict
    buffers: frozenset = field(default_factory=frozenset)
    #: Block group -> its block count H (derived from the :class:`Blocks` entries).
    block_counts: dict = field(init=False, compare=False, repr=False, default_factory=dict)
    #: Inner group -> the block group it lives in (its permutations are ``(H, d)`` arrays).
    inner_of: dict = field(init=False, compare=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        # Normalise (JSON round trips give lists and dicts) and check that both maps describe
        # the same thing: a hand-made spec with a typo in one map would silently permute the
        # wrong axes.
        a2p = {str(k): tuple(normalise_entry(e, f"axes_to_perm[{k!r}][{i}]")
                             for i, e in enumerate(v))
               for k, v in self.axes_to_perm.items()}
        p2a = {
            str(g): [(str(n), int(a)) for n, a in pairs] for g, pairs in self.perm_to_axes.items()
        }
        derived: dict = {}
        for name, axes in a2p.items():
            for ax, entry in enumerate(axes):
                for group in entry_groups(entry):
                    derived.setdefault(group, set()).add((name, ax))
        given = {g: set(pairs) for g, pairs in p2a.items()}
        if derived != given:
            bad = sorted(set(derived) ^ set(given)) or sorted(
                g for g in derived if derived[g] != given.get(g)
            )
            raise ValueError(
                f"perm_to_axes and axes_to_perm disagree on group(s) {bad}: "
                f"from axes_to_perm {[sorted(derived.get(g, ())) for g in bad]}, "
                f"from perm_to_axes {[sorted(given.get(g, ())) for g in bad]}"
            )
        buffers = frozenset(str(b) for b in self.buffers)
        unknown = sorted(buffers - set(a2p))
        if unknown:
            raise ValueError(f"buffers {unknown} are not tensors of the spec (axes_to_perm keys)")
        object.__setattr__(self, "axes_to_perm", a2p)
        object.__setattr__(self, "perm_to_axes", p2a)
        object.__setattr__(self, "buffers", buffers)
        counts, inner_of = _block_roles(a2p)
        object.__setattr__(self, "block_counts", counts)
        object.__setattr__(self, "inner_of", inner_of)

    def __hash__(self) -> int:
        # The dict fields are unhashable; equal specs have equal axes_to_perm and buffers.
        return hash((tuple(self.axes_to_perm.items()), self.buffers))

    @property
    def groups(self) -> list:
        """Group names, in order of first appearance."""
        return list(self.perm_to_axes)

    @property
    def parameters(self) -> list:
        """Tensor names that are not buffers (the ones that belong to θ)."""
        return [n for n in self.axes_to_perm if n not in self.buffers]

    def group_sizes(self, params: Mapping[str, Any]) -> dict:
        """Size n_p of every group carried by a tensor of ``params`` (checked for consistency).

        Parameters
        ----------
        params : Mapping[str, array]
            Tensors with a ``.shape`` (numpy arrays, torch tensors); a subset of the spec is
            allowed.

        Returns
        -------
        dict[str, int]
            Group name -> size, for the groups that some tensor in ``params`` carries.

        Raises
        ------
        ValueError
            As :func:`validate_spec` with ``require_all=False``.
        """
        return validate_spec(self, params, require_all=False)

    def validate(self, params: Mapping[str, Any], *, require_all: bool = True) -> dict:
        """Check ``params`` against the spec and return the group sizes (:func:`validate_spec`)."""
        return validate_spec(self, params, require_all=require_all)

    def partition(self) -> frozenset:
        """The groups as a set of sets of occurrences: compares specs up to group names.

        A plain occurrence is ``(tensor, axis)``; one inside a structured entry is
        ``(tensor, axis, segment, role, count)`` with role ``"blocks"`` or ``"inner"``.
        """
        occ: dict = {}
        for name, axes in self.axes_to_perm.items():
            for ax, entry in enumerate(axes):
                if not is_structured(entry):
                    if entry is not None:
                        occ.setdefault(entry, set()).add((name, ax))
                    continue
                parts = entry.parts if isinstance(entry, Concat) else (entry,)
                for k, p in enumerate(parts):
                    if isinstance(p, str):
                        occ.setdefault(p, set()).add((name, ax, k, "plain", 1))
                    elif isinstance(p, Blocks):
                        occ.setdefault(p.group, set()).add((name, ax, k, "blocks", p.count))
                        if p.inner is not None:
                            occ.setdefault(p.inner, set()).add((name, ax, k, "inner", p.count))
        return frozenset(frozenset(v) for v in occ.values())

    @property
    def has_blocks(self) -> bool:
        """True if some entry is structured (the native matcher does not take such specs)."""
        return any(is_structured(e) for axes in self.axes_to_perm.values() for e in axes)

    def perm_shape(self, group: str, sizes: Mapping[str, int]) -> tuple:
        """Shape of ``group``'s permutation array: ``(n,)``, or ``(H, d)`` for an inner group."""
        outer = self.inner_of.get(group)
        return (int(sizes[group]),) if outer is None else (int(sizes[outer]), int(sizes[group]))

    def to_json(self) -> str:
        """The spec as JSON (``axes_to_perm`` and ``buffers``); :meth:`from_json` reads it."""
        return json.dumps({"axes_to_perm": {k: [entry_to_json(e) for e in v]
                                            for k, v in self.axes_to_perm.items()},
                           "buffers": sorted(self.buffers)})

    @classmethod
    def from_json(cls, text: str) -> "PermutationSpec":
        """Read :meth:`to_json`'s output (group order: first appearance in ``axes_to_perm``)."""
        data = json.loads(text)
        if not isinstance(data, dict) or "axes_to_perm" not in data:
            raise ValueError("text must be a JSON object with an 'axes_to_perm' key")
        return permutation_spec_from_axes_to_perm(data["axes_to_perm"], data.get("buffers", ()))


_ROLE = {"plain": "a plain group", "block": "a block group", "inner": "an inner group"}


def _block_roles(a2p: Mapping[str, tuple]) -> tuple:
    """Block counts and inner-group owners, checking that every group keeps one role."""
    role: dict = {}
    counts: dict = {}
    inner_of: dict = {}

    def claim(g: str, r: str, where: str) -> None:
        if role.setdefault(g, (r, where))[0] != r:
            raise ValueError(f"group {g!r} is used as {_ROLE[role[g][0]]} at {role[g][1]} and "
                             f"as {_ROLE[r]} at {where}; a group has one role")

    for name, axes in a2p.items():
        for ax, entry in enumerate(axes):
            where = f"({name!r}, axis {ax})"
            parts = entry.parts if isinstance(entry, Concat) else (entry,)
            for p in parts:
                if isinstance(p, str):
                    claim(p, "plain", where)
                elif isinstance(p, Blocks):
                    claim(p.group, "block", where)
                    if counts.setdefault(p.group, p.count) != p.count:
                        raise ValueError(f"block group {p.group!r} has count {counts[p.group]} "
                                         f"elsewhere but {p.count} at {where}")
                    if p.inner is not None:
                        claim(p.inner, "inner", where)
                        if inner_of.setdefault(p.inner, p.group) != p.group:
                            raise ValueError(f"inner group {p.inner!r} lives in block group "
                                             f"{inner_of[p.inner]!r} elsewhere but in "
                                             f"{p.group!r} at {where}")
    return counts, inner_of


def permutation_spec_from_axes_to_perm(
    axes_to_perm: Mapping[str, Sequence[Optional[str]]], buffers: Sequence[str] = ()
) -> PermutationSpec:
    """Build a :class:`PermutationSpec` from a Git Re-Basin ``axes_to_perm`` dict, unchanged.

    Parameters
    ----------
    axes_to_perm : Mapping[str, Sequence[str | None | Blocks | Concat]]
        Tensor name -> one entry per axis: a group name, None, or a structured entry.
    buffers : Sequence[str]
        Names (keys of ``axes_to_perm``) that are buffers, e.g. BatchNorm running statistics.

    Raises
    ------
    ValueError
        If an entry is neither a str, None, :class:`Blocks` nor :class:`Concat` (or their JSON
        dicts), or a buffer is not a key of ``axes_to_perm``.

    Notes
    -----
    A group may sit on two axes of one tensor (an RNN's recurrent weight ``('h', 'h')``): such a
    spec is a valid symmetry for :func:`~trajtransfer.core.permute.apply_permutation` and
    ``permute_model`` (W -> P W Pᵀ), but the matchers refuse it, naming the tensor: one linear
    assignment per group cannot solve a cost quadratic in that permutation.

    Examples
    --------
    >>> spec = permutation_spec_from_axes_to_perm({
    ...     "fc1.weight": ("P1", None), "fc1.bias": ("P1",),
    ...     "fc2.weight": (None, "P1"), "fc2.bias": (None,)})
    >>> spec.perm_to_axes["P1"]
    [('fc1.weight', 0), ('fc1.bias', 0), ('fc2.weight', 1)]
    """
    perm_to_axes: dict = {}
    a2p: dict = {}
    for name, axes in axes_to_perm.items():
        axes = tuple(normalise_entry(e, f"axes_to_perm[{name!r}][{i}]") for i, e in enumerate(axes))
        a2p[name] = axes
        for ax, entry in enumerate(axes):
            for group in entry_groups(entry):
                perm_to_axes.setdefault(group, []).append((name, ax))
    return PermutationSpec(perm_to_axes=perm_to_axes, axes_to_perm=a2p, buffers=frozenset(buffers))


def validate_spec(
    spec: PermutationSpec, params: Mapping[str, Any], *, require_all: bool = True
) -> dict:
    """Check a tensor dict against a spec and return the group sizes.

    Parameters
    ----------
    spec : PermutationSpec
    params : Mapping[str, array]
        Tensors with a ``.shape`` (numpy arrays, torch tensors, anything array-like).
    require_all : bool
        If True, every non-buffer tensor of the spec must be in ``params`` (buffers may always be
        absent). If False, any subset of the spec's tensors is accepted.

    Returns
    -------
    dict[str, int]
        Group name -> size, for every group carried by a tensor present in ``params``: a block
        group's size is its block count H, an inner group's the block length d.

    Raises
    ------
    ValueError
        If ``params`` holds a tensor the spec does not list; if (``require_all``) a spec tensor
        is missing; if a tensor's ndim differs from the length of its axes tuple; if a
        structured axis does not divide into its segments or blocks; or if two
        (tensor, axis) pairs of one group have different sizes. Messages name the tensors, the
        axes and the sizes.
    """
    extra = [k for k in params if k not in spec.axes_to_perm]
    if extra:
        raise ValueError(
            f"{len(extra)} tensor(s) are not in the permutation spec: {_short(extra)}; "
            "add them to axes_to_perm (all-None axes if they are never permuted)"
        )
    if require_all:
        missing = [k for k in spec.axes_to_perm if k not in params and k not in spec.buffers]
        if missing:
            raise ValueError(
                f"{len(missing)} tensor(s) of the permutation spec are missing from the tensor "
                f"dict: {_short(missing)}"
            )
    shapes: dict = {}
    for name in params:
        axes = spec.axes_to_perm[name]
        shape = _shape_of(params[name], name)
        if len(shape) != len(axes):
            raise ValueError(
                f"tensor {name!r} has shape {shape} ({len(shape)} axes) but the spec gives "
                f"{len(axes)} axes {axes}"
            )
        shapes[name] = shape
    found: dict = {}
    for name, shape in shapes.items():
        for ax, entry in enumerate(spec.axes_to_perm[name]):
            if entry is None:
                continue
            where = f"tensor {name!r} axis {ax}"
            pairs = [(entry, shape[ax])] if isinstance(entry, str) else \
                part_sizes(entry, shape[ax], where)
            for group, n in pairs:
                first = found.setdefault(group, (name, ax, n))
                if n != first[2]:
                    raise ValueError(
                        f"group {group!r} has size {first[2]} from ({first[0]!r}, axis "
                        f"{first[1]}) but ({name!r}, axis {ax}) has size {n}"
                    )
    return {g: found[g][2] for g in spec.perm_to_axes if g in found}


def _shape_of(x: Any, name: str) -> tuple:
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"tensor {name!r} has no .shape (got {type(x).__name__})")
    return tuple(int(s) for s in shape)


def _short(names: Sequence[str], k: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:k])
    return f"[{shown}{', ...' if len(names) > k else ''}]"


# --------------------------------------------------------------------------------------------
# Builders (PyTorch layout)
# --------------------------------------------------------------------------------------------


def chain_spec(
    layers: Sequence[tuple], *, bias: bool = True
) -> PermutationSpec:
    """Spec of a plain chain of Linear / Conv layers (no skips), each feeding the next.

    Parameters
    ----------
    layers : Sequence[tuple[str, str | None, int]]
        ``(module_name, output_group, n_spatial)`` per layer, input to output: ``module_name``
        prefixes ``.weight``/``.bias``; ``output_group`` names the group of its output units
        (None for the output layer); ``n_spatial`` is 0 for Linear, 2 for Conv2d (kernel axes).
        The first layer's input axis is unpermuted.
    bias : bool
        Whether every layer has a bias, which follows its output group.

    Raises
    ------
    ValueError
        If two layers share a module name.
    """
    axes: dict = {}
    in_group = None
    for name, out_group, n_spatial in layers:
        if f"{name}.weight" in axes:
            raise ValueError(f"layer name {name!r} appears twice in the chain")
        axes[f"{name}.weight"] = (out_group, in_group) + (None,) * int(n_spatial)
        if bias:
            axes[f"{name}.bias"] = (out_group,)
        in_group = out_group
    return permutation_spec_from_axes_to_perm(axes)


def mlp_spec(
    num_hidden_layers: int = 1,
    *,
    bias: bool = True,
    layer_names: Optional[Sequence[str]] = None,
    group_names: Optional[Sequence[str]] = None,
) -> PermutationSpec:
    """Spec of an MLP: ``num_hidden_layers`` hidden groups ``c1, c2, ...``.

    Parameters
    ----------
    num_hidden_layers : int
        Number of hidden layers (the network has ``num_hidden_layers + 1`` Linear layers).
    bias : bool
        Whether the Linear layers have biases.
    layer_names : Sequence[str], optional
        Module names of the Linear layers. Default ``layers.0, layers.1, ...``
        (:class:`trajtransfer.kit.models.MLP`); for ``nn.Sequential(Linear, ReLU, Linear)`` pass
        ``["0", "2"]``.
    group_names : Sequence[str], optional
        Names of the hidden groups. Default ``c1, c2, ...``.

    Raises
    ------
    ValueError
        If the name lists have the wrong lengths.
    """
    n = int(num_hidden_layers)
    if n < 0:
        raise ValueError(f"num_hidden_layers must be >= 0, got {num_hidden_layers}")
    names = list(layer_names) if layer_names is not None else [f"layers.{i}" for i in range(n + 1)]
    groups = list(group_names) if group_names is not None else [f"c{i + 1}" for i in range(n)]
    if len(names) != n + 1:
        raise ValueError(f"layer_names must have {n + 1} entries, got {len(names)}")
    if len(groups) != n:
        raise ValueError(f"group_names must have {n} entries, got {len(groups)}")
    outs = groups + [None]
    return chain_spec([(nm, g, 0) for nm, g in zip(names, outs)], bias=bias)


#: Conv8 of algorithm-spec §3.3: (module name, output group, kernel axes), input to output.
CONV8_LAYERS: tuple = (
    ("conv1", "c64-1", 2),
    ("conv2", "c64-2", 2),
    ("conv3", "c128-1", 2),
    ("conv4", "c128-2", 2),
    ("conv5", "c256-1", 2),
    ("conv6", "c256-2", 2),
    ("conv7", "c512-1", 2),
    ("conv8", "c512-2", 2),
    ("fc1", "c256-3", 2),
    ("fc2", "c256-4", 2),
    ("head", None, 2),
)


def conv_spec(*, bias: bool = True) -> PermutationSpec:
    """Spec of Conv8 (:class:`trajtransfer.kit.models.Conv8`): 10 groups, biases follow outputs.

    Group names follow algorithm-spec §3.3 (``c64-1`` ... ``c256-4``) whatever the width
    factor. The 1x1 convolutions ``fc1``, ``fc2`` and ``head`` have weights ``(out, in, 1, 1)``;
    the head's output axis and bias are unpermuted.
    """
    return chain_spec(CONV8_LAYERS, bias=bias)


def resnet_spec(
    num_blocks: Sequence[int] = (2, 2, 2, 2),
    *,
    width: int = 64,
    running_stats: bool = True,
    head: str = "linear",
) -> PermutationSpec:
    """Spec of a BasicBlock ResNet with BatchNorm (:class:`trajtransfer.kit.models.ResNet18`).

    Groups (w = stage width, ``width * 2**stage``): the residual stream ``c{w}`` of each stage
    (stem for the first, every block's conv2/bn2 output, the stride-2 shortcut's conv/bn, and the
    inputs of the next stage's first conv1 and shortcut) and the inner groups ``c{w}-{b+1}``
    (conv1/bn1 output of block b). The head weight is ``(None, c{w_last})``, its bias unpermuted.

    Parameters
    ----------
    num_blocks : Sequence[int]
        Blocks per stage; ``(2, 2, 2, 2)`` is ResNet-18.
    width : int
        Channels of the stem and of the first stage.
    running_stats : bool
        If True, BatchNorm ``running_mean``/``running_var`` are in the spec (as buffers, with
        their channel group) and ``num_batches_tracked`` too (a buffer with ``()`` axes).
    head : str
        Module name of the final Linear layer.

    Raises
    ------
    ValueError
        If ``num_blocks`` is empty or ``width`` < 1.
    """
    if len(num_blocks) == 0 or int(width) < 1:
        raise ValueError(f"need at least one stage and width >= 1, got {num_blocks}, {width}")
    axes: dict = {}
    buffers: list = []

    def conv(name: str, out_g: str, in_g: Optional[str]) -> None:
        axes[f"{name}.weight"] = (out_g, in_g, None, None)

    def bn(name: str, g: str) -> None:
        axes[f"{name}.weight"] = (g,)
        axes[f"{name}.bias"] = (g,)
        if running_stats:
            stats = (("running_mean", (g,)), ("running_var", (g,)), ("num_batches_tracked", ()))
            for b, a in stats:
                axes[f"{name}.{b}"] = a
                buffers.append(f"{name}.{b}")

    widths = [int(width) * 2**s for s in range(len(num_blocks))]
    res_in = f"c{widths[0]}"
    conv("conv1", res_in, None)
    bn("bn1", res_in)
    for s, (w, nb) in enumerate(zip(widths, num_blocks)):
        res = f"c{w}"
        for b in range(int(nb)):
            p = f"layer{s + 1}.{b}"
            inner = f"c{w}-{b + 1}"
            conv(f"{p}.conv1", inner, res_in)
            bn(f"{p}.bn1", inner)
            conv(f"{p}.conv2", res, inner)
            bn(f"{p}.bn2", res)
            if res_in != res:  # the only blocks with a projection shortcut (stride 2 / wider)
                conv(f"{p}.shortcut.0", res, res_in)
                bn(f"{p}.shortcut.1", res)
            res_in = res
    axes[f"{head}.weight"] = (None, res_in)
    axes[f"{head}.bias"] = (None,)
    return permutation_spec_from_axes_to_perm(axes, buffers=buffers)


def attention_axes(prefix: str, heads: int, model_group: Optional[str], out_group: Optional[str],
                   head_group: str, qk_group: Optional[str], v_group: Optional[str]) -> dict:
    """``axes_to_perm`` entries of a ``torch.nn.MultiheadAttention`` (self-attention, packed
    ``in_proj``, biases) under module name ``prefix``.

    ``model_group`` permutes the embedding (the inputs), ``out_group`` the output of
    ``out_proj``; ``head_group`` the heads (blocks of q, k, v rows and of ``out_proj`` columns),
    ``qk_group`` the dimensions within each head shared by Q and K, ``v_group`` those shared by
    V and ``out_proj`` (None: not permuted).
    """
    qk = Blocks(head_group, heads, qk_group)
    v = Blocks(head_group, heads, v_group)
    packed = Concat((qk, qk, v))
    return {
        f"{prefix}.in_proj_weight": (packed, model_group),
        f"{prefix}.in_proj_bias": (packed,),
        f"{prefix}.out_proj.weight": (out_group, v),
        f"{prefix}.out_proj.bias": (out_group,),
    }


def encoder_layer_axes(prefix: str, heads: int, res: str) -> dict:
    """``axes_to_perm`` entries of a ``torch.nn.TransformerEncoderLayer`` under ``prefix``.

    Pre- and post-norm layers have the same symmetries: ``res`` permutes the model dimension
    (attention inputs and outputs, ``linear1`` inputs, ``linear2`` outputs, both LayerNorms);
    the layer adds groups ``{prefix}.heads``, ``{prefix}.qk``, ``{prefix}.v`` and
    ``{prefix}.mlp`` (the hidden units of ``linear1``).
    """
    axes = attention_axes(f"{prefix}.self_attn", heads, res, res, f"{prefix}.heads",
                          f"{prefix}.qk", f"{prefix}.v")
    mlp = f"{prefix}.mlp"
    axes.update({
        f"{prefix}.linear1.weight": (mlp, res),
        f"{prefix}.linear1.bias": (mlp,),
        f"{prefix}.linear2.weight": (res, mlp),
        f"{prefix}.linear2.bias": (res,),
    })
    for norm in ("norm1", "norm2"):
        axes[f"{prefix}.{norm}.weight"] = (res,)
        axes[f"{prefix}.{norm}.bias"] = (res,)
    return axes


def transformer_spec(depth: int, *, heads: int, prefix: str = "blocks",
                     res: str = "res") -> PermutationSpec:
    """Spec of ``depth`` stacked ``torch.nn.TransformerEncoderLayer`` s (``{prefix}.{i}``).

    Groups: the residual stream ``res`` shared by every layer, and per layer the heads, the
    per-head query/key and value dimensions and the MLP units (:func:`encoder_layer_axes`).
    The stack's input and output carry ``res``: an embedding and a head must add their tensors.

    Raises
    ------
    ValueError
        If ``depth < 0`` or ``heads < 1``.
    """
    if int(depth) < 0 or int(heads) < 1:
        raise ValueError(f"need depth >= 0 and heads >= 1, got depth={depth}, heads={heads}")
    axes: dict = {}
    for i in range(int(depth)):
        axes.update(encoder_layer_axes(f"{prefix}.{i}", int(heads), res))
    return permutation_spec_from_axes_to_perm(axes)


def vit_spec(depth: int, *, heads: int, res: str = "res") -> PermutationSpec:
    """Spec of :class:`trajtransfer.kit.models.ViT` (any width, patch or image size).

    The residual stream ``res`` permutes the patch embedding's output channels and bias, the
    class token and position embeddings (last axis), every encoder layer's model dimension
    (:func:`transformer_spec`), the final LayerNorm and the head's inputs.

    >>> spec = vit_spec(1, heads=2)
    >>> spec.block_counts, spec.inner_of
    ({'blocks.0.heads': 2}, {'blocks.0.qk': 'blocks.0.heads', 'blocks.0.v': 'blocks.0.heads'})
    """
    axes: dict = {
        "cls_token": (None, None, res),
        "pos_embed": (None, None, res),
        "patch_embed.weight": (res, None, None, None),
        "patch_embed.bias": (res,),
    }
    axes.update(transformer_spec(depth, heads=heads, res=res).axes_to_perm)
    axes.update({"norm.weight": (res,), "norm.bias": (res,),
                 "head.weight": (None, res), "head.bias": (None,)})
    return permutation_spec_from_axes_to_perm(axes)
