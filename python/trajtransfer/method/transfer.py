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

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from .._devices import batch_to, default_device, state_device
from ..core.threads import current_budget, with_thread_budget
from ..kit.data import ArrayDataset, DatasetSplits, Loader
from ..kit.training import evaluate
from .bn import has_batchnorm, recalibrate_bn
from .distributed import Distributed
from .methods import METHODS as _METHOD_CLASSES
from .methods import MatchSettings, StepMatch, TransferMethod
from .pairs import GradientPairSource, SourceSide, load_params, paired_gradients
from .timer import PhaseTimer
from .trajectory import Trajectory

__all__ = ["METHODS", "StepInfo", "TransferResult", "paired_gradients", "transfer"]

#: The method names :func:`transfer` accepts (see :mod:`trajtransfer.method.methods`).
METHODS = tuple(_METHOD_CLASSES)


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
        Target-model state dicts, on the transfer's device, at the best step and at step K:
        parameters plus, for models with BatchNorm, the recalibrated running statistics.
    eval_steps, accuracy : list[int], list[float]
        Evaluated steps (0 = the target init, then every ``eval_every`` and K) and their accuracy.
    objective : list[float or None]
        Matching objective Σ⟨g₂, π·g₁⟩ after each step's solve (index s − 1), as tracked by the
        solve (``exact_objective=False``: relative error about 1e-7); None where no solve
        happened (Naive; Oracle after step 1).
    sweeps : list[int or None]
        Coordinate-descent sweeps per solve, aligned with ``objective``.
    perms : list[dict[str, Tensor]]
        π_s for s = 1 … K (``keep_perms="all"``) or only π_K (``"final"``), int64 tensors on the
        transfer's device; identity permutations for Naive.
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

    def to(self, device: Any) -> "TransferResult":
        """A copy with the parameters and permutations on ``device`` (e.g. ``"cpu"`` to pickle)."""
        import dataclasses

        def move(d: Mapping[str, Any]) -> dict:
            return {k: v.to(device) for k, v in d.items()}

        return dataclasses.replace(self, best_params=move(self.best_params),
                                   final_params=move(self.final_params),
                                   perms=[move(p) for p in self.perms])

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


def _group_sizes(spec: Any, params: Mapping[str, Any]) -> dict:
    sizes = spec.group_sizes({n: x for n, x in params.items() if n in spec.axes_to_perm})
    missing = [p for p in spec.perm_to_axes if p not in sizes]
    if missing:
        raise ValueError(f"permutation group {missing[0]!r} acts on no parameter of the model")
    return sizes


def _resolve_device(device: Any, target_init: Any, model: Any) -> Any:
    """An explicit ``device``, else the target init's, else the model's, else the default."""
    import torch

    if device is not None:
        return torch.device(device)
    for obj in (target_init, model):
        found = state_device(obj)
        if found is not None and found.type != "meta":
            return found
    return default_device()


class _Context:
    """What the methods share with the driver: the spec, the pairs, the settings, the timer."""

    def __init__(self, spec: Any, pairs: GradientPairSource, settings: MatchSettings,
                 timer: PhaseTimer, num_steps: int, target_final: Optional[dict]) -> None:
        self.spec = spec
        self.pairs = pairs
        self.settings = settings
        self.timer = timer
        self.num_steps = num_steps
        self.target_final = target_final

    def record_match_timings(self, res: Any) -> None:
        """The matcher's own split of its time: cost building and assignment solves."""
        self.timer.add("matching_gemm", float(res.timings.get("gemm", 0.0)))
        self.timer.add("matching_lap", float(res.timings.get("lap", 0.0)))


class _Evaluation:
    """Accuracy along the transfer (with BN recalibration) and the best step so far."""

    def __init__(self, pairs: GradientPairSource, eval_data: Optional[ArrayDataset],
                 bn_loader: Optional[Loader], bn_batches: int, eval_batch_size: int,
                 timer: PhaseTimer) -> None:
        self.model = pairs.target_model
        self.eval_data = eval_data
        self.bn_loader = bn_loader
        self.bn_batches = bn_batches
        self.eval_batch_size = eval_batch_size
        self.timer = timer
        self.steps: list = []
        self.accuracy: list = []
        self.best_step: Optional[int] = None
        self.best_accuracy: Optional[float] = None
        self.best_state: Optional[dict] = None

    def recalibrate(self) -> None:
        if self.bn_loader is not None and self.bn_batches > 0:
            with self.timer("bn"):
                recalibrate_bn(self.model, self.bn_loader, self.bn_batches)

    def __call__(self, s: int, params: dict) -> Optional[float]:
        """Load θ₂ˢ, recalibrate BN, evaluate; keeps the best step s ≥ 1 (first on ties)."""
        with self.timer("evaluation"):
            load_params(self.model, params)
            self.recalibrate()
            if self.eval_data is None:
                return None
            acc = evaluate(self.model, self.eval_data, self.eval_batch_size)
            self.steps.append(s)
            self.accuracy.append(acc)
            if s >= 1 and (self.best_accuracy is None or acc > self.best_accuracy):
                self.best_step, self.best_accuracy = s, acc
                self.best_state = _state(self.model, "model")
            return acc


