"""Datasets as in-memory tensors, an idx reader/writer, and seeded persistent minibatch loaders.

Nothing here downloads. Loaders:

* :func:`load_digits_data` - scikit-learn's bundled 8×8 digits (1,797 images, 64 features), the
  embedded default for demos and tests.
* :func:`load_fashion_mnist` - idx files from Debian's ``fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``) or a given folder.
* :func:`load_mnist` - idx files from a given folder.
* :func:`load_cifar10` - the python pickle batches (``cifar-10-batches-py``) from a given folder.

Each returns :class:`DatasetSplits` (train / val / test :class:`ArrayDataset`). As in the official
code (algorithm-spec.md §2.8), ``val`` is a held-out fraction of the official training set chosen
with a fixed seed and ``test`` is the official test set; transfer selects its best step on ``val``.

:class:`Loader` draws shuffled minibatches from one persistent ``torch.Generator`` (no
DataLoader or worker churn, §6.2 I3), so the stream of batches is a function of the seed only.
"""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from ._extras import require

__all__ = [
    "ArrayDataset",
    "DatasetSplits",
    "Loader",
    "eval_batches",
    "FASHION_MNIST_DIR",
    "read_idx",
    "write_idx",
    "load_digits_data",
    "load_fashion_mnist",
    "load_mnist",
    "load_cifar10",
    "load_dataset",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Where Debian's ``fashion-mnist`` package installs the gzipped idx files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


@dataclass
class ArrayDataset:
    """Inputs and integer labels held as CPU tensors.

    Attributes
    ----------
    x : (N, ...) float32 tensor
    y : (N,) int64 tensor, values in 0 … num_classes − 1
    num_classes : int
    """

    x: Any  # torch.Tensor (torch is imported only where used)
    y: Any
    num_classes: int

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} samples but y has {self.y.shape[0]}")
        if self.y.ndim != 1:
            raise ValueError(f"y must have shape (N,), got {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple:
        """Shape of one sample, e.g. ``(64,)`` or ``(1, 28, 28)``."""
        return tuple(self.x.shape[1:])

    @property
    def num_features(self) -> int:
        """Number of input values per sample (for an MLP)."""
        return int(np.prod(self.input_shape))

    def subset(self, index) -> "ArrayDataset":
        """The samples at ``index`` (a tensor, array or slice)."""
        import torch

        if isinstance(index, np.ndarray):
            index = torch.from_numpy(index)
        return ArrayDataset(self.x[index], self.y[index], self.num_classes)

    def flatten(self) -> "ArrayDataset":
        """The same samples with inputs reshaped to ``(N, num_features)``."""
        return ArrayDataset(self.x.reshape(len(self), -1), self.y, self.num_classes)


@dataclass
class DatasetSplits:
    """``train`` (for training, gradients and BN recalibration), ``val`` (best-step selection) and
    ``test`` (final reports), plus a name."""

    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    name: str = ""

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def flatten(self) -> "DatasetSplits":
        return DatasetSplits(self.train.flatten(), self.val.flatten(), self.test.flatten(), self.name)


class Loader:
    """Endless seeded stream of shuffled minibatches from an :class:`ArrayDataset`.

    One ``torch.Generator`` (seeded once) draws a fresh permutation per pass; iteration never
    ends, so take batches with ``next(loader)`` or :meth:`take`. Use :meth:`epoch` for exactly one
    pass.

    Parameters
    ----------
    dataset : ArrayDataset
    batch_size : int ≥ 1
    seed : int, default 0
    drop_last : bool, default True
        Skip the incomplete last batch of each pass (every batch then has ``batch_size`` samples).

    Raises
    ------
    ValueError
        If ``batch_size < 1``, or ``drop_last`` and the dataset is smaller than one batch.
    """

    def __init__(self, dataset: ArrayDataset, batch_size: int, seed: int = 0, *, drop_last: bool = True) -> None:
        import torch

        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and len(dataset) < batch_size:
            raise ValueError(f"dataset has {len(dataset)} samples, fewer than batch_size={batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(int(seed))
        self._order: Any = None
        self._pos = 0

    def batches_per_epoch(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _new_pass(self) -> None:
        import torch

        self._order = torch.randperm(len(self.dataset), generator=self.generator)
        self._pos = 0

    def __iter__(self) -> "Loader":
        return self

    def __next__(self) -> tuple:
        n = len(self.dataset)
        if self._order is None or self._pos >= n or (self.drop_last and self._pos + self.batch_size > n):
            self._new_pass()
        idx = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.dataset.x[idx], self.dataset.y[idx]

    def take(self, k: int) -> list:
        """The next ``k`` minibatches as a list of ``(x, y)``."""
        return [next(self) for _ in range(int(k))]

    def epoch(self) -> Iterator[tuple]:
        """Exactly one fresh shuffled pass over the data."""
        self._new_pass()
        for _ in range(self.batches_per_epoch()):
            yield next(self)


def eval_batches(dataset: ArrayDataset, batch_size: int = 1024) -> Iterator[tuple]:
    """Sequential (unshuffled) minibatches covering the whole dataset once."""
    for i in range(0, len(dataset), batch_size):
        yield dataset.x[i:i + batch_size], dataset.y[i:i + batch_size]


# ----------------------------------------------------------------------------------- idx files
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {np.dtype(v).newbyteorder("=") if v.itemsize > 1 else v: k for k, v in _IDX_DTYPES.items()}


def _open(path: PathLike, mode: str):
    return gzip.open(path, mode) if os.fspath(path).endswith(".gz") else open(path, mode)


def read_idx(path: PathLike) -> np.ndarray:
    """Read an idx file (the MNIST format), gzipped if the name ends in ``.gz``.

    Returns
    -------
    ndarray
        With the stored shape, in native byte order (uint8 for MNIST images and labels).

    Raises
    ------
    ValueError
        On a bad magic number, unknown type code, or a size that does not match the header.
    """
    with _open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{os.fspath(path)!r} is not an idx file (bad magic {raw[:4].hex()})")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{os.fspath(path)!r}: unknown idx type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{os.fspath(path)!r}: truncated idx header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{os.fspath(path)!r}: {len(raw)} bytes, header {shape} implies {expected}")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an idx file (gzipped if the name ends in ``.gz``).

    Raises
    ------
    TypeError
        If the dtype has no idx type code (uint8, int8, int16, int32, float32, float64 do).
    """
    arr = np.asarray(array)
    key = arr.dtype.newbyteorder("=") if arr.dtype.itemsize > 1 else arr.dtype
    if key not in _IDX_CODES:
        raise TypeError(f"array dtype {arr.dtype} cannot be stored in an idx file")
    code = _IDX_CODES[key]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    with _open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(arr, dtype=_IDX_DTYPES[code]).tobytes())


# ----------------------------------------------------------------------------------- splits
def _train_val_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _dataset(x: np.ndarray, y: np.ndarray, num_classes: int) -> ArrayDataset:
    import torch

    return ArrayDataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                        torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)), num_classes)


def _splits(x_train, y_train, x_test, y_test, num_classes, val_fraction, seed, name) -> DatasetSplits:
    tr, va = _train_val_split(len(y_train), val_fraction, seed)
    return DatasetSplits(_dataset(x_train[tr], y_train[tr], num_classes),
                         _dataset(x_train[va], y_train[va], num_classes),
                         _dataset(x_test, y_test, num_classes), name)


def load_digits_data(seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1) -> DatasetSplits:
    """scikit-learn's bundled 8×8 digits: 64 features scaled to [0, 1], 10 classes.

    The 1,797 images are split at random (``seed``) into test (``test_fraction``), validation
    (``val_fraction``) and train (the rest: 1,437 / 180 / 180 by default). No network access.
    """
    datasets = require("sklearn.datasets", distribution="scikit-learn", extra="demo",
                       purpose="the digits dataset")
    d = datasets.load_digits()
    x = d.data.astype(np.float32) / 16.0
    y = d.target.astype(np.int64)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    te, rest = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    # val_fraction is a fraction of all samples, as is test_fraction
    return _splits(x[rest], y[rest], x[te], y[te], 10, val_fraction / (1 - test_fraction), seed + 1,
                   "digits")


def _find(root: Path, stem: str) -> Path:
    for cand in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (root / cand).exists():
            return root / cand
    raise FileNotFoundError(f"no {stem}[.gz] in {os.fspath(root)!r}")


def _load_idx_splits(root: Optional[PathLike], default: Optional[str], name: str, mean: float, std: float,
                     val_fraction: float, seed: int, normalize: bool, hint: str = "") -> DatasetSplits:
    if root is None:
        if default is None:
            raise ValueError(f"{name}: give the folder holding the idx files (nothing is downloaded)")
        root = default
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: folder {os.fspath(root)!r} does not exist (nothing is downloaded)"
                                + hint)
    try:
        xtr = read_idx(_find(root, "train-images-idx3-ubyte"))
        ytr = read_idx(_find(root, "train-labels-idx1-ubyte"))
        xte = read_idx(_find(root, "t10k-images-idx3-ubyte"))
        yte = read_idx(_find(root, "t10k-labels-idx1-ubyte"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{name}: {exc}{hint}") from None

    def prep(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32)[:, None] / 255.0  # (N, 1, 28, 28)
        return (x - mean) / std if normalize else x

    return _splits(prep(xtr), ytr, prep(xte), yte, 10, val_fraction, seed, name)


def load_fashion_mnist(root: Optional[PathLike] = None, *, val_fraction: float = 0.1, seed: int = 777,
                       normalize: bool = True) -> DatasetSplits:
    """Fashion-MNIST from idx files (default: Debian's ``/usr/share/datasets/fashion-mnist``).

    Images are ``(1, 28, 28)`` float32, standardized with mean 0.2860 / std 0.3530 when
    ``normalize``; ``val`` is ``val_fraction`` of the 60,000 training images (``seed``), ``test``
    the 10,000 official test images.

    Raises
    ------
    FileNotFoundError
        If the folder or one of the four idx files is missing.
    """
    return _load_idx_splits(root, FASHION_MNIST_DIR, "fashion-mnist", 0.2860, 0.3530, val_fraction, seed,
                            normalize, hint=_FASHION_MNIST_HINT)


_FASHION_MNIST_HINT = ("; install Debian's copy with `apt-get install dataset-fashion-mnist`, or pass the "
                       "folder holding the four idx files with --data-root (root= in Python)")


def load_mnist(root: PathLike, *, val_fraction: float = 0.1, seed: int = 777,
               normalize: bool = True) -> DatasetSplits:
    """MNIST from the four idx files in ``root`` (mean 0.1307 / std 0.3081 as in the official code)."""
    return _load_idx_splits(root, None, "mnist", 0.1307, 0.3081, val_fraction, seed, normalize)


_CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
_CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


def load_cifar10(root: PathLike, *, val_fraction: float = 0.1, seed: int = 777,
                 normalize: bool = True) -> DatasetSplits:
    """CIFAR-10 from the python pickle batches (``data_batch_1`` … ``_5``, ``test_batch``).

    ``root`` may be the ``cifar-10-batches-py`` folder or its parent. Images are ``(3, 32, 32)``
    float32 in [0, 1], standardized per channel when ``normalize``. No augmentation.
    Only open pickles you trust: unpickling can run code.
    """
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if not (root / "test_batch").exists():
        raise FileNotFoundError(f"cifar10: no test_batch in {os.fspath(root)!r} (nothing is downloaded)")

    def load(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for n in names:
            with open(root / n, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[b"labels"], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    xtr, ytr = load([f"data_batch_{i}" for i in range(1, 6)])
    xte, yte = load(["test_batch"])

    def prep(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32) / 255.0
        return (x - _CIFAR_MEAN[:, None, None]) / _CIFAR_STD[:, None, None] if normalize else x

    return _splits(prep(xtr), ytr, prep(xte), yte, 10, val_fraction, seed, "cifar10")


def load_dataset(name: str, root: Optional[PathLike] = None, **kwargs) -> DatasetSplits:
    """Load ``"digits"``, ``"fashion-mnist"``, ``"mnist"`` or ``"cifar10"`` by name."""
    key = name.lower().replace("_", "-")
    if key == "digits":
        return load_digits_data(**kwargs)
    if key in ("fashion-mnist", "fmnist"):
        return load_fashion_mnist(root, **kwargs)
    if key == "mnist":
        if root is None:
            raise ValueError("mnist: pass --data-root / root= (nothing is downloaded)")
        return load_mnist(root, **kwargs)
    if key in ("cifar10", "cifar-10"):
        if root is None:
            raise ValueError("cifar10: pass --data-root / root= (nothing is downloaded)")
        return load_cifar10(root, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; expected digits, fashion-mnist, mnist or cifar10")
