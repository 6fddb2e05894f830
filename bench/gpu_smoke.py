"""First GPU contact for bench/gpu_check.sh: a few solves checked against SciPy, with timings.

    python bench/gpu_smoke.py [--small]      (--small: tiny problems only, for compute-sanitizer)

Prints one line per case; exits non-zero on the first wrong answer.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from trajtransfer import _cuda
from trajtransfer._native import _core


def check(name: str, c: np.ndarray, maximize: bool, dtype: torch.dtype, threads: int = 0) -> None:
    t = torch.from_numpy(c).to(device="cuda", dtype=dtype)
    _cuda.solve_batch(t, maximize, block_threads=threads)  # warm-up (module load, allocator)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    idx = _cuda.solve_batch(t, maximize, block_threads=threads)
    torch.cuda.synchronize()
    gpu_ms = 1e3 * (time.perf_counter() - t0)
    cc = t.double().cpu().numpy()
    t0 = time.perf_counter()
    want = []
    for b in range(cc.shape[0]):
        r, k = linear_sum_assignment(cc[b], maximize=maximize)
        want.append(cc[b][r, k].sum())
    cpu_ms = 1e3 * (time.perf_counter() - t0)
    idx = idx.cpu().numpy()
    n = cc.shape[1]
    m = cc.shape[2]
    got = [cc[b][np.arange(n), idx[b]].sum() if n <= m else cc[b][idx[b], np.arange(m)].sum()
           for b in range(cc.shape[0])]
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    ok = np.allclose(got, want, rtol=rtol, atol=rtol * n)
    print(f"{name:26s} {str(dtype):14s} threads={threads:<5d} gpu {gpu_ms:9.2f} ms"
          f"   scipy {cpu_ms:9.2f} ms   {'OK' if ok else 'WRONG'}", flush=True)
    if not ok:
        print("  got", got[:4], "want", want[:4], flush=True)
        sys.exit(1)


def main() -> None:
    print("device:", torch.cuda.get_device_name(), "| _core.with_cuda:", _core.with_cuda,
          "| devices seen by _core:", _core.cuda.device_count(), flush=True)
    rng = np.random.default_rng(0)
    small = "--small" in sys.argv
    check("5x5", rng.random((1, 5, 5)), False, torch.float64, 32)
    check("B8 7x11 max", rng.random((8, 7, 11)), True, torch.float32, 64)
    check("B8 11x7", rng.random((8, 11, 7)), False, torch.float64, 32)
    inf = rng.random((4, 30, 40))
    inf[rng.random(inf.shape) < 0.5] = np.inf
    check("B4 30x40 half forbidden", inf, False, torch.float64, 64)
    if small:
        return
    for n in (256, 1024):
        for dt in (torch.float32, torch.float64):
            check(f"uniform {n}", rng.random((1, n, n)), False, dt)
    a = rng.standard_normal((1024, 64))
    corr = (a @ (a[rng.permutation(1024)] + 0.5 * rng.standard_normal((1024, 64))).T)[None]
    check("correlation 1024 max", corr, True, torch.float32)
    check("B64 uniform 256", rng.random((64, 256, 256)), False, torch.float32)
    check("uniform 2048", rng.random((1, 2048, 2048)), False, torch.float32)


if __name__ == "__main__":
    main()
