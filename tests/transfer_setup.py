"""The source/target pair the transfer tests share: two digits models trained for 2 epochs."""

from __future__ import annotations

from typing import Callable


def trained_source_and_target(make_model: Callable[[int], object], num_splits: int) -> tuple:
    """(data, trajectory, target_init, target_final) with models from ``make_model(seed)``."""
    from trajtransfer.kit.data import load_digits_data
    from trajtransfer.kit.training import train
    from trajtransfer.method.trajectory import Trajectory

    data = load_digits_data(seed=0)
    src = make_model(1)
    init = {k: v.clone() for k, v in src.state_dict().items()}
    train(src, data.train, epochs=2, lr=0.05, batch_size=32, seed=0)
    traj = Trajectory([init, src.state_dict()], num_splits=num_splits)
    tgt = make_model(2)
    target_init = {k: v.clone() for k, v in tgt.state_dict().items()}
    train(tgt, data.train, epochs=2, lr=0.05, batch_size=32, seed=1)
    return data, traj, target_init, {k: v.clone() for k, v in tgt.state_dict().items()}


def tanh_mlp(seed: int):
    """A digits MLP 64-32-24-10 from ``seed``; tanh: no dead units, so no ties in the matching."""
    import torch

    from trajtransfer.kit.models import MLP

    torch.manual_seed(seed)
    return MLP(64, (32, 24), 10, bias=True, activation="tanh")
