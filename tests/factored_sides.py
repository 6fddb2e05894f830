"""Random factored gradient pairs for the matcher tests: one side of a pair, and its dense form."""

from __future__ import annotations

import numpy as np
import torch

from trajtransfer.core.factored import Factored


def random_side(shapes, rng, rows):
    """One side of a pair: factors for every tensor of matrix layout, dense for the others."""
    out = {}
    for n, shape in shapes.items():
        if len(shape) >= 2 and all(s == 1 for s in shape[2:]):
            n_in = int(np.prod(shape[1:]))
            d = torch.from_numpy(rng.standard_normal((rows, shape[0])).astype(np.float32))
            a = torch.from_numpy(rng.standard_normal((rows, n_in)).astype(np.float32))
            out[n] = Factored(d, a, shape)
        else:
            out[n] = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    return out


def densified(params):
    """``params`` with every factored tensor as its dense product."""
    return {n: x.dense() if isinstance(x, Factored) else x for n, x in params.items()}
