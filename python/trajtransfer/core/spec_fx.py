"""Derive a :class:`~trajtransfer.core.spec.PermutationSpec` from a PyTorch model with ``torch.fx``.

The model is traced symbolically and run once on an example input to learn every tensor's shape.
Each traced tensor then carries at most one *permuted axis*, labelled by a union-find element:

* a Linear / Conv layer gives its output a fresh label and ties its weight's output axis (and
  bias) to it and its weight's input axis to the input's label;
* elementwise activations, dropout, softmax, pooling and BatchNorm / LayerNorm / GroupNorm keep
  the label (their weight, bias and running statistics join it; a LayerNorm over ``(C, H, W)``
  has statistics invariant under a permutation of C, and its weight follows along axis 0);
* additions and other elementwise binary ops *unify* their operands' labels (residual streams);
* ``permute`` moves the labelled axis with it (channels-last LayerNorm: permute, LayerNorm(C),
  permute back);
* reshapes keep the label only when the permuted axis survives as an axis of its own (flatten
  after a global pool, or spatial size 1); otherwise the label must be unpermuted;
* the model's inputs and outputs are unpermuted (a fixed element every label may join).

* ``nn.MultiheadAttention`` (self-attention; torch's fused attention is one call that fx cannot
  see into), ``nn.TransformerEncoderLayer`` (pre- or post-norm, either ``batch_first``) and
  ``nn.TransformerEncoder`` have dedicated handlers: the embedding axis carries the stream's
  label, and the heads, the per-head query/key and value dimensions and the MLP units get block
  and plain groups (:func:`trajtransfer.core.spec.encoder_layer_axes` has the same layout);
* parameters used directly (a class token, position embeddings) follow the label they are
  added to or concatenated with, ``cat`` along an unpermuted axis unifies its inputs' labels,
  ``transpose`` moves the labelled axis, and indexing that keeps the labelled axis whole
  (``x[:, 0]``) keeps the label: a ViT built from torch's layers traces.

Anything else (custom attention, ``cat`` along the permuted axis, other indexing, functional
layers with explicit weights, unknown modules) raises ``ValueError`` naming the node: a spec
that silently missed an op would break the function invariance f(x; π·θ) = f(x; θ) that
everything downstream relies on.

>>> import torch
>>> from trajtransfer.kit.models import MLP
>>> spec = spec_from_model(MLP(in_features=4, hidden=(8,), num_classes=3), torch.zeros(2, 4))
>>> spec.axes_to_perm["layers.0.weight"], spec.axes_to_perm["layers.1.weight"]
(('layers.0', None), (None, 'layers.0'))
"""

from __future__ import annotations

import math
import operator
from typing import Any, NoReturn, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from .block_axes import Blocks, Concat
from .spec import PermutationSpec, permutation_spec_from_axes_to_perm

__all__ = ["spec_from_model"]

_FIXED = 0  # union-find element of "unpermuted"; always the root of its class (smallest index)


