"""The paper's experimental settings as data (algorithm-spec.md §3).

Two families (§3.4):

* ``"reference"`` - the official ``config.yaml``: cosine-increment λ schedule, K = 10/30/15/30/15/15,
  gradient batches as configured, fine-tuning with AdamW (constant lr) for 10 epochs (MNIST: SGD,
  3 epochs).
* ``"paper"`` - paper v2 (arXiv 2305.14122v2): uniform λ, T = 5 (MNIST), 30 (CIFAR-10), 40
  (ImageNet), 15 (pre-trained scenarios), the appendix's gradient batches, and subsequent training
  with the source's own optimizer and cosine schedule for the source's number of epochs.

>>> p = preset("reference", "mnist_mlp")
>>> p.steps, p.schedule, p.grad_batches, p.batch_size
(10, 'cosine', 1, 128)
>>> preset("paper", "mnist_mlp").steps
5
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Optional

from .training import TrainConfig

__all__ = ["ModelSpec", "TransferPreset", "preset", "list_presets", "PRESET_KINDS"]

PRESET_KINDS = ("paper", "reference")


@dataclass(frozen=True)
class ModelSpec:
    """Which network to build: ``kind`` in {"mlp", "conv8", "resnet18", "vit"} and its keyword
    arguments."""

    kind: str
    kwargs: dict = field(default_factory=dict)

    def build(self):
        """Instantiate the model from :mod:`trajtransfer.kit.models`."""
        from . import models

        ctors = {"mlp": models.MLP, "conv8": models.Conv8, "resnet18": models.ResNet18, "vit": models.ViT}
        if self.kind not in ctors:
            raise ValueError(f"model kind must be one of {sorted(ctors)}, got {self.kind!r}")
        ctor = ctors[self.kind]
        return ctor(**self.kwargs)


@dataclass(frozen=True)
class TransferPreset:
    """One experiment: the source/target training run, the transfer, and the fine-tuning.

    Attributes
    ----------
    name, kind : str
        e.g. ``"mnist_mlp"``, ``"reference"``.
    dataset : str
        Dataset key (``"mnist"``, ``"cifar10"``, ``"cifar100"``, ``"cifar100_split1"``,
        ``"imagenet"``, ``"cars"``, ``"cub"``).
    model : ModelSpec
    train : TrainConfig
        Source and target training (seeds come from ``source_target_seeds``).
    checkpoint_epochs : tuple[int, ...]
        Checkpoints spanning the trajectory (−1 = init).
    num_splits : int
        n, steps per segment; K = (len(checkpoint_epochs) − 1)·n.
    schedule : {"uniform", "cosine"}
    grad_batches, batch_size : int
        Minibatches × batch size per gradient pair.
    bn_batches, bn_batch_size : int
        BatchNorm recalibration (0 for models without BN).
    finetune : TrainConfig
        Subsequent training from the best transferred step.
    pretrained_source : str or None
        For pre-trained scenarios, the preset whose trained weights initialize both runs (head reset).
    source_target_seeds : tuple of (int, int)
    notes : str
        Provenance and confidence (see algorithm-spec.md).
    """

    name: str
    kind: str
    dataset: str
    model: ModelSpec
    train: TrainConfig
    checkpoint_epochs: tuple
    num_splits: int
    schedule: str
    grad_batches: int
    batch_size: int
    bn_batches: int
    bn_batch_size: Optional[int]
    finetune: TrainConfig
    pretrained_source: Optional[str] = None
    source_target_seeds: tuple = ((101, 102), (201, 202), (301, 302))
    notes: str = ""

    @property
    def steps(self) -> int:
        """K, the number of transfer steps."""
        return (len(self.checkpoint_epochs) - 1) * self.num_splits

    def transfer_kwargs(self) -> dict:
        """Keyword arguments for :func:`trajtransfer.method.transfer.transfer`."""
        return {"steps": self.steps, "grad_batches": self.grad_batches, "batch_size": self.batch_size,
                "bn_batches": self.bn_batches, "bn_batch_size": self.bn_batch_size}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["steps"] = self.steps
        return d


_PRETRAINED_SEEDS = ((101, 102), (201, 202), (301, 302))  # checkpoint seeds; runs use 777 / 888


def _reference() -> dict:
    mlp = ModelSpec("mlp", {"in_features": 784, "hidden": (4096,), "num_classes": 10, "bias": False,
                            "activation": None})
    conv8 = ModelSpec("conv8", {"num_classes": 10})
    r18 = lambda n: ModelSpec("resnet18", {"num_classes": n, "stem": "imagenet"})  # noqa: E731
    adamw_ft = TrainConfig(epochs=10, lr=1e-4, optimizer="adamw", weight_decay=1e-4, schedule="constant")
    out = {
        "mnist_mlp": TransferPreset(
            "mnist_mlp", "reference", "mnist", mlp,
            TrainConfig(epochs=10, lr=0.01, batch_size=128, momentum=0.9, schedule="constant"),
            (-1, 9), 10, "cosine", 1, 128, 0, None,
            TrainConfig(epochs=3, lr=0.01, batch_size=128, momentum=0.9, schedule="constant"),
            notes="config.yaml transfer_init-mnist_mlp; the official MLP has no activation (Q8)."),
        "cifar10_conv8": TransferPreset(
            "cifar10_conv8", "reference", "cifar10", conv8,
            TrainConfig(epochs=60, lr=0.05, weight_decay=1e-4, schedule="cosine"),
            (-1, 59), 30, "cosine", 2, 128, 0, None, adamw_ft,
            notes="config.yaml transfer_init-cifar10_conv8; fine-tuning inherits wd 1e-4."),
        "cifar10_cifar100_conv8": TransferPreset(
            "cifar10_cifar100_conv8", "reference", "cifar100_split1", conv8,
            TrainConfig(epochs=30, lr=0.05, weight_decay=1e-4, schedule="cosine"),
            (-1, 29), 15, "cosine", 1, 128, 0, None, adamw_ft, pretrained_source="cifar10_conv8",
            source_target_seeds=_PRETRAINED_SEEDS,
            notes="10 CIFAR-100 classes {1,14,23,30,52,55,60,85,95,98}; source seed 777, target 888."),
        "imagenet_resnet18": TransferPreset(
            "imagenet_resnet18", "reference", "imagenet", r18(1000),
            TrainConfig(epochs=100, lr=0.1, weight_decay=1e-4, schedule="cosine", warmup_epochs=5),
            (-1, 99), 30, "cosine", 100, 128, 20, 128,
            TrainConfig(epochs=10, lr=1e-6, optimizer="adamw", weight_decay=0.0, schedule="constant"),
            notes="config.yaml transfer_init-imagenet_resnet18 (fine-tuning lr 1e-6, wd 0)."),
        "imagenet_cars_resnet18": TransferPreset(
            "imagenet_cars_resnet18", "reference", "cars", r18(196),
            TrainConfig(epochs=30, lr=0.1, weight_decay=1e-4, schedule="cosine"),
            (-1, 29), 15, "cosine", 10, 128, 2, 128, adamw_ft, pretrained_source="imagenet_resnet18",
            source_target_seeds=_PRETRAINED_SEEDS,
            notes="The official _fast config runs GMT by mistake (bug B1); here fgmt is fgmt."),
        "imagenet_cub_resnet18": TransferPreset(
            "imagenet_cub_resnet18", "reference", "cub", r18(200),
            TrainConfig(epochs=30, lr=0.1, weight_decay=1e-4, schedule="cosine"),
            (-1, 29), 15, "cosine", 10, 128, 2, 128, adamw_ft, pretrained_source="imagenet_resnet18",
            source_target_seeds=_PRETRAINED_SEEDS, notes="As Cars (bug B1 applies there too)."),
    }
    return out


def _paper() -> dict:
    ref = _reference()
    sgd_ft = lambda base, lr: replace(base, lr=lr)  # noqa: E731  (source optimizer + schedule, new lr)
    mnist = ref["mnist_mlp"]
    out = {
        "mnist_mlp": replace(
            mnist, kind="paper",
            model=ModelSpec("mlp", {"in_features": 784, "hidden": (4096,), "num_classes": 10, "bias": False,
                                    "activation": "relu"}),
            train=replace(mnist.train, epochs=15), checkpoint_epochs=(-1, 14), num_splits=5, schedule="uniform",
            notes="Paper v2: ReLU 2-MLP, E = 15, T = 5 (figure), uniform λ; fine-tuning not described for "
                  "MNIST, the reference 3-epoch SGD is kept [I]."),
        "cifar10_conv8": replace(
            ref["cifar10_conv8"], kind="paper", schedule="uniform",
            finetune=sgd_ft(ref["cifar10_conv8"].train, 0.01),
            notes="Paper v2: uniform λ, T = 30, subsequent training = source SGD + cosine, lr 0.01, 60 epochs."),
        "cifar10_cifar100_conv8": replace(
            ref["cifar10_cifar100_conv8"], kind="paper", dataset="cifar100", schedule="uniform", grad_batches=2,
            model=ModelSpec("conv8", {"num_classes": 100}),
            train=replace(ref["cifar10_cifar100_conv8"].train, epochs=60), checkpoint_epochs=(-1, 59),
            finetune=replace(ref["cifar10_conv8"].train, lr=0.05, epochs=60),
            notes="Paper v2 figure uses full CIFAR-100 (100 classes) [I]; B = 128 × 2; 60 epochs."),
        "imagenet_resnet18": replace(
            ref["imagenet_resnet18"], kind="paper", schedule="uniform", num_splits=40,
            finetune=replace(ref["imagenet_resnet18"].train),
            notes="Paper v2: T = 40, uniform λ."),
        "imagenet_cars_resnet18": replace(
            ref["imagenet_cars_resnet18"], kind="paper", schedule="uniform", grad_batches=5,
            finetune=sgd_ft(ref["imagenet_cars_resnet18"].train, 0.05),
            notes="Paper v2: B = 128 × 5, subsequent training SGD + cosine lr 0.05, 30 epochs."),
        "imagenet_cub_resnet18": replace(
            ref["imagenet_cub_resnet18"], kind="paper", schedule="uniform", grad_batches=5,
            finetune=sgd_ft(ref["imagenet_cub_resnet18"].train, 0.01),
            notes="Paper v2: B = 128 × 5, subsequent training SGD + cosine lr 0.01, 30 epochs."),
    }
    return out


_TABLE = {"reference": _reference(), "paper": _paper()}


def list_presets(kind: Optional[str] = None) -> list:
    """Names of the presets of ``kind`` (or ``"kind/name"`` for all kinds)."""
    if kind is None:
        return [f"{k}/{n}" for k in PRESET_KINDS for n in _TABLE[k]]
    if kind not in _TABLE:
        raise ValueError(f"kind must be one of {PRESET_KINDS}, got {kind!r}")
    return list(_TABLE[kind])


def preset(kind: str, name: str) -> TransferPreset:
    """The preset ``name`` of family ``kind`` (``"paper"`` or ``"reference"``).

    Raises
    ------
    ValueError
        If either is unknown (the message lists the valid names).
    """
    if kind not in _TABLE:
        raise ValueError(f"kind must be one of {PRESET_KINDS}, got {kind!r}")
    if name not in _TABLE[kind]:
        raise ValueError(f"unknown preset {name!r}; {kind} presets: {sorted(_TABLE[kind])}")
    return _TABLE[kind][name]
