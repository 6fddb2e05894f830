"""Source trajectories: checkpoints, the linear path between them, and λ schedules.

A trajectory is built from checkpoints θ(c₀), θ(c₁), …, θ(c_m) (state dicts in memory or files
written by :class:`TrajectoryRecorder`). Each segment between consecutive checkpoints is split into
``num_splits`` = n points with a λ schedule (algorithm-spec.md §2.2), so the trajectory has
K = m·n steps and K + 1 points:

    point (i-1)·n + idx = θ(c_{i-1}) + λ_idx · (θ(c_i) − θ(c_{i-1})),   idx = 1…n,   point 0 = θ(c₀).

Files are checked when the trajectory is built (each one opened memory-mapped: readable, a state
dict of tensors with the keys and shapes of the first), then loaded lazily
(``torch.load(weights_only=True, map_location=...)``) and cached, so a linear trajectory only ever
holds its two end points in memory.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = ["Trajectory", "TrajectoryRecorder", "lambda_schedule"]

StateDict = Mapping[str, Any]
CheckpointLike = Union[StateDict, str, "os.PathLike[str]"]

_SCHEDULES = ("uniform", "cosine")


def lambda_schedule(num_splits: int, kind: str = "uniform") -> np.ndarray:
    """Interpolation coefficients λ₀ … λ_n of one trajectory segment.

    Parameters
    ----------
    num_splits : int
        n ≥ 1, the number of steps per segment.
    kind : {"uniform", "cosine"}
        ``"uniform"``: λ_idx = idx / n. ``"cosine"``: the cosine-increment rule of the official
        config (string ``1+cos(π t/T)``): λ_idx = Σ_{t<idx}(1+cos(πt/n)) / Σ_{t<n}(1+cos(πt/n)),
        i.e. large steps first, shrinking towards the end like a cosine learning-rate decay.

    Returns
    -------
    (n + 1,) float64 array
        λ₀ = 0 and λ_n = 1 exactly; non-decreasing.

    Raises
    ------
    ValueError
        If ``num_splits < 1`` or ``kind`` is unknown.

    Examples
    --------
    >>> lam = lambda_schedule(30, "cosine")
    >>> round(float(lam[1] * 31), 12), round(float(lam[10]), 4), float(lam[30])
    (2.0, 0.5972, 1.0)
    """
    n = int(num_splits)
    if n < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits}")
    if kind == "uniform":
        lam = np.arange(n + 1, dtype=np.float64) / n
    elif kind == "cosine":
        incr = 1.0 + np.cos(np.pi * np.arange(n, dtype=np.float64) / n)
        lam = np.concatenate([[0.0], np.cumsum(incr)]) / incr.sum()
    else:
        raise ValueError(f"kind must be one of {_SCHEDULES}, got {kind!r}")
    lam[-1] = 1.0  # exact end point, whatever the rounding of the cumulative sum
    return lam


def _torch_load(path: Union[str, "os.PathLike[str]"], map_location: Any, mmap: bool) -> Any:
    import torch

    kwargs: dict = {"map_location": map_location}
    params = inspect.signature(torch.load).parameters
    if "weights_only" in params:  # torch >= 1.13: never unpickle arbitrary objects
        kwargs["weights_only"] = True
    if mmap and "mmap" in params:
        kwargs["mmap"] = True
    return torch.load(os.fspath(path), **kwargs)


def _load_checkpoint(path: Union[str, "os.PathLike[str]"], map_location: Any = "cpu", *,
                     mmap: bool = False) -> dict:
    """The state dict in a checkpoint file; every failure names the file.

    ``mmap=True`` maps the tensors instead of reading them (a cheap check of keys and shapes);
    files in torch's legacy format cannot be mapped and are then read whole.
    """
    import torch

    name = os.fspath(path)
    try:
        try:
            obj = _torch_load(path, map_location, mmap)
        except Exception:
            if not mmap:
                raise
            obj = _torch_load(path, map_location, False)  # legacy format: read whole
    except OSError:
        raise  # names the file already (missing, unreadable)
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"checkpoint {name!r} is not a readable torch checkpoint "
                         f"({type(exc).__name__}: {detail})") from exc
    if not isinstance(obj, Mapping):
        raise TypeError(f"checkpoint {name!r} holds a {type(obj).__name__}, not a state dict")
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"checkpoint {name!r}: entry {k!r} is a {type(v).__name__}, "
                            f"not a tensor")
    return dict(obj)


def _check_same_layout(ref: Mapping[str, Any], sd: Mapping[str, Any], name: str,
                       ref_name: str) -> None:
    """Raise unless ``sd`` has exactly the keys of ``ref`` with the same shapes."""
    if set(ref) != set(sd):
        missing, extra = sorted(set(ref) - set(sd)), sorted(set(sd) - set(ref))
        raise ValueError(f"{name} keys differ from {ref_name}: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(ref[k].shape):
            raise ValueError(f"{name}[{k!r}] has shape {tuple(v.shape)}, {ref_name} has "
                             f"{tuple(ref[k].shape)}")


def _as_state_dict(obj: Any, what: str) -> dict:
    """A plain ``name -> tensor`` dict from a state dict or an ``nn.Module``."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return {k: v.detach().clone() for k, v in obj.state_dict().items()}
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if isinstance(v, np.ndarray):
                v = torch.from_numpy(v)
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"{what}[{k!r}] must be a tensor or array, got {type(v).__name__}")
            out[k] = v.detach()
        return out
    raise TypeError(f"{what} must be a state dict (name -> tensor), an nn.Module or a file path, "
                    f"got {type(obj).__name__}")


