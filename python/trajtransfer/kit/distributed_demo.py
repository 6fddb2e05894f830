"""A data-parallel transfer under torchrun: every rank computes its shard of each gradient pair.

::

    torchrun --standalone --nproc_per_node 2 -m trajtransfer.kit.distributed_demo --check
    python -m trajtransfer.kit.distributed_demo          # the same transfer in one process

Rank 0 trains the source (or loads ``--cache``) and sends the problem to the other ranks; every
rank then calls :func:`~trajtransfer.method.transfer.transfer` with ``distributed=True``. With
``--check`` rank 0 repeats the transfer alone and compares. ``--backend nccl`` puts rank r on GPU
``LOCAL_RANK`` (the same code path; only gloo is tested here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence


def _args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m trajtransfer.kit.distributed_demo",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="digits", help="digits (default) or fashion-mnist")
    ap.add_argument("--hidden", type=int, nargs="+", default=[512], help="MLP hidden widths")
    ap.add_argument("--method", default="fgmt", choices=("gmt", "fgmt"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2, help="source training epochs")
    ap.add_argument("--lr", type=float, default=0.05, help="source training learning rate")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--grad-batches", type=int, default=1)
    ap.add_argument("--dense", action="store_true", help="dense pairs (factored_pairs=False)")
    ap.add_argument("--eval", action="store_true", help="evaluate along the transfer")
    ap.add_argument("--backend", default="gloo", help="process group backend: gloo or nccl")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads per rank (default: usable cores / local ranks)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="file keeping the trained problem between runs")
    ap.add_argument("--check", action="store_true",
                    help="rank 0 repeats the transfer in one process and compares")
    ap.add_argument("--json", type=Path, default=None, help="rank 0 writes the result here")
    return ap.parse_args(argv)


def _problem(args: argparse.Namespace, data: Any) -> dict:
    """Source init and end point, target init: trained once (minibatches of 128, whatever the
    transfer's), or read from ``--cache``."""
    import torch

    from .models import MLP
    from .training import train

    if args.cache is not None and args.cache.exists():
        return torch.load(args.cache, weights_only=False)
    dims = int(data.train.x[0].numel())
    torch.manual_seed(1)
    src = MLP(dims, tuple(args.hidden), data.train.num_classes)
    start = {k: v.clone() for k, v in src.state_dict().items()}
    train(src, data.train, epochs=args.epochs, lr=args.lr, batch_size=128, seed=0)
    torch.manual_seed(2)
    tgt = MLP(dims, tuple(args.hidden), data.train.num_classes)
    problem = {"start": start, "end": {k: v.clone() for k, v in src.state_dict().items()},
               "target_init": tgt.state_dict(), "dims": dims}
    if args.cache is not None:
        torch.save(problem, args.cache)
    return problem


def main(argv: Optional[Sequence[str]] = None) -> int:
    import torch
    import torch.distributed as dist

    from ..core.threads import usable_cores
    from ..method.trajectory import Trajectory
    from ..method.transfer import transfer
    from .data import load_dataset
    from .models import MLP

    args = _args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device = torch.device("cpu")
    if world > 1:
        if args.backend == "nccl":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group(args.backend)  # env:// from torchrun
    rank = dist.get_rank() if world > 1 else 0
    # Ranks sharing a machine share its cores: oversubscribed threads cost far more than idle ones.
    threads = args.threads or max(1, usable_cores() // local_world)
    torch.set_num_threads(threads)
    data = load_dataset(args.dataset)
    box: list = [_problem(args, data) if rank == 0 else None]
    if world > 1:
        dist.broadcast_object_list(box, src=0)
    problem = box[0]
    model = MLP(problem["dims"], tuple(args.hidden), data.train.num_classes)
    traj = Trajectory([problem["start"], problem["end"]], num_splits=args.steps)
    kwargs = dict(method=args.method, steps=args.steps, eval_data=data.val if args.eval else None,
                  batch_size=args.batch_size, grad_batches=args.grad_batches,
                  factored_pairs=not args.dense, num_threads=threads, device=device)
    if world > 1:  # rank 0's timings should not count another rank's slower start
        dist.barrier()
    res = transfer(model, traj, problem["target_init"], data.train,
                   distributed=True if world > 1 else None, **kwargs)
    status = 0
    if rank == 0:
        out = res.to_dict()
        t = res.timings
        print(f"{args.method} K={args.steps} on {world} process(es), {threads} thread(s) each: "
              + ", ".join(f"{k} {t.get(k, 0.0):.3f}s"
                          for k in ("gradients", "communication", "matching", "evaluation", "total")))
        if res.final_accuracy is not None:
            print(f"final accuracy {100 * res.final_accuracy:.2f}%")
        if args.check:
            one = transfer(model, traj, problem["target_init"], data.train,
                           **{**kwargs, "device": "cpu"})
            same = all(torch.equal(a[g].cpu(), b[g]) for a, b in zip(res.perms, one.perms) for g in b)
            diff = max(float((res.final_params[n].cpu() - v).abs().max())
                       for n, v in one.final_params.items())
            print(f"1-process check: {'same' if same else 'DIFFERENT'} permutations at all "
                  f"{len(one.perms)} steps, max |parameter difference| {diff:.2e}")
            out["check"] = {"same_permutations": same, "max_param_difference": diff}
            status = 0 if same else 1
        if args.json is not None:
            args.json.write_text(json.dumps(out, indent=1))
    if world > 1:
        dist.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main())
