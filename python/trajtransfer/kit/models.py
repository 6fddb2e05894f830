"""Reference models of the paper (algorithm-spec §3.3), each with its permutation spec.

State-dict names match the builders in :mod:`trajtransfer.core.spec`:

* :class:`MLP` - ``layers.{i}.weight`` / ``layers.{i}.bias``; groups ``c1, c2, ...``.
* :class:`Conv8` - ``conv1..conv8``, ``fc1``, ``fc2``, ``head`` (1x1 convs); 10 groups.
* :class:`ResNet18` - kuangliu-style names (``conv1``, ``bn1``, ``layer{s}.{b}.conv1``, ...,
  ``layer{s}.0.shortcut.{0,1}``, ``linear``); residual-stream and inner groups.
* :class:`ViT` - ``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks.{i}`` (torch's
  ``nn.TransformerEncoderLayer``), ``norm``, ``head``; residual stream, MLP, head and per-head
  groups (:func:`trajtransfer.core.spec.vit_spec`).

>>> import torch
>>> model = MLP(in_features=4, hidden=(8,), num_classes=3)
>>> sorted(model.state_dict()) == sorted(model.permutation_spec().axes_to_perm)
True
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..core.spec import CONV8_LAYERS, PermutationSpec, conv_spec, mlp_spec, resnet_spec

__all__ = ["MLP", "Conv8", "ResNet", "ResNet18", "BasicBlock", "ViT"]

_ACTIVATIONS: dict = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


class MLP(nn.Module):
    """Multi-layer perceptron on flattened inputs.

    Input ``(N, *)`` with ``prod(*) == in_features``; output ``(N, num_classes)``.

    Parameters
    ----------
    in_features : int
        Input size after flattening (784 for 28x28 images).
    hidden : Sequence[int]
        Hidden layer widths. The paper's MNIST MLP is ``hidden=(4096,), bias=False,
        activation=None`` (3,252,224 parameters; the official code has no activation).
    num_classes : int
    bias : bool
    activation : {"relu", "tanh", "gelu", "sigmoid", "identity"} or None
        Elementwise activation after every hidden layer; None means identity (deep linear).
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: Sequence[int] = (512,),
        num_classes: int = 10,
        bias: bool = True,
        activation: Optional[str] = "relu",
    ) -> None:
        super().__init__()
        key = "identity" if activation is None else activation
        if key not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)} or None, got {activation!r}"
            )
        sizes = [int(in_features), *[int(h) for h in hidden], int(num_classes)]
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=bias) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.act = _ACTIVATIONS[key]()
        self._bias = bool(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)

    def permutation_spec(self) -> PermutationSpec:
        """The spec of this model (:func:`trajtransfer.core.spec.mlp_spec`)."""
        return mlp_spec(len(self.layers) - 1, bias=self._bias)


