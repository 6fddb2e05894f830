"""Permutation specs: which tensor axes each hidden-unit permutation group acts on.

Compatible with Git Re-Basin (Ainsworth et al., 2023): ``axes_to_perm`` maps each tensor name to a
tuple with one entry per axis, a group name or ``None``; ``perm_to_axes`` is the inverse map.

Index semantics (algorithm-spec.md §2.1): ``perm[p]`` is an int64 array of length n_p; applying it
to a tensor gathers along every axis that carries p: new slice i = old slice ``perm[p][i]``.

Builders here use PyTorch layouts (``Linear.weight`` is ``(out, in)``, ``Conv2d.weight`` is
``(out, in, kh, kw)``) and the state-dict names of the reference models in
:mod:`trajtransfer.kit.models`.

>>> spec = mlp_spec(1)
>>> spec.axes_to_perm["layers.0.weight"], spec.axes_to_perm["layers.1.weight"]
(('c1', None), (None, 'c1'))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

__all__ = [
    "PermutationSpec",
    "permutation_spec_from_axes_to_perm",
    "validate_spec",
    "chain_spec",
    "mlp_spec",
    "conv_spec",
    "resnet_spec",
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
        Tensor name -> one group name (or None) per axis. Tensors with no permuted axis (the
        head bias, ``num_batches_tracked``) are listed with all-None (or empty) tuples.
    buffers : frozenset[str]
        Tensor names that are buffers (e.g. BatchNorm running statistics): permuted by
        ``apply_permutation`` but never part of a matching objective, and allowed to be absent
        from the dicts passed to the matchers.

    Raises
    ------
    ValueError
        If ``perm_to_axes`` and ``axes_to_perm`` disagree, or a buffer is not in ``axes_to_perm``.
    """

    perm_to_axes: dict
    axes_to_perm: dict
    buffers: frozenset = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        # Normalise (JSON round trips give lists) and check that both maps describe the same
        # thing: a hand-made spec with a typo in one map would silently permute the wrong axes.
        a2p = {str(k): tuple(v) for k, v in self.axes_to_perm.items()}
        p2a = {
            str(g): [(str(n), int(a)) for n, a in pairs] for g, pairs in self.perm_to_axes.items()
        }
        derived: dict = {}
        for name, axes in a2p.items():
            for ax, group in enumerate(axes):
                if group is not None and not isinstance(group, str):
                    raise ValueError(
                        f"axes_to_perm[{name!r}][{ax}] must be a group name (str) or None, "
                        f"got {group!r}"
                    )
                if group is not None:
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
        """The groups as a set of sets of (tensor, axis) pairs: compares specs up to group names."""
        return frozenset(frozenset(pairs) for pairs in self.perm_to_axes.values())


def permutation_spec_from_axes_to_perm(
    axes_to_perm: Mapping[str, Sequence[Optional[str]]], buffers: Sequence[str] = ()
) -> PermutationSpec:
    """Build a :class:`PermutationSpec` from a Git Re-Basin ``axes_to_perm`` dict, unchanged.

    Parameters
    ----------
    axes_to_perm : Mapping[str, Sequence[str | None]]
        Tensor name -> one group name or None per axis.
    buffers : Sequence[str]
        Names (keys of ``axes_to_perm``) that are buffers, e.g. BatchNorm running statistics.

    Raises
    ------
    ValueError
        If a group entry is neither a str nor None, or a buffer is not a key of ``axes_to_perm``.

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
        axes = tuple(axes)
        a2p[name] = axes
        for ax, group in enumerate(axes):
            if group is not None:
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
        Group name -> size, for every group carried by a tensor present in ``params``.

    Raises
    ------
    ValueError
        If ``params`` holds a tensor the spec does not list; if (``require_all``) a spec tensor
        is missing; if a tensor's ndim differs from the length of its axes tuple; or if two
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
    sizes: dict = {}
    for group, pairs in spec.perm_to_axes.items():
        first = None
        for name, ax in pairs:
            if name not in shapes:
                continue
            n = shapes[name][ax]
            if first is None:
                first = (name, ax, n)
                sizes[group] = n
            elif n != first[2]:
                raise ValueError(
                    f"group {group!r} has size {first[2]} from ({first[0]!r}, axis {first[1]}) "
                    f"but ({name!r}, axis {ax}) has size {n}"
                )
    return sizes


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
