"""transfer_many against N sequential transfer() calls: what sharing the source side buys.

Case: Fashion-MNIST (the Debian idx files; skipped without them), MLP 784-512-10, a source
trained for one epoch on 8,192 training images, its trajectory cut into T = 10 steps, FGMT onto
N = 4 target inits, pairs of one minibatch of 128, ``eval_data=None``. Timed: gradients plus
matching (the phases ``TransferResult.timings`` records), summed over the 4 single transfers
against ``transfer_many``'s; the target is a ≥ 2× speedup, above what sharing the source
gradients can give (at most 2N / (N + 1) = 1.6×, see docs/dev/transfer-many.md), so the speedup
is recorded, not asserted. Both run in one session, on one machine, one round each.

Check: every member's permutations equal the single transfer's at every step, and its
parameters agree to float32 rounding. The summary (times, speedup, gradient counts) is printed
and written to ``bench/results/transfer_many_summary.json``.

Run::

    OMP_WAIT_POLICY=PASSIVE env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=python \\
        python -m pytest bench/test_bench_transfer_many.py -s \\
        --benchmark-json=bench/results/transfer_many.json
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")

from trajtransfer.kit.data import load_fashion_mnist  # noqa: E402
from trajtransfer.kit.models import MLP  # noqa: E402
from trajtransfer.kit.training import train  # noqa: E402
from trajtransfer.method.trajectory import Trajectory  # noqa: E402
from trajtransfer.method.transfer import transfer  # noqa: E402
from trajtransfer.method.transfer_many import transfer_many  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
MEMBERS, STEPS = 4, 10
_runs: dict = {}


def _mlp(seed: int):
    torch.manual_seed(seed)
    return MLP(784, (512,), 10)


@pytest.fixture(scope="module")
def setup():
    try:
        data = load_fashion_mnist()
    except FileNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST not found: {exc}")
    train_set = data.train.subset(slice(0, 8192))
    source = _mlp(0)
    init = {k: v.clone() for k, v in source.state_dict().items()}
    train(source, train_set, epochs=1, lr=0.01, batch_size=128, seed=0)
    traj = Trajectory([init, source.state_dict()], num_splits=STEPS)
    inits = [_mlp(1 + i).state_dict() for i in range(MEMBERS)]
    return train_set, traj, inits


def _timed(results) -> float:
    return sum(r.timings["gradients"] + r.timings["matching"] for r in results)


@pytest.mark.parametrize("impl", ["sequential", "many"])
def test_bench_transfer_many(benchmark, setup, impl):
    data, traj, inits = setup
    benchmark.group = f"transfer-many-mlp512-fgmt-N{MEMBERS}"
    benchmark.name = impl

    def run():
        if impl == "sequential":
            return [transfer(_mlp(0), traj, init, data, method="fgmt", seed=0) for init in inits]
        return transfer_many(_mlp(0), traj, inits, data, method="fgmt", seed=0).members

    members = benchmark.pedantic(run, rounds=1, iterations=1)
    _runs[impl] = members
    info = {"gradients_plus_matching_s": _timed(members),
            "gradients_s": sum(r.timings["gradients"] for r in members),
            "matching_s": sum(r.timings["matching"] for r in members),
            "source_gradients": (members[0].num_source_gradients * MEMBERS if impl == "sequential"
                                 else members[0].num_source_gradients)}
    if impl == "many" and "sequential" in _runs:
        for i, (single, member) in enumerate(zip(_runs["sequential"], members)):
            for step, (a, b) in enumerate(zip(single.perms, member.perms), 1):
                assert all(torch.equal(a[g], b[g]) for g in a), f"member {i} step {step}"
            for k, v in single.final_params.items():
                torch.testing.assert_close(member.final_params[k], v, rtol=1e-5, atol=1e-6)
        info["speedup"] = _timed(_runs["sequential"]) / info["gradients_plus_matching_s"]
    benchmark.extra_info.update(info)
    _runs[impl + "_info"] = info


def teardown_module(module):
    if "sequential_info" not in _runs or "many_info" not in _runs:
        return
    seq, many = _runs["sequential_info"], _runs["many_info"]
    summary = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "loadavg_1_5_15": os.getloadavg(),
               "members": MEMBERS, "steps": STEPS, "sequential": seq, "many": many}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transfer_many_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\n{'':<12}{'grad+match s':>13}{'gradients s':>12}{'matching s':>11}{'source grads':>13}")
    for name, r in (("sequential", seq), ("many", many)):
        print(f"{name:<12}{r['gradients_plus_matching_s']:>13.3f}{r['gradients_s']:>12.3f}"
              f"{r['matching_s']:>11.3f}{r['source_gradients']:>13d}")
    print(f"speedup of transfer_many: {many['speedup']:.2f}x (target >= 2x)")
