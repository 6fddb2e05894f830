"""The matching share of FGMT/GMT with factored pairs, by descent start and sweep cap: how low
the share gets with the fewest visits (docs/dev/factored-pairs.md, "The floor")::

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=python python bench/share_floor.py --hidden 1024 1024
    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=python python bench/share_floor.py --hidden 4096 --runs default

Random inputs and labels, the source trained one epoch, T = 10, pairs of one minibatch of 128,
``eval_data=None`` (bench/transfer_problem.py). One line per run: times from
``TransferResult.timings``, the sweeps of each step and the last step's objective.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:  # the package built in place during development (see bench/conftest.py)
    import trajtransfer  # noqa: F401
except ImportError:
    sys.path.insert(0, str(HERE.parent / "python"))

from transfer_problem import random_transfer_problem, timing_info  # noqa: E402

from trajtransfer.kit.models import MLP  # noqa: E402
from trajtransfer.method.transfer import transfer  # noqa: E402

RUNS = {  # name: (warm_start, max_sweeps)
    "default": (False, 100),
    "previous-start": (True, 100),
    "2-sweeps": (False, 2),
    "1-sweep": (False, 1),
}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[1024, 1024])
    ap.add_argument("--method", choices=["fgmt", "gmt"], default="fgmt")
    ap.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    args = ap.parse_args(argv)
    hidden = tuple(args.hidden)
    data, traj, target_init = random_transfer_problem(lambda: MLP(784, hidden, 10), (784,), 10)
    for name in args.runs:
        warm_start, max_sweeps = RUNS[name]
        res = transfer(MLP(784, hidden, 10), traj, target_init, data, method=args.method,
                       eval_data=None, factored_pairs=True, warm_start=warm_start,
                       max_sweeps=max_sweeps, seed=0)
        t = timing_info(res)
        print(f"{args.method} 784-{'-'.join(map(str, hidden))}-10 {name:<15} total "
              f"{t['total_s']:.2f} s, gradients {t['gradients_s']:.2f}, matching "
              f"{t['matching_s']:.2f} (GEMM {t['matching_gemm_s']:.2f}, LAP "
              f"{t['matching_lap_s']:.2f}), share {t['matching_share']:.0%}, sweeps {res.sweeps}, "
              f"objective {res.objective[-1]:.6g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