class Trajectory:
    """A (linearly interpolated) training trajectory of one network.

    Parameters
    ----------
    checkpoints : sequence of state dicts or checkpoint paths, length m + 1 ≥ 2
        θ(c₀), …, θ(c_m) in training order; c₀ is normally the initialization (epoch −1).
        Paths are loaded lazily with ``torch.load(weights_only=True)``. All must share the same keys
        and shapes.
    num_splits : int, default 1
        n, the number of steps per segment. ``num_splits=1`` uses the checkpoints themselves (an
        "actual" trajectory).
    schedule : {"uniform", "cosine"}, default "uniform"
        λ schedule within each segment, see :func:`lambda_schedule`.
    labels : sequence, optional
        A label per checkpoint (e.g. the epoch), kept for reports.
    cache_size : int, default 2
        How many loaded checkpoints to keep in memory (2 suffices for sequential access).
    map_location : str, torch.device or callable, default "cpu"
        Where checkpoint files are loaded (``torch.load``'s ``map_location``), e.g. ``"cuda"``
        to interpolate on the GPU. In-memory state dicts stay where they are.

    Raises
    ------
    ValueError
        If a checkpoint file cannot be read, or a checkpoint's keys or shapes differ from the
        first one's (the message names the checkpoint).
    TypeError
        If a checkpoint is not a state dict of tensors.

    Notes
    -----
    Floating-point tensors are interpolated; other tensors (e.g. BatchNorm's
    ``num_batches_tracked``) are taken from the segment's later checkpoint for λ > 0.

    Examples
    --------
    >>> import torch
    >>> a, b = {"w": torch.zeros(2)}, {"w": torch.ones(2)}
    >>> traj = Trajectory([a, b], num_splits=4)
    >>> len(traj), traj.num_steps, traj[1]["w"].tolist(), traj.displacement(2)["w"].tolist()
    (5, 4, [0.25, 0.25], [0.5, 0.5])
    """

    def __init__(
        self,
        checkpoints: Sequence[CheckpointLike],
        num_splits: int = 1,
        schedule: str = "uniform",
        *,
        labels: Optional[Sequence[Any]] = None,
        cache_size: int = 2,
        map_location: Any = "cpu",
    ) -> None:
        if isinstance(checkpoints, (str, os.PathLike, Mapping)):
            raise TypeError("checkpoints must be a sequence of state dicts or paths")
        ckpts = list(checkpoints)
        if len(ckpts) < 2:
            raise ValueError(f"a trajectory needs at least 2 checkpoints, got {len(ckpts)}")
        for i, c in enumerate(ckpts):
            if not isinstance(c, (str, os.PathLike, Mapping)) and not hasattr(c, "state_dict"):
                raise TypeError(f"checkpoints[{i}] must be a state dict, module or path, "
                                f"got {type(c).__name__}")
        if labels is not None and len(labels) != len(ckpts):
            raise ValueError(f"labels has {len(labels)} entries, expected {len(ckpts)}")
        self._ckpts = ckpts
        self.labels = list(labels) if labels is not None else list(range(len(ckpts)))
        self.num_splits = int(num_splits)
        self.schedule = schedule
        self.lambdas = lambda_schedule(self.num_splits, schedule)  # validates both
        self._cache: dict[int, dict] = {}
        self._cache_size = max(1, int(cache_size))
        self._origin: Optional[dict] = None
        self._map_location = map_location
        self._validate()

    def _name(self, i: int) -> str:
        c = self._ckpts[i]
        if isinstance(c, (str, os.PathLike)):
            return f"checkpoint {os.fspath(c)!r}"
        return f"checkpoint {i}"

    def _state(self, i: int, *, check_only: bool = False) -> dict:
        c = self._ckpts[i]
        if isinstance(c, (str, os.PathLike)):
            if check_only:  # mapped, on the CPU: keys and shapes without reading the tensors
                return _load_checkpoint(c, "cpu", mmap=True)
            return _load_checkpoint(c, self._map_location)
        if check_only and hasattr(c, "state_dict") and not isinstance(c, Mapping):
            return dict(c.state_dict())
        return _as_state_dict(c, self._name(i))

    def _validate(self) -> None:
        """Fail at construction, naming the checkpoint, rather than midway through a transfer."""
        ref = self._state(0, check_only=True)
        for i in range(1, len(self._ckpts)):
            _check_same_layout(ref, self._state(i, check_only=True), self._name(i), self._name(0))

    # ----------------------------------------------------------------------------- structure
    @property
    def num_checkpoints(self) -> int:
        """m + 1, the number of checkpoints."""
        return len(self._ckpts)

    @property
    def num_steps(self) -> int:
        """K = m·n, the number of transfer steps (``len(self) - 1``)."""
        return (len(self._ckpts) - 1) * self.num_splits

    def __len__(self) -> int:
        return self.num_steps + 1

    def with_splits(self, num_splits: int, schedule: Optional[str] = None) -> "Trajectory":
        """The same checkpoints split into ``num_splits`` steps per segment (shares the cache)."""
        t = copy.copy(self)  # already validated: no second pass over the files
        t.labels = list(self.labels)
        t.num_splits = int(num_splits)
        t.schedule = schedule or self.schedule
        t.lambdas = lambda_schedule(t.num_splits, t.schedule)
        return t

    def checkpoint(self, i: int) -> dict:
        """State dict of checkpoint i (loaded on first use, then cached)."""
        i = range(len(self._ckpts))[i]
        if i in self._cache:
            return self._cache[i]
        sd = self._state(i)
        if i != 0:  # checked at construction; files or dicts may have changed since
            _check_same_layout(self.checkpoint(0), sd, self._name(i), self._name(0))
        # Always keep checkpoint 0 (the origin of every displacement); evict the oldest other one.
        others = [j for j in self._cache if j != 0]
        if i != 0 and len(others) >= self._cache_size:
            del self._cache[others[0]]
        self._cache[i] = sd
        return sd

    def keys(self) -> list[str]:
        """Tensor names of the checkpoints."""
        return list(self.checkpoint(0).keys())

    def _locate(self, k: int) -> tuple[int, float]:
        """(segment end checkpoint index i ≥ 1, λ) for point k ≥ 1."""
        seg, idx = divmod(k - 1, self.num_splits)
        return seg + 1, float(self.lambdas[idx + 1])

    # ----------------------------------------------------------------------------- points
    def __getitem__(self, k: int) -> dict:
        """Point k (0 ≤ k ≤ K; negative indices count from the end) as a fresh ``name -> tensor`` dict."""
        if not isinstance(k, (int, np.integer)):
            raise TypeError(f"trajectory index must be an int, got {type(k).__name__}")
        k = range(len(self))[int(k)]  # raises IndexError when out of range
        if k == 0:
            return {n: v.clone() for n, v in self.checkpoint(0).items()}
        i, lam = self._locate(k)
        a, b = self.checkpoint(i - 1), self.checkpoint(i)
        if lam == 1.0:
            return {n: v.clone() for n, v in b.items()}
        out = {}
        for n, va in a.items():
            vb = b[n]
            out[n] = va + lam * (vb - va) if va.is_floating_point() else vb.clone()
        return out

    def __iter__(self) -> Iterator[dict]:
        for k in range(len(self)):
            yield self[k]

    def displacement(self, k: int) -> dict:
        """θᵏ − θ⁰ over the floating-point tensors, shape-for-shape."""
        p, o = self[k], self.checkpoint(0)
        return {n: p[n] - o[n] for n in p if p[n].is_floating_point()}

    def point_lambda(self, k: int) -> float:
        """Position of point k along the checkpoints: segment index + λ (0 … m)."""
        k = range(len(self))[int(k)]
        if k == 0:
            return 0.0
        i, lam = self._locate(k)
        return (i - 1) + lam

    # ----------------------------------------------------------------------------- files
    @classmethod
    def from_dir(
        cls,
        directory: Union[str, "os.PathLike[str]"],
        epochs: Union[str, Sequence[int]] = "ends",
        num_splits: int = 1,
        schedule: str = "uniform",
        *,
        map_location: Any = "cpu",
    ) -> "Trajectory":
        """A trajectory from the checkpoints a :class:`TrajectoryRecorder` wrote.

        Parameters
        ----------
        directory : path
            Folder holding ``epoch_<e>.pt`` files (one per epoch; ``epoch_01.pt`` is epoch 1).
        epochs : "ends", "all" or sequence of int
            ``"ends"``: the first and last saved epochs (a linear trajectory); ``"all"``: every saved
            epoch in order; or an explicit list of distinct epochs such as ``[-1, 9]``.
        map_location : default "cpu"
            Where the checkpoints are loaded (``torch.load``'s ``map_location``), e.g. ``"cuda"``.

        Raises
        ------
        FileNotFoundError
            If the folder has no checkpoints or a requested epoch is missing.
        ValueError
            If fewer than two distinct epochs are chosen, an epoch is requested twice, two files
            name the same epoch, or a checkpoint is unreadable or differs in keys or shapes from
            the first (the message names the file).
        """
        files = TrajectoryRecorder._epoch_files(directory)
        found = sorted(files)
        where = repr(os.fspath(directory))
        if not found:
            raise FileNotFoundError(f"no epoch_<e>.pt checkpoints in {where}")
        if epochs == "ends":
            chosen = [found[0], found[-1]]
        elif epochs == "all":
            chosen = list(found)
        elif isinstance(epochs, str):
            raise ValueError(f"epochs must be 'ends', 'all' or a list of ints, got {epochs!r}")
        else:
            chosen = [int(e) for e in epochs]
            missing = [e for e in chosen if e not in files]
            if missing:
                raise FileNotFoundError(f"no checkpoint for epochs {missing} in {where}"
                                        f" (saved: {found})")
            repeated = sorted({e for e in chosen if chosen.count(e) > 1})
            if repeated:
                raise ValueError(f"epochs {repeated} requested more than once")
        if len(set(chosen)) < 2:
            raise ValueError(f"a trajectory needs checkpoints of at least 2 distinct epochs, got "
                             f"{sorted(set(chosen))} from {where} (saved: {found})")
        return cls([files[e] for e in chosen], num_splits, schedule, labels=chosen,
                   map_location=map_location)

    def __repr__(self) -> str:
        return (f"Trajectory(checkpoints={self.labels}, num_splits={self.num_splits}, "
                f"schedule={self.schedule!r}, steps={self.num_steps})")


