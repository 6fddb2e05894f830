"""PNG plots of transfer results (matplotlib's Agg canvas; the global backend is left alone)."""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Union

from ._extras import require

__all__ = ["plot_transfer_curves", "plot_finetune_curves", "plot_lmc_curves", "plot_ensemble_curves",
           "require_matplotlib"]

_COLORS = {"oracle": "tab:green", "naive": "tab:gray", "gmt": "tab:blue", "fgmt": "tab:red",
           "target": "black", "source": "tab:purple", "scratch": "black", "direct": "tab:orange"}


def require_matplotlib() -> None:
    """Raise :class:`~trajtransfer.kit._extras.MissingExtraError` (an ImportError) naming
    ``pip install "trajtransfer[plot]"`` when matplotlib is missing: callers check before long work."""
    require("matplotlib", distribution="matplotlib", extra="plot", purpose="plotting")


def _figure(figsize=(6.4, 4.2)):
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _curve(res) -> tuple:
    if isinstance(res, Mapping):
        return list(res["eval_steps"]), list(res["accuracy"]), res.get("best_step")
    return list(res.eval_steps), list(res.accuracy), res.best_step


def _finish(fig, ax, path, title: str) -> str:
    """Shared styling of the accuracy figures, then save to ``path`` (folders created)."""
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _save(fig, path) -> str:
    """Lay out and write the figure (folders created); returns the path."""
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return os.fspath(path)


def plot_transfer_curves(
    results: Mapping[str, object],
    path: Union[str, "os.PathLike[str]"],
    *,
    title: str = "",
    reference: Optional[Mapping[str, float]] = None,
) -> str:
    """Validation accuracy (%) of the transferred parameters along the trajectory, one line per method.

    Parameters
    ----------
    results : mapping method -> TransferResult or its ``to_dict()``
    path : path of the PNG to write (folders are created)
    title : str
    reference : mapping label -> accuracy (fraction), optional
        Horizontal lines, e.g. ``{"target trained": 0.97}``.

    Returns
    -------
    str
        The path written.
    """
    fig, ax = _figure()
    for name, res in results.items():
        steps, acc, best = _curve(res)
        color = _COLORS.get(name.lower())
        label = "source (own trajectory)" if name == "source" else name.upper() if len(name) <= 6 else name
        ax.plot(steps, [100 * a for a in acc], marker="o", ms=3, label=label, color=color,
                ls=":" if name == "source" else "-")
        if best in steps:
            ax.plot([best], [100 * acc[steps.index(best)]], marker="*", ms=11, color=color, ls="none")
    for label, value in (reference or {}).items():
        ax.axhline(100 * value, ls="--", lw=1, color=_COLORS.get(label.split()[0].lower(), "black"),
                   label=f"{label} ({100 * value:.1f}%)")
    ax.set_xlabel("transfer step s")
    return _finish(fig, ax, path, title)


def plot_finetune_curves(
    curves: Mapping[str, Sequence[float]],
    path: Union[str, "os.PathLike[str]"],
    *,
    title: str = "",
) -> str:
    """Accuracy (%) per fine-tuning epoch (index 0 = before training), one line per start point."""
    fig, ax = _figure()
    from matplotlib.ticker import MaxNLocator

    for name, acc in curves.items():
        ax.plot(range(len(acc)), [100 * a for a in acc], marker="o", ms=3,
                label="from scratch (target init)" if name == "scratch" else f"from {name.upper()} best step",
                color=_COLORS.get(name.split()[0].lower()), ls="--" if name == "scratch" else "-")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epochs of training")
    return _finish(fig, ax, path, title)


def plot_lmc_curves(
    curves: Mapping[str, object],
    path: Union[str, "os.PathLike[str]"],
    *,
    title: str = "",
    label_a: str = "α = 0",
    label_b: str = "α = 1",
) -> str:
    """Linear-mode-connectivity curves: accuracy (left) and loss (right) against α, one line each.

    Parameters
    ----------
    curves : mapping label -> LMCResult or its ``to_dict()``
        E.g. ``{"fgmt": ..., "naive": ...}``, each from the same ``params_a``; the legend shows
        each curve's loss barrier.
    path : path of the PNG to write (folders are created)
    title : str
    label_a, label_b : str
        What the ends of the α axis are (e.g. ``"target fine-tuned"``, ``"transferred"``).

    Returns
    -------
    str
        The path written.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.6, 4.0), dpi=110)
    FigureCanvasAgg(fig)
    ax_acc, ax_loss = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, res in curves.items():
        d = res if isinstance(res, Mapping) else res.to_dict()  # type: ignore[attr-defined]
        color = _COLORS.get(name.split()[0].lower())
        label = f"{name.upper() if len(name) <= 6 else name} (barrier {d['barrier']:.3f})"
        ax_acc.plot(d["alphas"], [100 * a for a in d["accuracy"]], marker="o", ms=3, color=color, label=label)
        ax_loss.plot(d["alphas"], d["loss"], marker="o", ms=3, color=color, label=label)
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel(f"α   ({label_a} → {label_b})")
        ax.grid(alpha=0.3)
    ax_acc.set_ylabel("validation accuracy (%)")
    ax_loss.set_ylabel("validation loss (cross-entropy)")
    ax_loss.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_ensemble_curves(
    result,
    path: Union[str, "os.PathLike[str]"],
    *,
    title: str = "",
    reference: Optional[Mapping[str, float]] = None,
) -> str:
    """Accuracy (%) of each member and of the ensemble along the transfer steps.

    Parameters
    ----------
    result : EnsembleResult or its ``to_dict()``
        From :func:`~trajtransfer.method.transfer_many.transfer_many` with ``eval_data``.
    path : path of the PNG to write (folders are created)
    title : str
    reference : mapping label -> accuracy (fraction), optional
        Horizontal lines, e.g. ``{"target trained": 0.87}``.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    ValueError
        If nothing was evaluated (no ``eval_data``).
    """
    d = result if isinstance(result, Mapping) else result.to_dict()
    steps, ensemble = list(d["eval_steps"]), list(d["accuracy"])
    if not steps:
        raise ValueError("plot_ensemble_curves: the ensemble was not evaluated (run transfer_many "
                         "with eval_data=)")
    fig, ax = _figure()
    for i, member in enumerate(d["members"]):
        ax.plot(member["eval_steps"], [100 * a for a in member["accuracy"]], lw=1, alpha=0.6,
                color="tab:blue", label="members" if i == 0 else None)
    method = d["members"][0]["method"].upper() if d["members"] else ""
    ax.plot(steps, [100 * a for a in ensemble], marker="o", ms=3, lw=2, color="tab:red",
            label=f"ensemble of {len(d['members'])} (mean probabilities)")
    for label, value in (reference or {}).items():
        ax.axhline(100 * value, ls="--", lw=1, color="black", label=f"{label} ({100 * value:.1f}%)")
    ax.set_xlabel(f"transfer step s ({method})")
    return _finish(fig, ax, path, title)