class _ShapeRecorder(fx.Interpreter):
    """Runs the traced graph once and stores each tensor result's shape in ``node.meta``."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.extra_traceback = False  # fx's decorated re-raise costs ~1 s (it imports dynamo)

    def run_node(self, n: fx.Node) -> Any:
        self.current = n  # names the failing node in spec_from_model's error
        result = super().run_node(n)
        n.meta["tt_shape"] = tuple(result.shape) if isinstance(result, torch.Tensor) else None
        return result


class _UnionFind:
    def __init__(self) -> None:
        self.parent = [0]
        self.hint: list = [None]

    def new(self, hint: str) -> int:
        self.parent.append(len(self.parent))
        self.hint.append(hint)
        return len(self.parent) - 1

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the older element stays root: FIXED wins, and names follow first creation
            lo, hi = min(ra, rb), max(ra, rb)
            self.parent[hi] = lo


class _Meta:
    """State of a non-tensor value (sizes, dtypes) derived from tensors: carries no label."""


class _Attr:
    """State of a ``get_attr`` node: a parameter/buffer used outside a module call."""

    def __init__(self, target: str) -> None:
        self.target = target


class _Tuple:
    """State of a module call that returns a tuple (MultiheadAttention): one state per item."""

    def __init__(self, items: list) -> None:
        self.items = items


_META = _Meta()

_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign,
    nn.Tanhshrink, nn.LogSigmoid, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.AlphaDropout, nn.Softmax, nn.LogSoftmax,
)
_POOL_MODULES = {
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3,
    nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3,
    nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3,
}
# Padding acts on the last k (spatial) axes, channel by channel, like pooling.
_POOL_MODULES.update({getattr(nn, f"{kind}Pad{k}d"): k
                      for kind in ("Zero", "Constant", "Reflection", "Replication", "Circular")
                      for k in (1, 2, 3) if hasattr(nn, f"{kind}Pad{k}d")})
_UNARY_FUNCTIONS = {
    torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu,
    F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, torch.sigmoid, F.sigmoid,
    torch.tanh, F.tanh, F.softplus, F.softsign, F.logsigmoid, torch.abs, torch.neg, operator.neg,
    torch.exp, torch.square, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
    F.softmax, F.log_softmax, torch.softmax,
    torch.log_softmax,
}
_BINARY_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
    operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.maximum,
    torch.minimum,
}
_POOL_FUNCTIONS = {
    F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3,
    F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3,
    F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3,
    F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3,
}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin}
_UNARY_METHODS = {
    "relu", "relu_", "sigmoid", "tanh", "abs", "neg", "exp", "square", "clone", "contiguous",
    "float", "double", "half", "bfloat16", "to", "detach", "softmax", "log_softmax",
}
_BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze"}
_REDUCE_METHODS = {"mean", "sum", "amax", "amin"}
_META_METHODS = {"size", "dim", "numel"}


def _describe(node: fx.Node) -> str:
    target = node.target if isinstance(node.target, str) else getattr(
        node.target, "__name__", repr(node.target)
    )
    return f"node {node.name!r} ({node.op} {target})"


class _Tracer:
    """Walks the traced graph once, assigning labels and recording parameter axes."""

    def __init__(self, model: nn.Module, gm: fx.GraphModule) -> None:
        self.model = model
        self.gm = gm
        self.uf = _UnionFind()
        self.state: dict = {}
        # parameter/buffer name -> {axis: element}; names of tensors shared by several modules
        # all get the same assignments.
        self.assigned: dict = {}
        self.names_of: dict = {}
        for name, t in model.state_dict(keep_vars=True).items():
            self.names_of.setdefault(id(t), []).append(name)
        self.reshape_checks: list = []
        # tensor name -> {axis: Blocks/Concat entry} (attention heads: named, never unified)
        self.structured: dict = {}
        self.node: Optional[fx.Node] = None  # the node being walked
        self.owner: dict = {}  # tensor name -> (first node, module) that assigned its axes

    # -- helpers -------------------------------------------------------------------------------
    def fail(self, node: fx.Node, why: str) -> NoReturn:
        raise ValueError(f"spec_from_model: {_describe(node)}: {why}")

    def maybe_shape(self, node: Any) -> Optional[tuple]:
        """Shape of a node's result, None when it is not a tensor (sizes, tuples, ...)."""
        return node.meta.get("tt_shape") if isinstance(node, fx.Node) else None

    def shape(self, node: Any) -> tuple:
        """Shape of a node's result, which the caller knows to be a tensor."""
        shp = self.maybe_shape(node)
        if shp is None:
            self.fail(node, "expected a tensor here")
        return shp

    def tensor_inputs(self, node: fx.Node, attrs: bool = False) -> list:
        """Input nodes that are tensors (not sizes/scalars); get_attr inputs are rejected unless
        ``attrs`` (the caller handles them)."""
        out = []
        for n in node.all_input_nodes:
            st = self.state[n]
            if isinstance(st, _Attr) and not attrs:
                self.fail(node, f"uses parameter/buffer {st.target!r} directly; only parameters "
                                "owned by supported modules (Linear, Conv, BatchNorm, LayerNorm) "
                                "are understood")
            if st is not _META:
                out.append(n)
        return out

    def single_input(self, node: fx.Node) -> fx.Node:
        ins = self.tensor_inputs(node)
        if len(ins) != 1:
            self.fail(node, f"expected one tensor input, got {len(ins)}")
        return ins[0]

    def assign(self, module: nn.Module, attr: str, axis: int, element: int) -> None:
        t = getattr(module, attr, None)
        if t is None:
            return
        for name in self.names_of.get(id(t), []):
            self.owner.setdefault(name, (self.node, module))
            axes = self.assigned.setdefault(name, {})
            if axis in axes:
                self.uf.union(axes[axis], element)
            else:
                axes[axis] = element

    def structure(self, module: nn.Module, attr: str, axis: int, entry: Any) -> None:
        """Give a tensor axis a structured entry (block groups are named, never unified)."""
        t = getattr(module, attr, None)
        if t is None:
            return
        for name in self.names_of.get(id(t), []):
            self.owner.setdefault(name, (self.node, module))
            self.structured.setdefault(name, {})[axis] = entry

    def assign_attr(self, target: str, axis: int, element: int) -> None:
        """Tie axis ``axis`` of the parameter/buffer ``target`` (a get_attr) to ``element``."""
        owner, _, attr = target.rpartition(".")
        self.assign(self.gm.get_submodule(owner) if owner else self.model, attr, axis, element)

    def label_of(self, st: Any) -> int:
        return _FIXED if st is None else st[0]

    def expect_axis(self, node: fx.Node, st: Any, axis: int, ndim: int, what: str) -> None:
        if st is not None and st[1] != axis % ndim:
            self.fail(node, f"{what} acts on axis {axis % ndim} but the permuted axis of its "
                            f"input is {st[1]}")

    # -- rules ---------------------------------------------------------------------------------
    def reshape(self, node: fx.Node, src: fx.Node) -> Any:
        st = self.state[src]
        if st is None:
            return None
        label, a = st
        ins, outs = self.shape(src), self.shape(node)
        c, pre, post = ins[a], math.prod(ins[:a]), math.prod(ins[a + 1:])
        for b, size in enumerate(outs):
            if size == c and math.prod(outs[:b]) == pre and math.prod(outs[b + 1:]) == post:
                return (label, b)
        # The permuted axis is mixed with others: only valid if the group is unpermuted anyway.
        self.reshape_checks.append((label, node, ins, outs, a))
        return None

    def permute(self, node: fx.Node, dims: Any) -> Any:
        """``x.permute(*dims)``: the permuted axis moves (e.g. channels-last for a LayerNorm)."""
        src = self.single_input(node)
        st = self.state[src]
        if st is None:
            return None
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = dims[0]
        ndim = len(self.shape(src))
        if not all(isinstance(d, int) for d in dims):
            self.fail(node, "permute with non-constant dims is not supported")
        return (st[0], [d % ndim for d in dims].index(st[1]))

    def reduce(self, node: fx.Node, src: fx.Node, dims: Any, keepdim: bool) -> Any:
        st = self.state[src]
        if st is None:
            return None
        ndim = len(self.shape(src))
        if dims is None:
            return None  # reduces over the permuted axis too: the result is invariant
        dims = [dims] if isinstance(dims, int) else list(dims)
        dims = [d % ndim for d in dims]
        label, a = st
        if a in dims:
            return None  # a sum/mean/max over the permuted axis is permutation-invariant
        return (label, a if keepdim else a - sum(d < a for d in dims))

    def binary(self, node: fx.Node) -> Any:
        ins = self.tensor_inputs(node, attrs=True)
        out_shape = self.maybe_shape(node)
        if out_shape is None:
            self.fail(node, "elementwise op without a tensor result")
        r = len(out_shape)
        label: Any = None
        axis: Any = None
        for n in ins:
            st = self.state[n]
            if st is None or isinstance(st, _Attr):
                continue
            ax = st[1] + r - len(self.shape(n))
            if label is None:
                label, axis = st[0], ax
            elif ax != axis:
                self.fail(node, f"combines tensors whose permuted axes differ ({axis} and {ax})")
            else:
                self.uf.union(label, st[0])
        if label is None:
            return None
        for n in ins:
            shp = self.shape(n)
            i = axis - (r - len(shp))
            if isinstance(self.state[n], _Attr):
                if i >= 0 and shp[i] > 1:  # a parameter added along the axis follows its label
                    self.assign_attr(self.state[n].target, i, label)
            elif self.state[n] is None and i >= 0 and shp[i] > 1:
                # an unpermuted tensor varying along the permuted axis pins that group
                self.uf.union(label, _FIXED)
            elif self.state[n] is not None and shp[i] != out_shape[axis]:
                self.fail(node, "broadcasts a tensor along its permuted axis")
        return (label, axis)

    def transpose(self, node: fx.Node, dims: Any) -> Any:
        """``x.transpose(a, b)``: the permuted axis moves if it is a or b."""
        src = self.single_input(node)
        st = self.state[src]
        if st is None:
            return None
        if len(dims) != 2 or not all(isinstance(d, int) for d in dims):
            self.fail(node, "transpose with non-constant dims is not supported")
        ndim = len(self.shape(src))
        a, b = (d % ndim for d in dims)
        return (st[0], b if st[1] == a else a if st[1] == b else st[1])

    def expand(self, node: fx.Node) -> Any:
        """``x.expand(...)`` keeping the number of axes and the permuted axis' size."""
        src = node.args[0]
        st = self.state.get(src)
        same_rank = len(self.shape(src)) == len(self.shape(node))
        if isinstance(st, _Attr) and same_rank:
            return st  # still the parameter, broadcast along unpermuted (size-1) axes
        if st is None:
            return None
        if not same_rank or self.shape(src)[st[1]] != self.shape(node)[st[1]]:
            self.fail(node, "expand that changes the rank or the permuted axis is not supported")
        return st

    def cat(self, node: fx.Node) -> Any:
        """``torch.cat(tensors, dim)`` along an axis that no input permutes: labels unify and
        parameters among the inputs (a class token) follow along their matching axis."""
        seq = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if not isinstance(seq, (list, tuple)) or not all(isinstance(n, fx.Node) for n in seq):
            self.fail(node, "cat of a non-literal sequence is not supported")
        if not isinstance(dim, int):
            self.fail(node, "cat with a non-constant dim is not supported")
        dim = dim % len(self.shape(node))
        labelled = [self.state[n] for n in seq if isinstance(self.state[n], tuple)]
        if not labelled:
            return None
        label, axis = labelled[0]
        if axis == dim or any(st[1] != axis for st in labelled):
            self.fail(node, "cat along the permuted axis (or of tensors permuted on different "
                            "axes) is not supported: it mixes the group's channels")
        for st in labelled[1:]:
            self.uf.union(label, st[0])
        for n in seq:
            st = self.state[n]
            if isinstance(st, _Attr):
                self.assign_attr(st.target, axis, label)
            elif st is None:
                self.uf.union(label, _FIXED)  # an unpermuted tensor along the axis pins it
        return (label, axis)

    def index(self, node: fx.Node) -> Any:
        """``x[...]`` with ints, full slices and None: the labelled axis must stay whole."""
        st = self.state[self.single_input(node)]
        if st is None:
            return None
        idx = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        out_axis, axis = 0, 0
        for item in idx:
            if item is None:
                out_axis += 1
                continue
            if axis == st[1]:
                if not (isinstance(item, slice) and item == slice(None)):
                    self.fail(node, "indexing or slicing the permuted axis is not supported")
                return (st[0], out_axis)
            if isinstance(item, int):
                axis += 1
            elif isinstance(item, slice):
                axis, out_axis = axis + 1, out_axis + 1
            else:
                self.fail(node, f"indexing with {type(item).__name__} is not supported")
        return (st[0], out_axis + st[1] - axis)

    # -- attention -----------------------------------------------------------------------------
    def check_attention(self, node: fx.Node, mod: nn.MultiheadAttention) -> None:
        """Refuse what the head groups do not describe, naming the module."""
        what = f"MultiheadAttention {node.target!r}"
        if not mod._qkv_same_embed_dim:
            self.fail(node, f"{what} has kdim/vdim different from embed_dim (separate q/k/v "
                            "projections), which is not supported")
        if mod.bias_k is not None or mod.bias_v is not None:
            self.fail(node, f"{what} uses add_bias_kv, which is not supported")
        if mod.add_zero_attn:
            self.fail(node, f"{what} uses add_zero_attn, which is not supported")

    def heads(self, mha: nn.MultiheadAttention, prefix: str) -> None:
        """The head groups of one attention module, named after ``prefix``."""
        h = int(mha.num_heads)
        qk = Blocks(f"{prefix}.heads", h, f"{prefix}.qk")
        v = Blocks(f"{prefix}.heads", h, f"{prefix}.v")
        self.structure(mha, "in_proj_weight", 0, Concat((qk, qk, v)))
        self.structure(mha, "in_proj_bias", 0, Concat((qk, qk, v)))
        self.structure(mha.out_proj, "weight", 1, v)

    def masks_unpermuted(self, node: fx.Node, tensors: list) -> None:
        for n in self.tensor_inputs(node):
            if n not in tensors and self.state[n] is not None:
                self.fail(node, "an attention mask carries a permuted axis")

    def attention(self, node: fx.Node, mod: nn.MultiheadAttention) -> Any:
        self.check_attention(node, mod)
        names = ("query", "key", "value")
        qkv = [node.args[i] if len(node.args) > i else node.kwargs.get(k)
               for i, k in enumerate(names)]
        self.masks_unpermuted(node, qkv)
        lab = self.label_of(self.state[qkv[0]])
        for n in qkv:
            st = self.state[n]
            self.expect_axis(node, st, -1, len(self.shape(n)), "MultiheadAttention")
            # One packed in_proj: query, key and value share their input columns' group.
            self.uf.union(lab, self.label_of(st))
        target = str(node.target)
        self.assign(mod, "in_proj_weight", 1, lab)
        out = self.uf.new(f"{target}.out_proj")
        self.assign(mod.out_proj, "weight", 0, out)
        self.assign(mod.out_proj, "bias", 0, out)
        self.heads(mod, target)
        return _Tuple([(out, len(self.shape(qkv[0])) - 1), None])

    def encoder_layer(self, node: fx.Node, mod: nn.TransformerEncoderLayer, prefix: str,
                      st: Any, ndim: int) -> Any:
        """One encoder layer (pre- or post-norm): the stream's label on every model-dim axis."""
        self.check_attention(node, mod.self_attn)
        act = mod.activation
        if not (act in _UNARY_FUNCTIONS or isinstance(act, _ELEMENTWISE_MODULES)):
            self.fail(node, f"TransformerEncoderLayer {prefix!r} has activation {act!r}, which "
                            "is not a supported elementwise function")
        self.expect_axis(node, st, -1, ndim, "TransformerEncoderLayer")
        res = self.label_of(st)
        mha = mod.self_attn
        self.assign(mha, "in_proj_weight", 1, res)
        self.assign(mha.out_proj, "weight", 0, res)
        self.assign(mha.out_proj, "bias", 0, res)
        self.heads(mha, prefix)
        mlp = self.uf.new(f"{prefix}.mlp")
        self.assign(mod.linear1, "weight", 0, mlp)
        self.assign(mod.linear1, "weight", 1, res)
        self.assign(mod.linear1, "bias", 0, mlp)
        self.assign(mod.linear2, "weight", 0, res)
        self.assign(mod.linear2, "weight", 1, mlp)
        self.assign(mod.linear2, "bias", 0, res)
        for norm in (mod.norm1, mod.norm2):
            self.assign(norm, "weight", 0, res)
            self.assign(norm, "bias", 0, res)
        return st

    def encoder(self, node: fx.Node, mod: nn.Module) -> Any:
        """A TransformerEncoderLayer, or a TransformerEncoder (its layers, then its norm)."""
        src = node.args[0] if node.args else node.kwargs.get("src")
        self.masks_unpermuted(node, [src])
        st, ndim = self.state[src], len(self.shape(src))
        target = str(node.target)
        if isinstance(mod, nn.TransformerEncoderLayer):
            return self.encoder_layer(node, mod, target, st, ndim)
        layers: Any = mod.layers
        for i, layer in enumerate(layers):
            st = self.encoder_layer(node, layer, f"{target}.layers.{i}", st, ndim)
        if mod.norm is not None:
            if not isinstance(mod.norm, nn.LayerNorm):
                self.fail(node, f"TransformerEncoder norm {type(mod.norm).__name__} is not "
                                "supported")
            self.assign(mod.norm, "weight", 0, self.label_of(st))
            self.assign(mod.norm, "bias", 0, self.label_of(st))
        return st

    # -- node kinds ----------------------------------------------------------------------------
    def module(self, node: fx.Node) -> Any:
        mod = self.gm.get_submodule(str(node.target))  # a call_module target is its name
        if isinstance(mod, nn.Linear):
            src = self.single_input(node)
            st, ndim = self.state[src], len(self.shape(src))
            self.expect_axis(node, st, -1, ndim, "Linear")
            out = self.uf.new(str(node.target))
            self.assign(mod, "weight", 0, out)
            self.assign(mod, "weight", 1, self.label_of(st))
            self.assign(mod, "bias", 0, out)
            return (out, len(self.shape(node)) - 1)
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            src = self.single_input(node)
            st, ndim = self.state[src], len(self.shape(src))
            k = mod.weight.ndim - 2
            self.expect_axis(node, st, ndim - k - 1, ndim, type(mod).__name__)
            if mod.groups == 1:
                out = self.uf.new(str(node.target))
                self.assign(mod, "weight", 1, self.label_of(st))
            elif mod.groups == mod.in_channels == mod.out_channels:
                out = self.label_of(st)  # depthwise: output channel c only sees input channel c
            else:
                self.fail(node, f"grouped convolution (groups={mod.groups}) is not supported")
            self.assign(mod, "weight", 0, out)
            self.assign(mod, "bias", 0, out)
            return None if out == _FIXED else (out, len(self.shape(node)) - k - 1)
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            src = self.single_input(node)
            st = self.state[src]
            self.expect_axis(node, st, 1, len(self.shape(src)), type(mod).__name__)
            lab = self.label_of(st)
            for attr in ("weight", "bias", "running_mean", "running_var"):
                self.assign(mod, attr, 0, lab)
            return st
        if isinstance(mod, nn.LayerNorm):
            src = self.single_input(node)
            st, ndim = self.state[src], len(self.shape(src))
            nd = len(mod.normalized_shape)
            if st is not None and st[1] >= ndim - nd:
                # Mean and variance over all normalised axes (the permuted one among them) are
                # invariant; the affine weight/bias (normalized_shape) follow along that axis.
                for attr in ("weight", "bias"):
                    self.assign(mod, attr, st[1] - (ndim - nd), st[0])
            return st
        if isinstance(mod, nn.GroupNorm):
            src = self.single_input(node)
            st = self.state[src]
            self.expect_axis(node, st, 1, len(self.shape(src)), "GroupNorm")
            if st is not None and mod.num_groups not in (1, mod.num_channels):
                # Statistics over runs of contiguous channels: a permutation mixes the runs.
                self.fail(node, f"GroupNorm with {mod.num_groups} groups of "
                                f"{mod.num_channels // mod.num_groups} channels ties contiguous "
                                "channels together; only num_groups 1 or num_channels is "
                                "permutation-equivariant")
            for attr in ("weight", "bias"):  # per-channel affine
                self.assign(mod, attr, 0, self.label_of(st))
            return st
        if isinstance(mod, nn.MultiheadAttention):
            return self.attention(node, mod)
        if isinstance(mod, (nn.TransformerEncoderLayer, nn.TransformerEncoder)):
            return self.encoder(node, mod)
        if isinstance(mod, _ELEMENTWISE_MODULES):
            return self.state[self.single_input(node)]
        if isinstance(mod, tuple(_POOL_MODULES)):
            if getattr(mod, "return_indices", False):
                self.fail(node, "pooling with return_indices is not supported")
            src = self.single_input(node)
            st, ndim = self.state[src], len(self.shape(src))
            k = _POOL_MODULES[type(mod)]
            self.expect_axis(node, st, ndim - k - 1, ndim, type(mod).__name__)
            return None if st is None else (st[0], len(self.shape(node)) - k - 1)
        if isinstance(mod, (nn.Flatten, nn.Unflatten)):
            return self.reshape(node, self.single_input(node))
        self.fail(node, f"module type {type(mod).__name__} is not supported")

    def function(self, node: fx.Node) -> Any:
        fn = node.target
        if fn is operator.getitem and isinstance(self.state.get(node.args[0]), _Tuple):
            items = self.state[node.args[0]].items
            return items[node.args[1]] if isinstance(node.args[1], int) else self.fail(
                node, "slicing the outputs of a module that returns a tuple is not supported")
        if fn is operator.getitem and self.maybe_shape(node) is not None:
            return self.index(node)
        if fn is torch.cat or fn is torch.concat:
            return self.cat(node)
        if fn is torch.transpose:
            return self.transpose(node, node.args[1:3])
        if fn in _UNARY_FUNCTIONS:
            return self.state[self.single_input(node)]
        if fn in _BINARY_FUNCTIONS:
            return self.binary(node)
        if fn in _POOL_FUNCTIONS:
            if node.kwargs.get("return_indices", False):
                self.fail(node, "pooling with return_indices is not supported")
            src = self.single_input(node)
            st, ndim = self.state[src], len(self.shape(src))
            k = _POOL_FUNCTIONS[fn]
            self.expect_axis(node, st, ndim - k - 1, ndim, getattr(fn, "__name__", "pool"))
            return None if st is None else (st[0], len(self.shape(node)) - k - 1)
        if fn in _RESHAPE_FUNCTIONS:
            return self.reshape(node, self.single_input(node))
        if fn is torch.permute:
            return self.permute(node, node.args[1:] or node.kwargs.get("dims"))
        if fn in _REDUCE_FUNCTIONS:
            return self.reduce_call(node)
        if fn is getattr and self.maybe_shape(node) is None:
            return _META
        if fn is operator.getitem and not self.tensor_inputs(node):
            return _META
        if self.maybe_shape(node) is None and not self.tensor_inputs(node):
            return _META  # arithmetic on sizes
        self.fail(node, "this operation is not supported (it may mix or reorder permuted "
                        "channels: e.g. cat, indexing, matmul, attention, functional layers)")

    def reduce_call(self, node: fx.Node) -> Any:
        """A reduction called as ``torch.f(x, dim, keepdim)`` or ``x.f(dim, keepdim)``."""
        src = self.single_input(node)
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        return self.reduce(node, src, dims, bool(keep))

    def method(self, node: fx.Node) -> Any:
        name = node.target
        if name in _META_METHODS:
            return _META
        if name in _UNARY_METHODS:
            return self.state[self.single_input(node)]
        if name in _BINARY_METHODS:
            return self.binary(node)
        if name in _RESHAPE_METHODS:
            return self.reshape(node, self.single_input(node))
        if name == "permute":
            return self.permute(node, node.args[1:] or node.kwargs.get("dims"))
        if name == "transpose":
            return self.transpose(node, node.args[1:3])
        if name == "expand":
            return self.expand(node)
        if name in _REDUCE_METHODS:
            return self.reduce_call(node)
        self.fail(node, f"tensor method {name!r} is not supported")

    def self_maps(self, on_self_map: str) -> None:
        """Find tensors whose axes ended in one group (a layer mapping a group onto itself)."""
        if on_self_map == "keep":
            return
        for name, axes in self.assigned.items():
            while True:
                roots = [r for r in (self.uf.find(e) for e in axes.values()) if r != _FIXED]
                dup = [r for r in roots if roots.count(r) > 1]
                if not dup or on_self_map != "unpermute":
                    break
                self.uf.union(dup[0], _FIXED)  # the identity is always a (smaller) symmetry
            if not dup:
                continue
            node, mod = self.owner[name]
            self.fail(node, f"{type(mod).__name__} {node.target!r} maps a group onto itself: its "
                            f"tensor {name!r} would be permuted by the same group on two axes. "
                            "This happens for a residual branch of a single layer (x + f(layer(x))"
                            ", whose weight maps the stream onto itself) or a square layer applied "
                            "to its own output; weight matching cannot solve such a group with one "
                            "assignment per group. Put a hidden layer in the branch (x + "
                            "layer2(f(layer1(x)))), or pass on_self_map='unpermute' to leave that "
                            "group unpermuted (or 'keep' for a spec to permute with, not to match)")

    def run(self, on_self_map: str = "raise") -> None:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.state[node] = None if self.maybe_shape(node) is not None else _META
            elif node.op == "get_attr":
                self.state[node] = _Attr(str(node.target))
            elif node.op == "output":
                for n in node.all_input_nodes:
                    st = self.state[n]
                    for item in st.items if isinstance(st, _Tuple) else [st]:
                        if isinstance(item, tuple):
                            self.uf.union(item[0], _FIXED)
            else:
                self.node = node
                if node.op == "call_module":
                    st = self.module(node)
                elif node.op == "call_function":
                    st = self.function(node)
                elif node.op == "call_method":
                    st = self.method(node)
                else:  # pragma: no cover - fx has no other node kinds
                    self.fail(node, "unknown node kind")
                if st is not _META and not isinstance(st, _Tuple) and self.maybe_shape(node) is None:
                    self.fail(node, "produces a non-tensor (e.g. a tuple of tensors), which is "
                                    "not supported")
                self.state[node] = st
        self.self_maps(on_self_map)
        for label, node, ins, outs, a in self.reshape_checks:
            if self.uf.find(label) != _FIXED:
                self.fail(node, f"reshapes {ins} -> {outs}, mixing the permuted channel axis {a} "
                                "with other axes; flatten only after a global pool or when the "
                                "spatial size is 1")

    def spec(self) -> PermutationSpec:
        roots: dict = {}
        # Block groups are named after their module; the labels' names must not take them.
        taken: set = {g for entries in self.structured.values() for e in entries.values()
                      for g in _entry_names(e)}
        axes_to_perm: dict = {}
        buffer_ids = {id(b) for b in self.model.buffers()}
        buffers = []
        for name, t in self.model.state_dict(keep_vars=True).items():
            axes: list = [None] * t.ndim
            for ax, el in self.assigned.get(name, {}).items():
                root = self.uf.find(el)
                if root == _FIXED:
                    continue
                if root not in roots:
                    base = self.uf.hint[root] or "g"
                    gname, k = base, 1
                    while gname in taken:
                        k += 1
                        gname = f"{base}#{k}"
                    roots[root] = gname
                    taken.add(gname)
                axes[ax] = roots[root]
            for ax, entry in self.structured.get(name, {}).items():
                axes[ax] = entry
            axes_to_perm[name] = tuple(axes)
            if id(t) in buffer_ids:
                buffers.append(name)
        return permutation_spec_from_axes_to_perm(axes_to_perm, buffers=buffers)