class Conv8(nn.Module):
    """Conv8 of the paper (algorithm-spec §3.3): CIFAR 32x32x3 inputs, or smaller images.

    Input ``(N, in_channels, H, W)``; output ``(N, num_classes)``.

    Eight 3x3 convolutions (padding 1, ReLU; 2x2 max-pools after conv2, conv4, conv6 and a 4x4
    max-pool after conv8, leaving 1x1), then 1x1 convolutions 512 -> 256 -> 256 (ReLU) -> classes.
    All layers have biases. 4,885,066 parameters for 10 classes at ``width=1``.

    The pools divide the side by 32, so smaller inputs are zero-padded to 32x32 first (28x28
    Fashion-MNIST: 2 pixels each side), and the last pool still leaves 1x1: the head sees every
    channel once, and the permutation spec stays that of the paper.

    Parameters
    ----------
    num_classes : int
    width : float
        Multiplies every hidden channel count (``int(round(c * width))``, at least 1).
    in_channels : int
        Input channels (3 for CIFAR, 1 for Fashion-MNIST).
    input_size : int or (int, int)
        Input height and width, each at most 32.
    init : {"torch", "kaiming"}
        ``"torch"``: PyTorch's default init. ``"kaiming"``: He-normal weights for ReLU (fan-in)
        and zero biases. Without BatchNorm, eight ReLU layers at PyTorch's default scale shrink
        the signal so much that SGD sits at chance for epochs (Fashion-MNIST: loss 2.303 after two
        epochs at lr 0.01 and 0.05); He's scale keeps it and the net trains from the first epoch.

    Raises
    ------
    ValueError
        For an input side above 32 or below 1, ``in_channels < 1`` or an unknown ``init``.
    """

    _CHANNELS = (64, 64, 128, 128, 256, 256, 512, 512, 256, 256)
    _POOL_AFTER = {"conv2": 2, "conv4": 2, "conv6": 2, "conv8": 4}
    head: nn.Conv2d  # set in __init__ with the other layers named in CONV8_LAYERS

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 3,
                 input_size=32, init: str = "torch") -> None:
        super().__init__()
        if init not in ("torch", "kaiming"):
            raise ValueError(f"init must be 'torch' or 'kaiming', got {init!r}")
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if not (1 <= h <= 32 and 1 <= w <= 32) or int(in_channels) < 1:
            raise ValueError(f"Conv8 takes inputs of at most 32x32 with at least one channel (its "
                             f"pools divide the side by 32), got {in_channels}x{h}x{w}")
        # Centre the image in a 32x32 canvas (left/top get the smaller half of an odd margin).
        self.pad = nn.ZeroPad2d(((32 - w) // 2, 32 - w - (32 - w) // 2,
                                 (32 - h) // 2, 32 - h - (32 - h) // 2))
        chans = [max(1, int(round(c * width))) for c in self._CHANNELS] + [int(num_classes)]
        c_in = int(in_channels)
        for (name, _group, _k), c_out in zip(CONV8_LAYERS, chans):
            # 3x3 convs for conv1..conv8, 1x1 ("linear") convs for fc1, fc2, head.
            k = 3 if name.startswith("conv") else 1
            setattr(self, name, nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=True))
            c_in = c_out
        self.relu = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.pool4 = nn.MaxPool2d(4)
        if init == "kaiming":
            for name, _group, _k in CONV8_LAYERS:
                conv = getattr(self, name)
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pad(x)
        for name, _group, _k in CONV8_LAYERS[:-1]:
            x = self.relu(getattr(self, name)(x))
            pool = self._POOL_AFTER.get(name)
            if pool == 2:
                x = self.pool2(x)
            elif pool == 4:
                x = self.pool4(x)
        # (N, C, 1, 1): flattening cannot mix channels with space.
        return torch.flatten(self.head(x), 1)

    def permutation_spec(self) -> PermutationSpec:
        """The spec of this model (:func:`trajtransfer.core.spec.conv_spec`)."""
        return conv_spec()


class BasicBlock(nn.Module):
    """ResNet basic block (kuangliu naming): conv-bn-relu-conv-bn + shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """BasicBlock ResNet with BatchNorm (kuangliu style), ``num_blocks`` per stage.

    Input ``(N, in_channels, H, W)``; output ``(N, num_classes)``.

    Parameters
    ----------
    num_blocks : Sequence[int]
        Blocks per stage; stage s has ``width * 2**s`` channels and stride 2 for s > 0.
    num_classes : int
    width : int
        Channels of the stem and first stage (64 in ResNet-18).
    stem : {"cifar", "imagenet"}
        ``"cifar"``: 3x3 conv stride 1, no max-pool. ``"imagenet"``: 7x7 conv stride 2 padding 3
        and a 3x3/2 max-pool. Both then use a global average pool before the head, so any input
        size that survives the strides works.
    in_channels : int
        Input channels (3 for CIFAR and ImageNet, 1 for Fashion-MNIST).
    """

    def __init__(
        self,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        width: int = 64,
        stem: str = "cifar",
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if int(in_channels) < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        self._num_blocks = tuple(int(b) for b in num_blocks)
        self._width = int(width)
        if stem == "cifar":
            self.conv1 = nn.Conv2d(int(in_channels), width, 3, stride=1, padding=1, bias=False)
            self.stem_pool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(int(in_channels), width, 7, stride=2, padding=3, bias=False)
            self.stem_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        in_planes = width
        for s, nb in enumerate(self._num_blocks):
            planes = width * 2**s
            blocks = []
            for b in range(nb):
                blocks.append(BasicBlock(in_planes, planes, stride=2 if (s > 0 and b == 0) else 1))
                in_planes = planes
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_pool(self.relu(self.bn1(self.conv1(x))))
        for s in range(len(self._num_blocks)):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.linear(torch.flatten(self.pool(x), 1))

    def permutation_spec(self, running_stats: bool = True) -> PermutationSpec:
        """The spec of this model (:func:`trajtransfer.core.spec.resnet_spec`).

        ``running_stats=False`` leaves BatchNorm running statistics out (the paper's spec).
        """
        return resnet_spec(self._num_blocks, width=self._width, running_stats=running_stats)


class ResNet18(ResNet):
    """ResNet-18: :class:`ResNet` with ``num_blocks=(2, 2, 2, 2)``.

    11,689,512 parameters with ``num_classes=1000, width=64, stem="imagenet"`` (as torchvision).
    """

    def __init__(self, num_classes: int = 10, width: int = 64, stem: str = "cifar",
                 in_channels: int = 3) -> None:
        super().__init__((2, 2, 2, 2), num_classes=num_classes, width=width, stem=stem,
                         in_channels=in_channels)


class ViT(nn.Module):
    """Small Vision Transformer built from torch's ``nn.TransformerEncoderLayer``.

    Input ``(N, in_channels, image_size, image_size)`` or flat ``(N, in_channels * image_size**2)``;
    output ``(N, num_classes)``. Non-overlapping ``patch_size`` patches are embedded by a strided
    convolution, a learned class token is prepended, learned position embeddings are added, then
    ``depth`` encoder layers (GELU MLP of ``width * mlp_ratio`` units), a final LayerNorm on the
    class token and a linear head. With the defaults (Fashion-MNIST, 16 patches of 7x7, width 64,
    4 heads of 16 dims, 2 blocks) it has 72,074 parameters.

    Parameters
    ----------
    image_size, patch_size, in_channels : int
        ``patch_size`` must divide ``image_size``.
    width : int
        Model (residual stream) dimension; ``heads`` must divide it.
    heads, depth, mlp_ratio : int
    num_classes : int
    dropout : float
        Dropout of the encoder layers (attention weights, MLP and residual branches).
    norm_first : bool
        Pre-norm (True) or post-norm (False) encoder layers. ``norm`` is applied in both cases, so
        both variants have the same parameters and the same spec.

    Raises
    ------
    ValueError
        If ``patch_size`` does not divide ``image_size``, ``heads`` does not divide ``width``, or
        a size is below 1.
    """

    def __init__(self, image_size: int = 28, patch_size: int = 7, in_channels: int = 1,
                 width: int = 64, heads: int = 4, depth: int = 2, mlp_ratio: int = 2,
                 num_classes: int = 10, dropout: float = 0.0, norm_first: bool = True) -> None:
        super().__init__()
        sizes = dict(image_size=image_size, patch_size=patch_size, in_channels=in_channels,
                     width=width, heads=heads, depth=depth, mlp_ratio=mlp_ratio,
                     num_classes=num_classes)
        low = {k: v for k, v in sizes.items() if int(v) < 1}
        if low:
            raise ValueError(f"ViT sizes must be >= 1, got {low}")
        if image_size % patch_size:
            raise ValueError(f"patch_size {patch_size} must divide image_size {image_size}")
        if width % heads:
            raise ValueError(f"heads {heads} must divide width {width}")
        self._image_size, self._in_channels = int(image_size), int(in_channels)
        self._depth, self._heads = int(depth), int(heads)
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, width))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, width * mlp_ratio, dropout,
                                       activation="gelu", batch_first=True, norm_first=norm_first)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = self._image_size
        x = x.reshape(x.shape[0], self._in_channels, side, side)
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, patches, width)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))

    def permutation_spec(self) -> PermutationSpec:
        """The spec of this model (:func:`trajtransfer.core.spec.vit_spec`)."""
        from ..core.spec import vit_spec

        return vit_spec(self._depth, heads=self._heads)