# ----------------------------------------------------------------------------------- transfer
@with_thread_budget
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
    match_init: str = "identity",
    reuse_duals: bool = True,
    cache_source: bool = False,
    tol: float = 1e-7,
    rtol: Optional[float] = None,
    max_sweeps: int = 100,
    seed: int = 0,
    keep_perms: str = "all",
    device: Any = None,
    backend: str = "auto",
    num_threads: Optional[int] = None,
    factored_pairs: bool = True,
    distributed: Any = None,
    verbose: bool = False,
    callback: Optional[Callable[[StepInfo], None]] = None,
) -> TransferResult:
    """Transfer ``trajectory`` (a source run) onto the initialization ``target_init``.

    Parameters
    ----------
    model : torch.nn.Module
        The architecture (not modified; deep-copied onto the device). Must provide
        ``permutation_spec()`` unless ``spec`` is given.
    trajectory : Trajectory
        Source trajectory; its point 0 is θ₁⁰. State dicts may hold buffers too: only the model's
        parameters are transferred. Points are moved to the device as they are used.
    target_init : nn.Module or state dict
        θ₂⁰.
    data : ArrayDataset or DatasetSplits
        Training samples for gradients and BN recalibration, wherever they are kept: each
        minibatch goes to the device as it is drawn (through pinned memory for a GPU). With
        ``DatasetSplits``, ``train`` is used and ``eval_data`` defaults to its ``val``.
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
        BatchNorm recalibration before each evaluation (only if the model has BatchNorm):
        running statistics re-estimated on ``bn_batches`` minibatches of ``bn_batch_size``
        (default ``batch_size``). 0 turns it off: the model keeps the running statistics of
        ``model`` as passed.
    eval_every : int ≥ 1
    warm_start : bool or "both"
        False (default, paper parity): every solve starts from the identity. True: from π_{s−1}.
        ``"both"``: solve from both and keep the larger objective (never worse than the cold start
        for the same sweep order).
    match_init : {"identity", "greedy"}
        The start that ``warm_start`` calls the identity start: ``"identity"`` (the official
        code) or ``"greedy"`` (one pass over the groups in spec order, each an exact assignment
        given the groups already placed; see :func:`~trajtransfer.core.match.match_weights`).
        Oracle's weight matching starts from it too.
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
        ≤ ``tol`` × max(1, ``|objective|``). For gradient objectives (``|objective| < 1``) this is the
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
    device : torch.device or str, optional
        Where the models, gradients, matching and evaluation run. Default: the device of
        ``target_init`` (a module's parameters or a state dict's tensors), else of ``model``.
    backend : {"auto", "native", "torch"}
        The matcher's path (:class:`~trajtransfer.core.match.GradientMatcher`): ``"auto"``
        follows the device (native core on the CPU, torch ops on a GPU); ``"torch"`` forces the
        device path on the CPU.
    num_threads : int, optional
        CPU threads for torch's pool and the matcher during the call (the thread budget of
        :mod:`trajtransfer.core.threads`). Default: ``TRAJTRANSFER_NUM_THREADS``, else the cores
        not busy with other work, at most ``torch.get_num_threads()``. Both settings are restored
        afterwards.
    factored_pairs : bool, default True
        GMT/FGMT: capture the weight gradients of Linear layers and pointwise (1×1, stride 1)
        convolutions as their low-rank factors ``Δᵀ A`` (hooks on the same backward passes)
        and match them as :class:`~trajtransfer.core.factored.Factored` pairs: the matcher keeps
        a tensor's factors when ``rows · (n_in + n_out) < n_in · n_out`` (rows = samples per
        pair × spatial positions) and builds its cost terms from them; other tensors (biases,
        BatchNorm, larger kernels, small layers) stay dense. The same permutations up to
        float32 rounding, with 3–4× less cost-building work and pair memory on wide MLPs
        (docs/dev/factored-pairs.md). On the CPU the native core keeps the factors (with
        ``backend="torch"``, the device path does). False: dense gradients only.
    distributed : True, torch.distributed.ProcessGroup or Distributed, optional
        Data-parallel gradient pairs over an initialised process group (True: the default one;
        any backend, e.g. gloo on CPUs, NCCL with one GPU per rank): every rank calls
        ``transfer`` with the same arguments and data, computes its shard of each minibatch, the
        pairs are combined over the ranks, every rank matches, and π is broadcast from rank 0;
        all ranks return the same result. ``timings`` gains ``communication``
        (:mod:`~trajtransfer.method.distributed`).
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

    Examples
    --------
    A source trained for one epoch on random data, its trajectory cut into 4 steps, moved onto
    another init by FGMT (one gradient pair per step):

    >>> import torch
    >>> from trajtransfer import MLP, Trajectory, train
    >>> from trajtransfer.kit.data import ArrayDataset
    >>> _ = torch.manual_seed(0)
    >>> data = ArrayDataset(torch.randn(256, 8), torch.randint(0, 3, (256,)), 3)
    >>> source = MLP(8, (16,), 3)
    >>> start = {k: v.clone() for k, v in source.state_dict().items()}
    >>> _ = train(source, data, epochs=1, batch_size=32)
    >>> res = transfer(MLP(8, (16,), 3), Trajectory([start, source.state_dict()], num_splits=4),
    ...                MLP(8, (16,), 3), data, method="fgmt", eval_data=data)
    >>> res.num_steps, res.num_gradient_pairs, len(res.perms)
    (4, 4, 4)
    >>> sorted(res.perms[-1]["c1"].tolist()) == list(range(16))
    True
    """
    setup = _setup(model, trajectory, data, method, steps, target_init, eval_data=eval_data, spec=spec,
                   grad_batches=grad_batches, batch_size=batch_size, bn_batches=bn_batches,
                   bn_batch_size=bn_batch_size, eval_every=eval_every, eval_batch_size=eval_batch_size,
                   warm_start=warm_start, match_init=match_init, reuse_duals=reuse_duals,
                   cache_source=cache_source, tol=tol, rtol=rtol, max_sweeps=max_sweeps, seed=seed,
                   keep_perms=keep_perms, device=device, backend=backend, factored_pairs=factored_pairs)
    dp = Distributed.resolve(distributed)
    if dp is not None:
        check_ranks_agree(dp, setup, _state(target_init, "target_init"))
        setup.distributed = dp
        setup.config["world_size"] = dp.world_size
    member = _Member(setup, setup.new_source(1), 0, target_init, target_final)
    member.start()
    for s in range(1, setup.num_steps + 1):
        info = member.step(s)
        if verbose:
            print(info.line(), file=sys.stderr, flush=True)
        if callback is not None:
            callback(info)
    return member.finish()