def _entry_names(entry: Any) -> list:
    parts = entry.parts if isinstance(entry, Concat) else (entry,)
    return [g for p in parts for g in (p.group, p.inner) if g is not None]


def spec_from_model(
    model: nn.Module, example_input: Any, *, on_self_map: str = "raise"
) -> PermutationSpec:
    """Derive the permutation spec of ``model`` by tracing it with ``torch.fx``.

    Supported: Linear, Conv1d/2d/3d (``groups=1`` or depthwise), BatchNorm, LayerNorm (over the
    channel axis, or over several axes such as ``LayerNorm([C, H, W])``), GroupNorm with one
    group or one channel per group, elementwise activations, dropout, softmax, max/avg/adaptive
    pooling, additions and other elementwise binary ops (residual connections), sums/means over
    axes, ``permute``, ``transpose``, flatten/view/reshape that keep the channel axis whole (after
    a global pool, or spatial size 1), ``cat`` along unpermuted axes, indexing that keeps the
    channel axis whole, parameters added to or concatenated with a permuted tensor (class
    tokens, position embeddings), and self-attention: ``nn.MultiheadAttention`` (packed
    ``in_proj``, no ``add_bias_kv``/``add_zero_attn``), ``nn.TransformerEncoderLayer`` (pre- or
    post-norm, either ``batch_first``) and ``nn.TransformerEncoder``, whose heads become block
    groups (see :mod:`trajtransfer.core.block_axes`). Groups are named after the module that
    first produces them (e.g. ``"layers.0"``, ``"conv1"``; ``"blocks.0.heads"``,
    ``"blocks.0.qk"``, ``"blocks.0.v"``, ``"blocks.0.mlp"`` for an encoder layer ``blocks.0``).

    Parameters
    ----------
    model : torch.nn.Module
        Must be traceable by ``torch.fx.symbolic_trace`` (no data-dependent control flow). It is
        traced in its current train/eval mode and run once in eval mode under ``no_grad`` on
        ``example_input`` to learn shapes; BatchNorm statistics are left untouched.
    example_input : torch.Tensor or tuple of torch.Tensor
        Positional inputs of ``model.forward``. Use a batch size >= 2: shape-based decisions
        (such as whether a reshape keeps the channel axis) are made on these shapes.
    on_self_map : {"raise", "unpermute", "keep"}
        What to do when a layer maps a group onto itself, so that its weight would carry one
        group on two axes (a one-layer residual branch ``x + f(layer(x))``, or a square layer
        applied to its own output). The matchers refuse such a group: one assignment per group
        cannot solve a cost quadratic in its permutation. ``"raise"``: ValueError naming the
        module. ``"unpermute"``: leave that group unpermuted (a smaller symmetry; the other
        groups are still matched). ``"keep"``: return the spec as is, e.g. ``("g", "g")``,
        which ``apply_permutation`` / ``permute_model`` handle but the matchers do not.

    Returns
    -------
    PermutationSpec
        Every ``state_dict`` key of ``model`` (buffers marked as such: BatchNorm running stats
        follow their channel group, ``num_batches_tracked`` has ``()`` axes). The inputs' axes
        and the outputs' axes are unpermuted.

    Raises
    ------
    ValueError
        Naming the node and op, for anything not understood (``cat`` along a permuted axis,
        custom attention such as grouped-query or rotary modules, ``add_bias_kv``, ``kdim`` /
        ``vdim`` other than ``embed_dim``, indexing a permuted axis, functional layers with
        explicit weights, grouped convolutions, unknown modules), for a
        reshape that mixes a permuted channel axis with other axes, for a layer mapping a group
        onto itself (``on_self_map="raise"``), if tracing fails, or if ``example_input`` does not
        run through the model.
    """
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, ...)
        raise ValueError(f"spec_from_model: torch.fx could not trace {type(model).__name__}: "
                         f"{exc}") from exc
    inputs = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    modes = [(m, m.training) for m in model.modules()]
    recorder = _ShapeRecorder(gm)
    try:
        model.eval()  # shapes are mode-independent; eval keeps BatchNorm statistics unchanged
        with torch.no_grad():
            recorder.run(*inputs)
    except Exception as exc:  # a shape error inside the model
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                  for t in inputs]
        where = getattr(recorder, "current", None)
        at = f" at {_describe(where)}" if where is not None else ""
        raise ValueError(f"spec_from_model: example_input does not run through "
                         f"{type(model).__name__} (input shapes {shapes}){at}: {exc}") from exc
    finally:
        for m, mode in modes:
            m.training = mode
    if on_self_map not in ("raise", "unpermute", "keep"):
        raise ValueError(f"on_self_map must be 'raise', 'unpermute' or 'keep', got "
                         f"{on_self_map!r}")
    tracer = _Tracer(model, gm)
    tracer.run(on_self_map)
    return tracer.spec()
