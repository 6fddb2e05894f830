"""Transfer benchmarks: GMT and FGMT end to end, ours against the reference-style loop.

The reference-style loop (:mod:`reference_transfer`) is transfer()'s own step loop with its
matching done by the textbook baseline (torch GEMMs on the tensors' device + SciPy per group,
identity start). Ours runs the same loop with the library's matcher and transfer()'s defaults,
so with factored pairs wherever a layer's factors pay: on the CPU the native core keeps them;
on a GPU the device path (torch ops, LAP on the host or, in a CUDA build, on the GPU); and, on
the CPU, the device path forced with ``backend="torch"`` so that its overhead is known. Dense
against factored: ``test_bench_factored.py``.

Cases (random inputs and labels, a source trained for one epoch on them):

* CPU: ``mlp``, MLP 784-512-512-10, T = 10, pairs of one minibatch of 128;
* GPU (``TRAJTRANSFER_BENCH_DEVICE=cuda``): ``conv8``, Conv8 on 32x32x3 inputs (CIFAR-10
  sized), T = 30, pairs of one minibatch of 128 (the paper's setting).

Check: at step 1 both loops match the same pairs (same minibatches, target at θ₂⁰), and our
objective there must reach the baseline's. Timing splits (gradients, matching, its cost-building
and LAP parts) go into ``extra_info``; a summary is printed and written to
``bench/results/transfer_summary[_DEVICE].json``.

Run::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python python -m pytest \\
        bench/test_bench_transfer.py -s --benchmark-json=bench/results/transfer.json
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")

from baseline import objective  # noqa: E402  (bench/ is on sys.path)
from reference_transfer import BaselineMatcher, reference_methods  # noqa: E402
from transfer_problem import random_transfer_problem, timing_info  # noqa: E402

from trajtransfer.kit.models import MLP, Conv8  # noqa: E402
from trajtransfer.method.transfer import transfer  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
DEVICE = torch.device(os.environ.get("TRAJTRANSFER_BENCH_DEVICE", "cpu"))
_runs: dict = {}


def _case():
    if DEVICE.type == "cuda":
        return "conv8", (lambda: Conv8()), (3, 32, 32), 30
    return "mlp", (lambda: MLP(784, (512, 512), 10)), (784,), 10


@pytest.fixture(scope="module")
def setup():
    name, make, shape, steps = _case()
    data, traj, target_init = random_transfer_problem(make, shape, steps, DEVICE)
    return name, make, data, traj, target_init


# (label, method prefix, transfer backend); the forced device path only where it is not the default
IMPLS = [("reference", "reference-", "auto"), ("ours", "", "auto")]
if DEVICE.type == "cpu":
    IMPLS.append(("ours-torch-path", "", "torch"))


@pytest.mark.parametrize("impl", [i[0] for i in IMPLS])
@pytest.mark.parametrize("method", ["fgmt", "gmt"])
def test_bench_transfer(benchmark, setup, method, impl):
    name, make, data, traj, target_init = setup
    if impl == "reference" and method == "gmt" and DEVICE.type == "cuda":
        pytest.skip("the reference GMT at T = 30 (465 pairs, SciPy per visit) takes minutes: "
                    "the GPU comparison is FGMT's")
    label, prefix, backend = next(i for i in IMPLS if i[0] == impl)
    benchmark.group = f"transfer-{name}-{method}-{DEVICE.type}"
    benchmark.name = f"{impl}[{name}-{method}]"
    first_solve: dict = {}
    real_solve = BaselineMatcher.solve

    def recording_solve(self, *a, **kw):  # the check: keep step 1's pairs and answer
        res = real_solve(self, *a, **kw)
        first_solve.setdefault("pairs", list(zip(self.pairs, self.weights)))
        first_solve.setdefault("perms", res.perms)
        return res

    def run():
        with reference_methods():
            return transfer(make(), traj, target_init, data, method=prefix + method, seed=0,
                            backend=backend, device=DEVICE)

    BaselineMatcher.solve = recording_solve
    try:
        res = benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        BaselineMatcher.solve = real_solve
    info = {**timing_info(res), "num_gradient_pairs": res.num_gradient_pairs,
            "sweeps": [s for s in res.sweeps if s is not None], "objective_step1": res.objective[0],
            "device": str(DEVICE), "backend": res.config["backend"]}
    _runs.setdefault((name, method), {})[impl] = (info, first_solve)
    ref = _runs[(name, method)].get("reference")
    if impl != "reference" and ref is not None:
        pairs = ref[1]["pairs"]
        base_obj = objective(_spec(make), [p for p, _ in pairs],
                             [w for _, w in pairs], ref[1]["perms"])
        assert res.objective[0] >= base_obj - 1e-6 * abs(base_obj), (res.objective[0], base_obj)
    info["median_s"] = benchmark.stats.stats.median
    info["solver"] = "scipy-baseline" if impl == "reference" else f"trajtransfer ({impl})"
    info["ours"] = impl == "ours"
    benchmark.extra_info.update(info)


def _spec(make):
    return make().permutation_spec()


def teardown_module(module):
    rows = []
    for (name, method), r in _runs.items():
        if "reference" not in r:
            continue
        ref = r["reference"][0]
        for impl, (info, _) in r.items():
            rows.append({"case": name, "method": method, "impl": impl, "device": str(DEVICE),
                         "total_s": info["total_s"], "gradients_s": info["gradients_s"],
                         "matching_s": info["matching_s"], "matching_share": info["matching_share"],
                         "speedup_vs_reference": ref["total_s"] / info["total_s"]})
    if not rows:
        return
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if DEVICE.type == "cpu" else f"_{DEVICE.type}"
    (RESULTS / f"transfer_summary{suffix}.json").write_text(json.dumps(
        {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "loadavg_1_5_15": os.getloadavg(),
         "rows": rows}, indent=1))
    print(f"\n{'case':<7}{'method':<7}{'impl':<17}{'total s':>9}{'gradients':>10}{'matching':>10}"
          f"{'share':>7}{'speedup':>9}")
    for r in rows:
        print(f"{r['case']:<7}{r['method']:<7}{r['impl']:<17}{r['total_s']:>9.2f}"
              f"{r['gradients_s']:>10.2f}{r['matching_s']:>10.2f}{100 * r['matching_share']:>6.0f}%"
              f"{r['speedup_vs_reference']:>8.2f}x")