@dataclass
class _Setup:
    """A transfer's checked options, shared by every target of the same source trajectory."""

    model: Any
    method: str
    method_cls: "type[TransferMethod]"
    data: ArrayDataset
    eval_data: Optional[ArrayDataset]
    trajectory: Trajectory
    spec: Any
    settings: MatchSettings
    device: Any
    grad_batches: int
    batch_size: int
    bn_batches: int
    bn_batch_size: int
    eval_every: int
    eval_batch_size: int
    cache_source: bool
    seed: int
    keep_perms: str
    factored: bool
    config: dict
    distributed: Optional[Distributed] = None

    @property
    def num_steps(self) -> int:
        return self.trajectory.num_steps

    def new_source(self, consumers: int) -> SourceSide:
        """The source side of the pairs, for ``consumers`` targets."""
        return SourceSide(self.model, self.trajectory, Loader(self.data, self.batch_size, seed=self.seed),
                          self.grad_batches, self.cache_source, self.device,
                          factored=self.factored and self.method_cls.takes_factored_pairs,
                          consumers=consumers, distributed=self.distributed)


def check_ranks_agree(dp: Distributed, setup: _Setup, target_init: Any) -> None:
    """Refuse, on every rank, ranks given different options, data or inits: they would compute
    other pairs, or a different number of collectives and hang."""
    dp.check_same(method=setup.method, steps=setup.num_steps, seed=setup.seed, settings=setup.settings,
                  batch_size=setup.batch_size, grad_batches=setup.grad_batches,
                  cache_source=setup.cache_source, factored_pairs=setup.factored,
                  data=(setup.data.x, setup.data.y), target_init=target_init,
                  trajectory=(setup.trajectory.checkpoint(0),
                              setup.trajectory.checkpoint(setup.trajectory.num_checkpoints - 1)))


