"""Matching with attention heads (block-structured groups) on the reference ViT.

Problems (PyTorch default init, seeded; planted so that every answer is known):

* ``vit_weights``: weight matching of a ViT (patch 7, width 64, 4 heads, 2 blocks) against a
  randomly permuted copy of itself (every group: residual stream, heads, per-head q/k and v
  dimensions, MLP units) with 1e-3 relative noise;
* ``vit_k30``: gradient matching, K = 30 pairs: the gradients of the ViT on 30 random minibatches
  (cross-entropy) against the same gradients permuted, FGMT-style.

Both take the block path (the torch descent on CPU tensors; the native core does not know block
groups) from the identity start, and must return the planted permutation exactly.

Run::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python -m pytest \\
        bench/test_bench_match_attention.py --benchmark-json=bench/results/match_attention.json
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")

from trajtransfer.core.match import match_gradients  # noqa: E402
from trajtransfer.core.permute import (  # noqa: E402
    apply_permutation,
    invert_permutation,
    random_permutation,
)
from trajtransfer.kit.models import ViT  # noqa: E402


def _problem(k: int) -> tuple:
    torch.manual_seed(0)
    model = ViT()
    spec = model.permutation_spec()
    state = {n: v.detach().clone() for n, v in model.state_dict().items()}
    pi = random_permutation(spec, state, seed=1)
    gen = torch.Generator().manual_seed(2)
    if k == 0:
        noisy = {n: v + 1e-3 * v.std() * torch.randn(v.shape, generator=gen)
                 for n, v in apply_permutation(spec, pi, state).items()}
        return spec, [(state, noisy)], invert_permutation(pi, spec)
    pairs = []
    for _ in range(k):
        x = torch.randn(32, 784, generator=gen)
        y = torch.randint(0, 10, (32,), generator=gen)
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        g = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        pairs.append((g, apply_permutation(spec, pi, g)))
    return spec, pairs, invert_permutation(pi, spec)


@pytest.mark.parametrize("name, k", [("vit_weights", 0), ("vit_k30", 30)])
def test_match_attention(benchmark, name, k):
    spec, pairs, want = _problem(k)
    res = benchmark.pedantic(lambda: match_gradients(spec, pairs, init="identity"), rounds=3,
                             iterations=1)
    for g in spec.groups:
        assert torch.equal(torch.as_tensor(res.perms[g]), torch.as_tensor(want[g])), (name, g)
    benchmark.extra_info.update(sweeps=res.sweeps, gemm_s=res.timings["gemm"],
                                lap_s=res.timings["lap"], groups=len(spec.groups))
