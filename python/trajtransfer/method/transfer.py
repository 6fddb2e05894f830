"""Learning transfer: move a source training trajectory onto a new initialization (GMT / FGMT).

Given a source trajectory θ₁⁰ … θ₁ᴷ and a target initialization θ₂⁰, build the transferred
trajectory θ₂ˢ = θ₂⁰ + πₛ·(θ₁ˢ − θ₁⁰) (algorithm-spec.md §1, §2.4) where πₛ is found by matching
gradients of the source and the transferred network on the same minibatches:

* ``"gmt"`` (Algorithm 1): at step s, recompute all s gradient pairs at points 0 … s−1 with
  π_{s−1} and solve; K(K+1)/2 gradient pairs in all.
* ``"fgmt"`` (Algorithm 2): at step s, add only the pair at point s−1 (computed with π_{s−1}) to
  the pairs kept from earlier steps and solve; K gradient pairs in all.
* ``"naive"``: π = identity, θ₂ˢ = θ₂⁰ + (θ₁ˢ − θ₁⁰); no gradients, no matching.
* ``"oracle"``: one weight matching of the two *total* displacements, the target's actually
  trained end point minus its init against the source's (``target_final=``), used at every step.

Differences from the official code, all result-neutral unless opted in (§6):
no BN warm-up inside the gradient computation (I1: gradients are taken in train mode with batch
statistics, so it cannot matter); BN recalibration under ``no_grad`` and only when the model has
BatchNorm (I2, I3); persistent seeded samplers (I3); everything seeded (Q3); optional
``eval_every`` (I13); GMT's and FGMT's LAPs start from the previous solve's duals
(``reuse_duals``: the same optimum per assignment, only ties may break differently). Opt-ins that may change results
(§6.4): ``warm_start`` (start each solve from π_{s−1}, or from both it and the identity) and
``rtol`` (a relative convergence tolerance).
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from .bn import has_batchnorm, recalibrate_bn
from ..kit.data import ArrayDataset, DatasetSplits, Loader
from .trajectory import Trajectory
from ..kit.training import evaluate

__all__ = ["METHODS", "StepInfo", "TransferResult", "paired_gradients", "transfer"]

METHODS = ("gmt", "fgmt", "naive", "oracle")


@dataclass
class StepInfo:
    """Progress record passed to ``callback`` after every transfer step."""

    method: str
    step: int
    num_steps: int
    accuracy: Optional[float]
    best_step: int
    best_accuracy: Optional[float]
    objective: Optional[float]
    sweeps: Optional[int]
    num_gradient_pairs: int
    elapsed: float

    def line(self) -> str:
        """A compact one-line summary."""
        acc = f"acc {100 * self.accuracy:6.2f}%" if self.accuracy is not None else "acc    -   "
        best = (f"best {100 * self.best_accuracy:6.2f}%@{self.best_step}" if self.best_accuracy is not None
                else "")
        obj = f"obj {self.objective:.4e} sweeps {self.sweeps}" if self.objective is not None else ""
        return (f"[{self.method}] step {self.step:>3}/{self.num_steps}  {acc}  {best}  {obj}  "
                f"pairs {self.num_gradient_pairs}  {self.elapsed:.2f}s").replace("    ", "  ")


@dataclass
class TransferResult:
    """Outcome of :func:`transfer`.

    Attributes
    ----------
    method : str
    num_steps : int
        K.
    best_step : int
        The evaluated step s ≥ 1 with the highest validation accuracy (first one on ties); K when
        nothing was evaluated.
    best_accuracy : float or None
        Accuracy (fraction) at ``best_step``.
    best_params, final_params : dict[str, Tensor]
        Target-model state dicts at the best step and at step K: parameters plus, for models with
        BatchNorm, the recalibrated running statistics.
    eval_steps, accuracy : list[int], list[float]
        Evaluated steps (0 = the target init, then every ``eval_every`` and K) and their accuracy.
    objective : list[float or None]
        Matching objective Σ⟨g₂, π·g₁⟩ after each step's solve (index s − 1), as tracked by the
        solve (``exact_objective=False``: relative error about 1e-7); None where no solve
        happened (Naive; Oracle after step 1).
    sweeps : list[int or None]
        Coordinate-descent sweeps per solve, aligned with ``objective``.
    perms : list[dict[str, ndarray]]
        π_s for s = 1 … K (``keep_perms="all"``) or only π_K (``"final"``); identity permutations
        for Naive.
    num_gradient_pairs : int
        Gradient pairs computed: K(K+1)/2 for GMT, K for FGMT, 0 otherwise.
    num_source_gradients : int
        Source-side gradients actually computed (fewer than the pairs with GMT's
        ``cache_source``).
    num_solves : int
        Matching solves: K for GMT/FGMT (2K with ``warm_start="both"``), 1 for Oracle, 0 for Naive.
    timings : dict[str, float]
        Seconds spent in ``gradients`` (building points, forward/backward), ``matching`` (adding
        pairs and solving, wall time; ``matching_gemm`` (cost-matrix building) and
        ``matching_lap`` (assignment solves) are the matcher's own split of it, the rest being
        pair copies, objective bookkeeping and bindings), ``evaluation`` (incl. ``bn``, the
        BatchNorm recalibration), ``total`` wall time of the call and ``overhead`` =
        total − gradients − matching − evaluation. The matching share of a transfer is
        ``matching / total``.
    config : dict
        The settings used (JSON-serializable).
    """

    method: str
    num_steps: int
    best_step: int
    best_accuracy: Optional[float]
    best_params: dict
    final_params: dict
    eval_steps: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    objective: list = field(default_factory=list)
    sweeps: list = field(default_factory=list)
    perms: list = field(default_factory=list)
    num_gradient_pairs: int = 0
    num_source_gradients: int = 0
    num_solves: int = 0
    timings: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def final_accuracy(self) -> Optional[float]:
        """Accuracy at step K, if evaluated."""
        if self.eval_steps and self.eval_steps[-1] == self.num_steps:
            return self.accuracy[-1]
        return None

    @property
    def final_perms(self) -> Optional[dict]:
        return self.perms[-1] if self.perms else None

    def to_dict(self) -> dict:
        """Everything but the tensors and permutations, JSON-serializable."""
        return {
            "method": self.method, "num_steps": self.num_steps, "best_step": self.best_step,
            "best_accuracy": self.best_accuracy, "final_accuracy": self.final_accuracy,
            "eval_steps": list(self.eval_steps), "accuracy": list(self.accuracy),
            "objective": list(self.objective), "sweeps": list(self.sweeps),
            "num_gradient_pairs": self.num_gradient_pairs,
            "num_source_gradients": self.num_source_gradients, "num_solves": self.num_solves,
            "timings": dict(self.timings), "config": dict(self.config),
        }


# ----------------------------------------------------------------------------------- helpers
def _state(obj: Any, what: str) -> dict:
    import torch

    if isinstance(obj, torch.nn.Module):
        return {k: v.detach().clone() for k, v in obj.state_dict().items()}
    if isinstance(obj, Mapping):
        return {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v).detach() for k, v in obj.items()}
    raise TypeError(f"{what} must be an nn.Module or a state dict, got {type(obj).__name__}")


def _load_params(model, params: Mapping[str, Any]) -> None:
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])


def paired_gradients(target_model, source_model, batches: Sequence) -> tuple[dict, dict]:
    """Mean cross-entropy gradients of two models on the **same** minibatches (§2.3, without I1).

    Both models run in train mode (BatchNorm uses batch statistics). Gradients are averaged over
    the batches.

    Parameters
    ----------
    target_model, source_model : torch.nn.Module
    batches : sequence of (x, y)

    Returns
    -------
    (g_target, g_source) : dict[str, Tensor], dict[str, Tensor]
        One entry per trainable parameter name.

    Raises
    ------
    ValueError
        If ``batches`` is empty.
    """
    if len(batches) == 0:
        raise ValueError("paired_gradients needs at least one minibatch")
    return _mean_gradient(target_model, batches), _mean_gradient(source_model, batches)


def _mean_gradient(model, batches: Sequence) -> dict:
    """Mean over ``batches`` of the mean cross-entropy gradient, train mode."""
    import torch.nn.functional as F

    model.train()
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        F.cross_entropy(model(x), y).backward()
    out = {n: p.grad.detach().clone() / len(batches) for n, p in model.named_parameters()
           if p.requires_grad and p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def _identity(sizes: Mapping[str, int]) -> dict:
    return {p: np.arange(n, dtype=np.int64) for p, n in sizes.items()}


def _group_sizes(spec, params: Mapping[str, Any]) -> dict:
    sizes = {}
    for p, members in spec.perm_to_axes.items():
        for name, ax in members:
            if name in params:
                sizes[p] = int(params[name].shape[ax])
                break
        else:
            raise ValueError(f"permutation group {p!r} acts on no parameter of the model")
    return sizes


# ----------------------------------------------------------------------------------- transfer
def transfer(
    model,
    trajectory: Trajectory,
    target_init: Any,
    data: Union[ArrayDataset, DatasetSplits],
    method: str = "fgmt",
    steps: Optional[int] = None,
    *,
    eval_data: Optional[ArrayDataset] = None,
    spec=None,
    target_final: Any = None,
    grad_batches: int = 1,
    batch_size: int = 128,
    bn_batches: int = 10,
    bn_batch_size: Optional[int] = None,
    eval_every: int = 1,
    eval_batch_size: int = 1024,
    warm_start: Union[bool, str] = False,
    reuse_duals: bool = True,
    cache_source: bool = False,
    tol: float = 1e-7,
    rtol: Optional[float] = None,
    max_sweeps: int = 100,
    seed: int = 0,
    keep_perms: str = "all",
    verbose: bool = False,
    callback: Optional[Callable[[StepInfo], None]] = None,
) -> TransferResult:
    """Transfer ``trajectory`` (a source run) onto the initialization ``target_init``.

    Parameters
    ----------
    model : torch.nn.Module
        The architecture (not modified; deep-copied). Must provide ``permutation_spec()`` unless
        ``spec`` is given.
    trajectory : Trajectory
        Source trajectory; its point 0 is θ₁⁰. State dicts may hold buffers too: only the model's
        parameters are transferred.
    target_init : nn.Module or state dict
        θ₂⁰.
    data : ArrayDataset or DatasetSplits
        Training samples for gradients and BN recalibration. With ``DatasetSplits``, ``train`` is
        used and ``eval_data`` defaults to its ``val``.
    method : {"gmt", "fgmt", "naive", "oracle"}
    steps : int, optional
        K; defaults to ``len(trajectory) - 1``. A different K re-splits the trajectory's segments
        into K / (number of segments) steps each (same λ schedule).
    eval_data : ArrayDataset, optional
        Validation samples: accuracy at step 0 (the init), every ``eval_every`` steps and at K,
        and best-step selection. Without it nothing is evaluated and ``best_step = K``.
    spec : PermutationSpec, optional
        Defaults to ``model.permutation_spec()``.
    target_final : nn.Module or state dict
        Oracle only: the target's actually trained end point.
    grad_batches, batch_size : int
        Each gradient pair averages ``grad_batches`` minibatches of ``batch_size`` (official
        ``gm_iters`` × ``batch_size``).
    bn_batches, bn_batch_size : int
        BatchNorm recalibration before each evaluation (only if the model has BatchNorm);
        ``bn_batch_size`` defaults to ``batch_size``.
    eval_every : int ≥ 1
    warm_start : bool or "both"
        False (default, paper parity): every solve starts from the identity. True: from π_{s−1}.
        ``"both"``: solve from both and keep the larger objective (never worse than the cold start
        for the same sweep order).
    reuse_duals : bool, default True
        With an identity start, still warm-start each linear assignment from the duals of the
        matcher's previous solve (GMT keeps one matcher and replaces its pairs at each step with
        ``GradientMatcher.clear_pairs``; with False it builds a new matcher per step). The coordinate
        descent path and each LAP's optimal value are unchanged; only ties between equally good
        assignments (e.g. units with zero gradient) may be broken differently. False: cold LAPs,
        exactly the official procedure.
    cache_source : bool, default False
        GMT opt-in (§6.4): compute the source gradient at each point once, keep it with its
        minibatches, and at later steps recompute only the target side on those same minibatches.
        Halves GMT's gradient work (K source gradients instead of K(K+1)/2) but changes the
        sampling: the official GMT draws fresh minibatches for every pair. No effect on FGMT.
    tol : float
        Stopping threshold of the coordinate descent: stop after a sweep gaining
        ≤ ``tol`` × max(1, |objective|). For gradient objectives (|objective| < 1) this is the
        official absolute ``wm_epsilon`` = 1e-7.
    rtol : float, optional
        Opt-in scale-free threshold (§6.3 Q1): ``tol`` is replaced by
        ``rtol`` × B / max(1, B), B = Σ_pairs ‖g₂‖‖g₁‖ (the Cauchy–Schwarz bound on the
        objective), so the threshold is about ``rtol`` × B whatever the loss scale.
    max_sweeps : int
    seed : int
        Seeds the gradient minibatches, the BN minibatches (a separate stream) and the matcher's
        sweep order (GMT's fresh matcher per step and FGMT's persistent one both get ``seed``, so
        GMT and FGMT agree at s = 1).
    keep_perms : {"all", "final"}
    verbose : bool
        Print one progress line per step to stderr.
    callback : callable(StepInfo), optional

    Returns
    -------
    TransferResult

    Raises
    ------
    ValueError
        Unknown ``method``; ``oracle`` without ``target_final``; incompatible shapes or keys; a
        ``steps`` that does not divide into the trajectory's segments; bad option values.
    """
    import torch

    from ..core.match import GradientMatcher, match_weights
    from ..core.permute import apply_permutation

    t_start = time.perf_counter()
    method = str(method).lower()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(data, DatasetSplits):
        if eval_data is None:
            eval_data = data.val
        data = data.train
    if not isinstance(data, ArrayDataset):
        raise TypeError(f"data must be an ArrayDataset or DatasetSplits, got {type(data).__name__}")
    if not isinstance(trajectory, Trajectory):
        raise TypeError(f"trajectory must be a Trajectory, got {type(trajectory).__name__}")
    if int(eval_every) < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    if int(grad_batches) < 1:
        raise ValueError(f"grad_batches must be >= 1, got {grad_batches}")
    if warm_start not in (False, True, "both"):
        raise ValueError(f"warm_start must be False, True or 'both', got {warm_start!r}")
    if keep_perms not in ("all", "final"):
        raise ValueError(f"keep_perms must be 'all' or 'final', got {keep_perms!r}")
    if method == "oracle" and target_final is None:
        raise ValueError("method='oracle' needs target_final= (the target's trained end point)")

    segments = trajectory.num_checkpoints - 1
    if steps is not None and int(steps) != trajectory.num_steps:
        if int(steps) < 1 or int(steps) % segments:
            raise ValueError(f"steps={steps} must be a positive multiple of the trajectory's "
                             f"{segments} segment(s)")
        trajectory = trajectory.with_splits(int(steps) // segments)
    K = trajectory.num_steps
    if spec is None:
        if not hasattr(model, "permutation_spec"):
            raise ValueError("model has no permutation_spec(); pass spec=")
        spec = model.permutation_spec()

    tgt_model = copy.deepcopy(model)
    src_model = copy.deepcopy(model)
    names = [n for n, _ in model.named_parameters()]
    origin = {n: v for n, v in trajectory.checkpoint(0).items() if n in names}
    base_state = _state(target_init, "target_init")
    missing = [n for n in names if n not in origin or n not in base_state]
    if missing:
        raise ValueError(f"parameters {missing[:5]} missing from the trajectory or target_init")
    for n, p in model.named_parameters():
        for what, d in (("trajectory", origin), ("target_init", base_state)):
            if tuple(d[n].shape) != tuple(p.shape):
                raise ValueError(f"{what}[{n!r}] has shape {tuple(d[n].shape)}, model has {tuple(p.shape)}")
    base = {n: base_state[n].to(torch.float32) for n in names}
    sizes = _group_sizes(spec, base)
    identity = _identity(sizes)  # read-only: the matcher copies its init, nothing writes to it
    uses_bn = has_batchnorm(model)

    grad_loader = Loader(data, batch_size, seed=seed)
    bn_loader = Loader(data, bn_batch_size or batch_size, seed=seed + 1_000_003) if uses_bn else None
    times = {"gradients": 0.0, "matching": 0.0, "evaluation": 0.0, "matching_gemm": 0.0,
             "matching_lap": 0.0, "bn": 0.0}

    def disp(k: int) -> dict:
        point = trajectory[k]
        return {n: point[n] - origin[n] for n in names}

    def target_point(d: dict, perm: Optional[dict]) -> dict:
        moved = apply_permutation(spec, perm, d) if perm is not None else d
        return {n: base[n] + moved[n] for n in names}

    source_cache: dict = {}  # GMT with cache_source: point k -> (minibatches, source gradient)
    counts = {"source": 0}

    def gradient_pair(k: int, perm: Optional[dict]) -> tuple[dict, dict]:
        t0 = time.perf_counter()
        point = trajectory[k]
        d = {n: point[n] - origin[n] for n in names}
        _load_params(tgt_model, target_point(d, perm))
        if k in source_cache:
            batches, g_s = source_cache[k]
        else:
            batches = grad_loader.take(grad_batches)
            _load_params(src_model, point)
            g_s = _mean_gradient(src_model, batches)
            counts["source"] += 1
            if cache_source:
                source_cache[k] = (batches, g_s)
        g_t = _mean_gradient(tgt_model, batches)
        times["gradients"] += time.perf_counter() - t0
        return g_t, g_s

    def pair_bound(g_t: dict, g_s: dict) -> float:
        return float(sum(float(g_t[n].norm()) * float(g_s[n].norm()) for n in g_t))

    def solve(matcher, prev: dict, bound: float):
        # The matcher stops when a sweep gains <= tol * max(1, |objective|); rtol rescales tol by
        # the Cauchy-Schwarz bound so that the threshold follows the gradients' scale.
        eff_tol = tol if rtol is None else float(rtol) * bound / max(1.0, bound)
        starts = {False: [None], True: [prev], "both": [None, prev]}[warm_start]
        best = None
        for init in starts:
            if init is None and reuse_duals:
                # Identity start as in the official code, but each LAP starts from the duals of
                # this matcher's previous solve (FGMT keeps one matcher): same optimum, far fewer
                # augmentations. Only the choice among tied optimal assignments may differ.
                res = matcher.solve("identity", max_sweeps=max_sweeps, tol=eff_tol, warm_start=True,
                                    exact_objective=False)
            elif init is None:  # identity start, cold LAPs: the official behaviour
                res = matcher.solve(None, max_sweeps=max_sweeps, tol=eff_tol, warm_start=False,
                                    exact_objective=False)
            else:
                res = matcher.solve({p: v.copy() for p, v in init.items()}, max_sweeps=max_sweeps,
                                    tol=eff_tol, warm_start=True, exact_objective=False)
            times["matching_gemm"] += float(res.timings.get("gemm", 0.0))
            times["matching_lap"] += float(res.timings.get("lap", 0.0))
            if best is None or res.objective > best.objective:
                best = res
        return best, len(starts)

    eval_steps: list = []
    accs: list = []
    best = {"step": K, "acc": None, "state": None}

    def evaluate_point(s: int, params: dict) -> Optional[float]:
        t0 = time.perf_counter()
        _load_params(tgt_model, params)
        if uses_bn:
            t_bn = time.perf_counter()
            recalibrate_bn(tgt_model, bn_loader, bn_batches)
            times["bn"] += time.perf_counter() - t_bn
        acc = None
        if eval_data is not None:
            acc = evaluate(tgt_model, eval_data, eval_batch_size)
            eval_steps.append(s)
            accs.append(acc)
            if s >= 1 and (best["acc"] is None or acc > best["acc"]):
                best.update(step=s, acc=acc, state=_state(tgt_model, "model"))
        times["evaluation"] += time.perf_counter() - t0
        return acc

    if eval_data is not None:
        evaluate_point(0, base)

    perm: Optional[dict] = None  # π_{s-1}; None = identity
    objectives: list = []
    sweeps: list = []
    perms: list = []
    n_pairs = 0
    n_solves = 0
    matcher = None
    fgmt_bound = 0.0
    if method == "oracle":
        t0 = time.perf_counter()
        final_state = _state(target_final, "target_final")
        tgt_disp = {n: final_state[n].to(torch.float32) - base[n] for n in names}
        src_disp = disp(K)
        bound = pair_bound(tgt_disp, src_disp)
        res = match_weights(spec, tgt_disp, src_disp, max_sweeps=max_sweeps, seed=seed,
                            tol=tol if rtol is None else float(rtol) * bound / max(1.0, bound))
        times["matching_gemm"] += float(res.timings.get("gemm", 0.0))
        times["matching_lap"] += float(res.timings.get("lap", 0.0))
        perm = {p: np.asarray(v, dtype=np.int64) for p, v in res.perms.items()}
        oracle_obj, oracle_sweeps = float(res.objective), int(res.sweeps)
        n_solves = 1
        times["matching"] += time.perf_counter() - t0
    if method == "fgmt":
        matcher = GradientMatcher(spec, seed=seed)

    for s in range(1, K + 1):
        obj = sw = None
        if method in ("gmt", "fgmt"):
            if method == "gmt":
                if matcher is None or not reuse_duals:
                    matcher = GradientMatcher(spec, seed=seed)
                else:
                    # GMT recomputes every pair at each step: drop them, but keep the matcher's
                    # store memory and its LAP duals (same optima, far fewer augmentations on the
                    # nearly rank-deficient gradient cost matrices; see reuse_duals).
                    matcher.clear_pairs()
                bound = 0.0
                for k in range(s):
                    g_t, g_s = gradient_pair(k, perm)
                    t0 = time.perf_counter()
                    matcher.add(g_t, g_s)
                    if k == 0:
                        # No store regrowth copies. A kept matcher holds at most K pairs at any
                        # step: one allocation, which clear_pairs keeps (no fresh page faults).
                        matcher.reserve(K if reuse_duals else s)
                    bound += pair_bound(g_t, g_s) if rtol is not None else 0.0
                    times["matching"] += time.perf_counter() - t0
                    n_pairs += 1
            else:
                g_t, g_s = gradient_pair(s - 1, perm)
                t0 = time.perf_counter()
                matcher.add(g_t, g_s)
                if s == 1:
                    matcher.reserve(K)  # K pairs in all: no store regrowth copies
                fgmt_bound += pair_bound(g_t, g_s) if rtol is not None else 0.0
                times["matching"] += time.perf_counter() - t0
                n_pairs += 1
                bound = fgmt_bound
            t0 = time.perf_counter()
            prev = perm if perm is not None else identity
            res, used = solve(matcher, prev, bound)
            n_solves += used
            perm = {p: np.asarray(v, dtype=np.int64) for p, v in res.perms.items()}
            obj, sw = float(res.objective), int(res.sweeps)
            times["matching"] += time.perf_counter() - t0
        elif method == "oracle" and s == 1:
            obj, sw = oracle_obj, oracle_sweeps
        objectives.append(obj)
        sweeps.append(sw)
        if keep_perms == "all" or s == K:
            perms.append({p: v.copy() for p, v in (perm or _identity(sizes)).items()})

        acc = None
        if s % int(eval_every) == 0 or s == K:
            t0 = time.perf_counter()
            params = target_point(disp(s), perm)
            times["evaluation"] += time.perf_counter() - t0
            acc = evaluate_point(s, params)
        info = StepInfo(method, s, K, acc, best["step"], best["acc"], obj, sw, n_pairs,
                        time.perf_counter() - t_start)
        if verbose:
            print(info.line(), file=sys.stderr, flush=True)
        if callback is not None:
            callback(info)

    # Final point: the last evaluation (always at s = K) left θ₂ᴷ, recalibrated, in tgt_model.
    if eval_data is None:
        _load_params(tgt_model, target_point(disp(K), perm))
        if uses_bn:
            t0 = time.perf_counter()
            recalibrate_bn(tgt_model, bn_loader, bn_batches)
            times["evaluation"] += time.perf_counter() - t0
            times["bn"] += time.perf_counter() - t0
    final_state = _state(tgt_model, "model")
    if best["state"] is None:
        best.update(step=K, state=final_state)
    times["total"] = time.perf_counter() - t_start
    # Everything outside the three timed phases: argument checks, copies of the best state,
    # permutation bookkeeping, progress lines.
    times["overhead"] = times["total"] - times["gradients"] - times["matching"] - times["evaluation"]
    config = {
        "method": method, "steps": K, "num_splits": trajectory.num_splits, "schedule": trajectory.schedule,
        "grad_batches": int(grad_batches), "batch_size": int(batch_size), "bn_batches": int(bn_batches),
        "bn_batch_size": int(bn_batch_size or batch_size), "uses_batchnorm": uses_bn,
        "eval_every": int(eval_every), "warm_start": warm_start, "reuse_duals": bool(reuse_duals),
        "cache_source": bool(cache_source), "tol": tol, "rtol": rtol,
        "max_sweeps": int(max_sweeps), "seed": int(seed),
    }
    return TransferResult(
        method=method, num_steps=K, best_step=int(best["step"]), best_accuracy=best["acc"],
        best_params=best["state"], final_params=final_state, eval_steps=eval_steps, accuracy=accs,
        objective=objectives, sweeps=sweeps, perms=perms, num_gradient_pairs=n_pairs,
        num_source_gradients=counts["source"], num_solves=n_solves, timings=times, config=config,
    )