def _setup(model: Any, trajectory: Any, data: Any, method: Any, steps: Optional[int], target_init: Any, *,
           eval_data: Optional[ArrayDataset], spec: Any, grad_batches: int, batch_size: int,
           bn_batches: int, bn_batch_size: Optional[int], eval_every: int, eval_batch_size: int,
           warm_start: Union[bool, str], match_init: str, reuse_duals: bool, cache_source: bool,
           tol: float, rtol: Optional[float], max_sweeps: int, seed: int, keep_perms: str,
           device: Any, backend: str, factored_pairs: bool) -> _Setup:
    """Check :func:`transfer`'s options (``target_init`` only places the device)."""
    method = str(method).lower()
    if method not in _METHOD_CLASSES:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    method_cls = _METHOD_CLASSES[method]
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
    if int(bn_batches) < 0:
        raise ValueError(f"bn_batches must be >= 0 (0: no BatchNorm recalibration), got {bn_batches}")
    if warm_start not in (False, True, "both"):
        raise ValueError(f"warm_start must be False, True or 'both', got {warm_start!r}")
    if match_init not in ("identity", "greedy"):
        raise ValueError(f"match_init must be 'identity' or 'greedy', got {match_init!r}")
    if keep_perms not in ("all", "final"):
        raise ValueError(f"keep_perms must be 'all' or 'final', got {keep_perms!r}")
    settings = MatchSettings(warm_start=warm_start, init=match_init, reuse_duals=bool(reuse_duals), tol=tol,
                             rtol=rtol, max_sweeps=int(max_sweeps), seed=int(seed), backend=backend)

    segments = trajectory.num_checkpoints - 1
    if steps is not None and int(steps) != trajectory.num_steps:
        if int(steps) < 1 or int(steps) % segments:
            raise ValueError(f"steps={steps} must be a positive multiple of the trajectory's "
                             f"{segments} segment(s)")
        trajectory = trajectory.with_splits(int(steps) // segments)
    if spec is None:
        if not hasattr(model, "permutation_spec"):
            raise ValueError("model has no permutation_spec(); pass spec=")
        spec = model.permutation_spec()
    dev = _resolve_device(device, target_init, model)
    config = {
        "method": method, "steps": trajectory.num_steps, "num_splits": trajectory.num_splits,
        "schedule": trajectory.schedule, "grad_batches": int(grad_batches), "batch_size": int(batch_size),
        "bn_batches": int(bn_batches), "bn_batch_size": int(bn_batch_size or batch_size),
        "uses_batchnorm": has_batchnorm(model), "eval_every": int(eval_every), "warm_start": warm_start,
        "match_init": match_init, "reuse_duals": bool(reuse_duals), "cache_source": bool(cache_source),
        "tol": tol, "rtol": rtol, "max_sweeps": int(max_sweeps), "seed": int(seed), "device": str(dev),
        "backend": backend, "factored_pairs": bool(factored_pairs), "world_size": 1,
    }
    return _Setup(model, method, method_cls, data, eval_data, trajectory, spec, settings, dev,
                  int(grad_batches), int(batch_size), int(bn_batches), int(bn_batch_size or batch_size),
                  int(eval_every), eval_batch_size, bool(cache_source), int(seed), keep_perms,
                  bool(factored_pairs), config)


class _Member:
    """One target's transfer: its init, its method's state, its evaluation, its records.

    The driver (:func:`transfer`, or :func:`~.transfer_many.transfer_many` for several targets
    of one source) calls :meth:`start`, then :meth:`step` for s = 1 … K, then :meth:`finish`.
    """

    def __init__(self, setup: _Setup, source: SourceSide, consumer: int, target_init: Any,
                 target_final: Any) -> None:
        import torch

        model, dev = setup.model, setup.device
        if setup.method_cls.needs_target_final and target_final is None:
            raise ValueError(f"method={setup.method!r} needs target_final= (the target's trained end point)")
        self.setup = setup
        self.timer = PhaseTimer(dev, ("gradients", "matching", "evaluation", "matching_gemm",
                                      "matching_lap", "bn"))
        names = [n for n, _ in model.named_parameters()]
        origin = setup.trajectory.checkpoint(0)
        base_state = _state(target_init, "target_init")
        missing = [n for n in names if n not in origin or n not in base_state]
        if missing:
            raise ValueError(f"parameters {missing[:5]} missing from the trajectory or target_init")
        for n, p in model.named_parameters():
            for what, d in (("trajectory", origin), ("target_init", base_state)):
                if tuple(d[n].shape) != tuple(p.shape):
                    raise ValueError(f"{what}[{n!r}] has shape {tuple(d[n].shape)}, model has {tuple(p.shape)}")
        self.base = {n: batch_to(base_state[n], dev).to(torch.float32) for n in names}
        sizes = _group_sizes(setup.spec, self.base)
        final = None
        if setup.method_cls.needs_target_final:
            final_state = _state(target_final, "target_final")
            final = {n: batch_to(final_state[n], dev).to(torch.float32) for n in names}

        self.pairs = GradientPairSource(model, source, self.base, setup.spec, consumer)
        bn_loader = (Loader(setup.data, setup.bn_batch_size, seed=setup.seed + 1_000_003)
                     if setup.config["uses_batchnorm"] else None)
        self.evaluation = _Evaluation(self.pairs, setup.eval_data, bn_loader, setup.bn_batches,
                                      setup.eval_batch_size, self.timer)
        self.runner: TransferMethod = setup.method_cls(
            _Context(setup.spec, self.pairs, setup.settings, self.timer, setup.num_steps, final))
        # An inner group's identity is arange(d) in each of its H rows (block specs).
        self.identity = {p: torch.arange(n, dtype=torch.int64, device=dev).expand(setup.spec.perm_shape(p, sizes))
                         for p, n in sizes.items()}
        self.perm: Optional[dict] = None  # π_{s-1}; None = identity
        self.objectives: list = []
        self.sweeps: list = []
        self.perms: list = []

    def start(self) -> None:
        if self.setup.eval_data is not None:
            self.evaluation(0, self.base)
        self.runner.start()

    def step(self, s: int) -> StepInfo:
        """Transfer step s: π_s, and θ₂ˢ evaluated when it is an evaluation step."""
        setup, timer, pairs, evaluation = self.setup, self.timer, self.pairs, self.evaluation
        K = setup.num_steps
        match: StepMatch = self.runner.step(s, self.perm)
        dp = setup.distributed
        self.perm = match.perm if dp is None else dp.broadcast(match.perm)
        self.objectives.append(match.objective)
        self.sweeps.append(match.sweeps)
        if setup.keep_perms == "all" or s == K:
            self.perms.append(_perm_tensors(self.perm or self.identity, setup.device))
        acc = None
        if s % setup.eval_every == 0 or s == K:
            with timer("evaluation"):
                params = pairs.target_point(pairs.displacement(s), self.perm)
            acc = evaluation(s, params)
        return StepInfo(setup.method, s, K, acc, evaluation.best_step or K, evaluation.best_accuracy,
                        match.objective, match.sweeps, self.runner.num_gradient_pairs, timer.elapsed())

    def finish(self) -> TransferResult:
        setup, timer, pairs, evaluation = self.setup, self.timer, self.pairs, self.evaluation
        K = setup.num_steps
        # Final point: the last evaluation (always at s = K) left θ₂ᴷ, recalibrated, in the model.
        if setup.eval_data is None:
            with timer("evaluation"):
                load_params(pairs.target_model, pairs.target_point(pairs.displacement(K), self.perm))
                evaluation.recalibrate()
        final_state = _state(pairs.target_model, "model")
        best_state = evaluation.best_state if evaluation.best_state is not None else final_state
        times = dict(timer.seconds)
        times["total"] = timer.elapsed()
        if setup.distributed is not None:
            setup.distributed.split_timings(times)
        # Everything outside the timed phases: argument checks, copies of the best state,
        # permutation bookkeeping, progress lines.
        times["overhead"] = times["total"] - times["gradients"] - times["matching"] - times["evaluation"] \
            - times.get("communication", 0.0)
        config = dict(setup.config, num_threads=current_budget())
        return TransferResult(
            method=setup.method, num_steps=K, best_step=int(evaluation.best_step or K),
            best_accuracy=evaluation.best_accuracy, best_params=best_state, final_params=final_state,
            eval_steps=evaluation.steps, accuracy=evaluation.accuracy, objective=self.objectives,
            sweeps=self.sweeps, perms=self.perms, num_gradient_pairs=self.runner.num_gradient_pairs,
            num_source_gradients=pairs.num_source_gradients, num_solves=self.runner.num_solves,
            timings=times, config=config,
        )


def _perm_tensors(perm: Mapping[str, Any], device: Any) -> dict:
    """A copy of π as int64 tensors on the transfer's device."""
    import torch

    return {g: torch.as_tensor(np.asarray(p) if not isinstance(p, torch.Tensor) else p,
                               dtype=torch.int64).to(device).clone() for g, p in perm.items()}
