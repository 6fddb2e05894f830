"""trajtransfer: learning transfer through permutation symmetry, on a fast native core.

Three layers, each usable on its own:

* :func:`linear_sum_assignment` (a faster drop-in for SciPy's), :func:`linear_sum_assignment_batch`
  and :func:`lap_solve` (duals + warm starts);
* permutation matching with Git Re-Basin specs: :func:`match_weights`, :func:`match_gradients`,
  :class:`GradientMatcher`, :func:`apply_permutation`, :func:`spec_from_model`;
* learning transfer (Chijiwa, ICLR 2024): :func:`transfer` with GMT, FGMT, Naive and Oracle,
  :class:`Trajectory`, :class:`TrajectoryRecorder`.

Only numpy is needed for the first two layers with numpy inputs; torch is imported lazily by the
names that need it.

>>> import numpy as np
>>> import trajtransfer as tt
>>> row, col = tt.linear_sum_assignment(np.array([[1.0, 2.0], [2.0, 1.0]]))
>>> col.tolist()
[0, 1]
"""

from __future__ import annotations

import importlib
from typing import Any

from . import _moved
from ._native import _core
from .core.factored import Factored
from .core.lap import LapSolution, lap_solve, linear_sum_assignment, linear_sum_assignment_batch
from .core.match import GradientMatcher, MatchResult, match_gradients, match_weights, set_num_threads
from .core.permute import (
    apply_inverse_permutation,
    apply_permutation,
    compose_permutations,
    identity_permutation,
    invert_permutation,
    permute_model,
    random_permutation,
)
from .core.spec import (
    Blocks,
    Concat,
    PermutationSpec,
    conv_spec,
    mlp_spec,
    permutation_spec_from_axes_to_perm,
    resnet_spec,
    transformer_spec,
    validate_spec,
    vit_spec,
)
from .core.threads import set_process_default as _set_thread_default
from .core.threads import thread_budget

__version__: str = _core.__version__
_moved.install()
_set_thread_default()

# Names whose modules import torch (or scikit-learn/matplotlib) at use: loaded on first access.
_LAZY = {
    "spec_from_model": "core.spec_fx",
    "MLP": "kit.models",
    "Conv8": "kit.models",
    "ResNet18": "kit.models",
    "ViT": "kit.models",
    "Trajectory": "method.trajectory",
    "TrajectoryRecorder": "method.trajectory",
    "lambda_schedule": "method.trajectory",
    "transfer": "method.transfer",
    "TransferResult": "method.transfer",
    "StepInfo": "method.transfer",
    "paired_gradients": "method.pairs",
    "METHODS": "method.transfer",
    "preset": "kit.presets",
    "list_presets": "kit.presets",
    "TransferPreset": "kit.presets",
    "recalibrate_bn": "method.bn",
    "reset_bn_stats": "method.bn",
    "has_batchnorm": "method.bn",
    "load_dataset": "kit.data",
    "load_digits_data": "kit.data",
    "load_fashion_mnist": "kit.data",
    "load_mnist": "kit.data",
    "load_cifar10": "kit.data",
    "train": "kit.training",
    "TrainConfig": "kit.training",
    "evaluate": "kit.training",
}

__all__ = [
    "__version__",
    # linear assignment
    "LapSolution",
    "lap_solve",
    "linear_sum_assignment",
    "linear_sum_assignment_batch",
    # specs and permutations
    "PermutationSpec",
    "permutation_spec_from_axes_to_perm",
    "validate_spec",
    "mlp_spec",
    "conv_spec",
    "resnet_spec",
    "transformer_spec",
    "vit_spec",
    "Blocks",
    "Concat",
    "apply_permutation",
    "apply_inverse_permutation",
    "invert_permutation",
    "compose_permutations",
    "random_permutation",
    "identity_permutation",
    "permute_model",
    # matching
    "MatchResult",
    "match_weights",
    "match_gradients",
    "GradientMatcher",
    "Factored",
    "set_num_threads",
    "thread_budget",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trajtransfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)
