"""Regression check: time the same matcher and transfer workloads with two builds of trajtransfer.

Each build is a ``python/`` folder holding a built extension (the in-place developer build), for
example this checkout and a worktree of the last release. Rounds alternate between the builds in
fresh processes (``--rounds`` each), so both see the same machine load; the table gives each
workload's median seconds and the ratio new / old (> 1: the new build is slower). Only top-level
names are used, so any two versions of the API compare.

    git worktree add /tmp/old <rev> && (cd /tmp/old && cmake --preset default && \\
        cmake --build build/preset-default && cp build/preset-default/_core*.so python/trajtransfer/)
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/compare_trees.py /tmp/old/python python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORKLOADS = ["match-mlp1", "match-mlp3", "match-resnet18", "match-conv8_k30",
             "transfer-digits-fgmt", "transfer-digits-gmt", "transfer-mlp784-fgmt",
             "transfer-mlp784-gmt"]

def _child_source() -> str:
    # The workloads, as a script run in a fresh process against one build.
    return r'''
import json, sys, time, torch
import trajtransfer as tt
torch.set_num_threads(2)

def state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}

def weights(make):
    torch.manual_seed(0)
    a, b = make(), make()
    return lambda: tt.match_weights(a.permutation_spec(), state(a), state(b), seed=0)

def conv8_k30():
    torch.manual_seed(0)
    ma, mb = tt.Conv8(), tt.Conv8()
    gen = torch.Generator().manual_seed(1)
    pairs = []
    for _ in range(30):
        x, y = torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        g = []
        for m in (ma, mb):
            m.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(m(x), y).backward()
            g.append({n: p.grad.detach().clone() for n, p in m.named_parameters()})
        pairs.append((g[0], g[1]))
    return lambda: tt.match_gradients(ma.permutation_spec(), pairs, seed=0)

def transfer(kind, method):
    if kind == "digits":
        splits = tt.load_digits_data(seed=0)
        data, make, kw = splits, (lambda: tt.MLP(64, (512,), 10)), dict(grad_batches=10, batch_size=128)
        train_kw = dict(epochs=2, lr=0.01, batch_size=32)
        train_data = splits.train
    else:
        try:
            from trajtransfer.kit.data import ArrayDataset
        except ImportError:  # a build from before the package tiers
            from trajtransfer.data import ArrayDataset
        gen = torch.Generator().manual_seed(0)
        data = ArrayDataset(torch.randn(4096, 784, generator=gen),
                            torch.randint(0, 10, (4096,), generator=gen), 10)
        make, kw = (lambda: tt.MLP(784, (512, 512), 10)), dict(batch_size=128)
        train_kw = dict(epochs=1, lr=0.01, batch_size=128)
        train_data = data
    torch.manual_seed(1)
    src = make()
    init = state(src)
    tt.train(src, train_data, seed=0, **train_kw)
    traj = tt.Trajectory([init, state(src)], num_splits=10)
    torch.manual_seed(2)
    target_init = state(make())
    return lambda: tt.transfer(make(), traj, target_init, data, method=method, seed=0, **kw)

MAKE = {
    "match-mlp1": lambda: weights(lambda: tt.MLP(784, (4096,), 10)),
    "match-mlp3": lambda: weights(lambda: tt.MLP(784, (1024, 1024, 1024), 10)),
    "match-resnet18": lambda: weights(lambda: tt.ResNet18(num_classes=10, width=64, stem="cifar")),
    "match-conv8_k30": conv8_k30,
    "transfer-digits-fgmt": lambda: transfer("digits", "fgmt"),
    "transfer-digits-gmt": lambda: transfer("digits", "gmt"),
    "transfer-mlp784-fgmt": lambda: transfer("mlp784", "fgmt"),
    "transfer-mlp784-gmt": lambda: transfer("mlp784", "gmt"),
}
out = {}
for name in sys.argv[1:]:
    run = MAKE[name]()
    run()  # warm-up: first-call costs (allocations, page faults, lazy imports)
    t0 = time.perf_counter()
    run()
    out[name] = time.perf_counter() - t0
print(json.dumps(out))
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", help="python/ folder of the reference build")
    ap.add_argument("new", help="python/ folder of the build under test")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated workload names (default: all)")
    ap.add_argument("--json", default="", help="also write the table here")
    args = ap.parse_args()
    names = [w for w in (args.only.split(",") if args.only else WORKLOADS) if w]
    times: dict = {"old": {n: [] for n in names}, "new": {n: [] for n in names}}
    src = _child_source()
    for r in range(args.rounds):
        for label in ("old", "new") if r % 2 == 0 else ("new", "old"):
            env = dict(os.environ, PYTHONPATH=os.path.abspath(getattr(args, label)))
            proc = subprocess.run([sys.executable, "-W", "ignore", "-c", src, *names], env=env,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            for n, t in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                times[label][n].append(t)
            print(f"round {r + 1} {label}: done", file=sys.stderr, flush=True)
    rows = []
    print(f"{'workload':<24}{'old s':>9}{'new s':>9}{'new/old':>9}")
    for n in names:
        o, w = statistics.median(times["old"][n]), statistics.median(times["new"][n])
        rows.append({"workload": n, "old_s": o, "new_s": w, "ratio": w / o,
                     "old_all": times["old"][n], "new_all": times["new"][n]})
        print(f"{n:<24}{o:>9.3f}{w:>9.3f}{w / o:>9.3f}")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "loadavg": load, "rounds": args.rounds}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
