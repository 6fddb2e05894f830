"""The transfer benchmarks' problem (random inputs and labels, a source trained one epoch on
them) and the figures they record of a run."""

from __future__ import annotations

from typing import Any, Callable


def random_transfer_problem(make: Callable[[], Any], shape: tuple, steps: int,
                            device: Any = "cpu") -> tuple:
    """(data, trajectory with ``steps`` steps, target init) for models from ``make()``."""
    import torch

    from trajtransfer.kit.data import ArrayDataset
    from trajtransfer.kit.training import train
    from trajtransfer.method.trajectory import Trajectory

    gen = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randn(4096, *shape, generator=gen),
                        torch.randint(0, 10, (4096,), generator=gen), 10)
    torch.manual_seed(1)
    source = make().to(device)
    init = {k: v.detach().clone() for k, v in source.state_dict().items()}
    train(source, data, epochs=1, lr=0.01, batch_size=128, seed=0)
    traj = Trajectory([init, source.state_dict()], num_splits=steps)
    torch.manual_seed(2)
    target_init = {k: v.detach().clone() for k, v in make().to(device).state_dict().items()}
    return data, traj, target_init


def timing_info(res: Any) -> dict:
    """A TransferResult's phase times (seconds) and matching share, for ``extra_info``."""
    t = res.timings
    return {"total_s": t["total"], "gradients_s": t["gradients"], "matching_s": t["matching"],
            "matching_gemm_s": t["matching_gemm"], "matching_lap_s": t["matching_lap"],
            "matching_share": t["matching"] / t["total"]}