_EPOCH_FILE = re.compile(r"^epoch_(-?\d+)\.pt$")


class TrajectoryRecorder:
    """Save weight-only checkpoints from your own training loop and get a :class:`Trajectory`.

    Parameters
    ----------
    directory : path
        Created if missing. Files are named ``epoch_<e>.pt``.

    Examples
    --------
    >>> import tempfile, torch
    >>> model = torch.nn.Linear(2, 2)
    >>> rec = TrajectoryRecorder(tempfile.mkdtemp())
    >>> _ = rec.save(model, -1)      # the initialization
    >>> # ... train one epoch ...
    >>> _ = rec.save(model, 0)
    >>> rec.trajectory(num_splits=5).num_steps
    5
    """

    def __init__(self, directory: Union[str, "os.PathLike[str]"]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def path_for(directory: Union[str, "os.PathLike[str]"], epoch: int) -> Path:
        return Path(directory) / f"epoch_{int(epoch)}.pt"

    @staticmethod
    def _epoch_files(directory: Union[str, "os.PathLike[str]"]) -> dict[int, Path]:
        """The checkpoint file of each saved epoch; ValueError if two files name one epoch."""
        d = Path(directory)
        if not d.is_dir():
            return {}
        files: dict[int, Path] = {}
        for f in sorted(d.iterdir()):
            m = _EPOCH_FILE.match(f.name)
            if m is None:
                continue
            e = int(m.group(1))
            if e in files:
                raise ValueError(f"{os.fspath(files[e])!r} and {os.fspath(f)!r} are both "
                                 f"checkpoints of epoch {e}; keep one")
            files[e] = f
        return files

    @staticmethod
    def saved_epochs(directory: Union[str, "os.PathLike[str]"]) -> list[int]:
        """The epochs with a checkpoint in ``directory``, sorted.

        Raises ValueError if two files name the same epoch (``epoch_1.pt``, ``epoch_001.pt``).
        """
        return sorted(TrajectoryRecorder._epoch_files(directory))

    def save(self, model: Any, epoch: int) -> Path:
        """Write the weights (``state_dict``: parameters and buffers, no optimizer state).

        ``epoch = -1`` is the initialization, ``epoch = e`` the state after epoch e + 1.
        """
        import torch

        if int(epoch) < -1:
            raise ValueError(f"epoch must be >= -1 (-1 = initialization), got {epoch}")
        sd = _as_state_dict(model, "model")
        path = self.path_for(self.directory, epoch)
        tmp = path.with_suffix(".pt.tmp")
        torch.save({k: v.cpu().contiguous() for k, v in sd.items()}, tmp)
        os.replace(tmp, path)  # atomic: a reader never sees a half-written checkpoint
        return path

    @property
    def epochs(self) -> list[int]:
        """The epochs saved so far, sorted."""
        return self.saved_epochs(self.directory)

    def trajectory(
        self,
        num_splits: int = 1,
        schedule: str = "uniform",
        epochs: Union[str, Sequence[int]] = "ends",
        *,
        map_location: Any = "cpu",
    ) -> Trajectory:
        """A :class:`Trajectory` over the saved checkpoints (see :meth:`Trajectory.from_dir`)."""
        return Trajectory.from_dir(self.directory, epochs, num_splits, schedule,
                                   map_location=map_location)

