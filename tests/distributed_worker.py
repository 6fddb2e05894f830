"""One rank of the distributed transfer tests: runs every case on a gloo group, saves what it got.

Run as ``python distributed_worker.py SETUP OUT INIT_FILE RANK WORLD_SIZE``; SETUP is the
``torch.save``d problem of :func:`save_setup`, OUT receives this rank's results.
"""

from __future__ import annotations

import sys

#: name -> transfer() arguments: GMT and FGMT, dense and factored pairs, shards of unequal size
#: (odd batches), several minibatches per pair, GMT's cached source side.
CASES = {
    "gmt_dense": dict(method="gmt", factored_pairs=False, batch_size=32, steps=4),
    "gmt_factored_uneven": dict(method="gmt", factored_pairs=True, batch_size=17, steps=3),
    "fgmt_dense_uneven": dict(method="fgmt", factored_pairs=False, batch_size=33, steps=6),
    "fgmt_factored_two_batches": dict(method="fgmt", factored_pairs=True, batch_size=17,
                                      grad_batches=2, steps=6),
    "gmt_cached_source": dict(method="gmt", cache_source=True, batch_size=16, steps=4),
}

#: transfer_many with its 3 members spread over the ranks (evaluated on the training digits).
MANY = dict(method="fgmt", steps=3, batch_size=32, num_threads=1, seed=5, distributed=True)


def many_inits() -> list:
    """The 3 members' inits."""
    return [wide_tanh_mlp(10 + j).state_dict() for j in range(3)]


#: The minibatch size of the single-pair check (odd: shards of 9 and 8 on two ranks).
PAIR_BATCH = 17


def wide_tanh_mlp(seed: int):
    """Digits MLP 64-128-128-10 (tanh: no tied units): wide enough that 17- and 34-row factors
    are the cheaper form, so the matcher keeps them."""
    import torch

    from trajtransfer.kit.models import MLP

    torch.manual_seed(seed)
    return MLP(64, (128, 128), 10, bias=True, activation="tanh")


def save_setup(path: str) -> dict:
    """Train a source and a target on digits; save (and return) what the ranks need."""
    import torch

    from trajtransfer.kit.data import load_digits_data
    from trajtransfer.kit.training import train

    data = load_digits_data(seed=0)
    src = wide_tanh_mlp(1)
    src_init = {k: v.clone() for k, v in src.state_dict().items()}
    train(src, data.train, epochs=2, lr=0.05, batch_size=32, seed=0)
    setup = {"x": data.train.x, "y": data.train.y, "num_classes": data.train.num_classes,
             "src_init": src_init, "src_final": {k: v.clone() for k, v in src.state_dict().items()},
             "target_init": {k: v.clone() for k, v in wide_tanh_mlp(2).state_dict().items()}}
    torch.save(setup, path)
    return setup


def problem(setup: dict) -> tuple:
    """(model, trajectory, target_init, data) from a saved setup."""
    from trajtransfer.kit.data import ArrayDataset
    from trajtransfer.method.trajectory import Trajectory

    data = ArrayDataset(setup["x"], setup["y"], setup["num_classes"])
    traj = Trajectory([setup["src_init"], setup["src_final"]], num_splits=1)
    return wide_tanh_mlp(0), traj, setup["target_init"], data


def one_pair(setup: dict, distributed) -> tuple:
    """The gradient pair at point 1 under the identity, factored, on a PAIR_BATCH minibatch."""
    import torch

    from trajtransfer.kit.data import Loader
    from trajtransfer.method.pairs import GradientPairSource, SourceSide

    model, traj, target_init, data = problem(setup)
    base = {n: target_init[n] for n, _ in model.named_parameters()}
    source = SourceSide(model, traj.with_splits(2), Loader(data, PAIR_BATCH, seed=3), 1, False,
                        torch.device("cpu"), factored=True, distributed=distributed)
    return GradientPairSource(model, source, base, model.permutation_spec()).pair(1, None)


def _plain(grads: dict) -> dict:
    """Factored entries as their (delta, inputs) tuple, for torch.save."""
    return {n: (g.delta, g.inputs) if hasattr(g, "delta") else g for n, g in grads.items()}


def _error(fn) -> str:
    try:
        fn()
    except ValueError as e:
        return str(e)
    return ""


def main(setup_path: str, out_path: str, init_file: str, rank: int, world_size: int) -> None:
    import torch
    import torch.distributed as dist

    from trajtransfer.method.distributed import Distributed
    from trajtransfer.method.transfer import transfer
    from trajtransfer.method.transfer_many import transfer_many

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    setup = torch.load(setup_path, weights_only=False)
    out: dict = {"cases": {}}
    for name, kwargs in CASES.items():
        model, traj, target_init, data = problem(setup)
        # One case names the group, the others take the default one.
        group = dist.group.WORLD if name == "gmt_cached_source" else True
        res = transfer(model, traj, target_init, data, eval_data=None, distributed=group,
                       num_threads=1, seed=5, **kwargs)
        out["cases"][name] = {"perms": res.perms, "final_params": res.final_params,
                              "objective": res.objective, "timings": res.timings,
                              "world_size": res.config["world_size"],
                              "num_gradient_pairs": res.num_gradient_pairs}
    model, traj, _, data = problem(setup)
    ens = transfer_many(model, traj, many_inits(), data, eval_data=data, **MANY)
    out["many"] = {"perms": [r.perms for r in ens.members], "accuracy": ens.accuracy,
                   "member_accuracy": ens.member_accuracy,
                   "num_source_gradients": ens.num_source_gradients}
    dp = Distributed()
    g_t, g_s = one_pair(setup, dp)
    out["pair"] = (_plain(g_t), _plain(g_s))
    model, traj, target_init, data = problem(setup)
    out["small_batch_error"] = _error(lambda: transfer(
        model, traj, target_init, data, method="fgmt", steps=2, batch_size=world_size - 1,
        distributed=True, num_threads=1))
    out["mismatch_error"] = _error(lambda: transfer(
        model, traj, target_init, data, method="fgmt", steps=2, seed=rank, distributed=True,
        num_threads=1))
    # Data split per rank beforehand (the DistributedSampler habit) instead of the whole set.
    from trajtransfer.kit.data import ArrayDataset

    mine = ArrayDataset(data.x[rank::world_size], data.y[rank::world_size], data.num_classes)
    out["presharded_error"] = _error(lambda: transfer(
        model, traj, target_init, mine, method="fgmt", steps=2, distributed=True, num_threads=1))
    out["assigned"] = list(dp.assign(5))
    out["gathered"] = dp.gather({j: j * j for j in dp.assign(5)}, 5)
    torch.save(out, out_path)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
